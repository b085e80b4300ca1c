package coap

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/pkg/runner/periodic"
	"github.com/plgd-dev/go-coap/v3/udp"

	"github.com/mqttgw/mqttgw/udpgw"
)

// TestProvenPathBlockwise: a proven device is served without a go-coap
// connection until a transfer goes block-wise: a value above one block comes
// as its first block (Block2, RFC 7959 §2.4), and the client's request for
// the next ones, and a block-wise upload, are served by a connection made for
// them. go-coap's client reassembles both.
func TestProvenPathBlockwise(t *testing.T) {
	tl := startListener(t, udpgw.Env{}, Options{})
	big := strings.Repeat("0123456789", 300)
	tl.broker.setRetained(udpgw.Message{Topic: "big/t", Payload: []byte(big)})
	// go-coap's default periodic runner sleeps 4 s, and outlives Close by
	// up to that: one that stops with the test.
	stop := make(chan struct{})
	cc, err := udp.Dial(tl.addr, options.WithErrors(func(error) {}), options.WithPeriodicRunner(periodic.New(stop, 10*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cc.Close()
		close(stop)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q := message.Option{ID: message.URIQuery, Value: []byte("c=blocky")}
	if r, err := cc.Put(ctx, "/ps/small/t", message.TextPlain, strings.NewReader("1"), q); err != nil || r.Code() != codes.Changed {
		t.Fatalf("publish: %v %v", r, err)
	}
	// go-coap's client answers the gateway's ping: its address is proven.
	waitFor(t, 5*time.Second, "proof", func() bool { return tl.counter("mqttgw_sources_proven_total") == 1 })
	if r, err := cc.Put(ctx, "/ps/small/t", message.TextPlain, strings.NewReader("2"), q); err != nil || r.Code() != codes.Changed {
		t.Fatalf("proven publish: %v %v", r, err)
	}
	connections := func() int {
		tl.peersMu.Lock()
		defer tl.peersMu.Unlock()
		return len(tl.peers)
	}
	if n := connections(); n != 0 {
		t.Fatalf("%d go-coap connections for single-datagram requests", n)
	}
	r, err := cc.Get(ctx, "/ps/big/t", q)
	if err != nil {
		t.Fatal(err)
	}
	if body, _ := r.ReadBody(); r.Code() != codes.Content || string(body) != big {
		t.Fatalf("GET: %v, %d bytes of body, want %d", r.Code(), len(body), len(big))
	}
	if n := connections(); n != 1 {
		t.Fatalf("%d go-coap connections after a block-wise read, want 1", n)
	}
	upload := bytes.Repeat([]byte("u"), 2500)
	if r, err := cc.Put(ctx, "/ps/up/t", message.TextPlain, bytes.NewReader(upload), q); err != nil || r.Code() != codes.Changed {
		t.Fatalf("block-wise publish: %v %v", r, err)
	}
	pubs := tl.broker.published()
	if last := pubs[len(pubs)-1]; last.Topic != "up/t" || !bytes.Equal(last.Payload, upload) {
		t.Fatalf("published %q with %d bytes", last.Topic, len(last.Payload))
	}
}
