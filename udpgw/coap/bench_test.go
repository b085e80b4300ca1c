package coap

import (
	"bytes"
	"context"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"

	"github.com/mqttgw/mqttgw/udpgw"
)

// BenchmarkPublishCON measures the engine alone (a fake broker that acks at
// once) for Confirmable publishes from one go-coap client.
func BenchmarkPublishCON(b *testing.B) {
	tl := startListener(b, udpgw.Env{}, Options{})
	cc, err := udp.Dial(tl.addr, options.WithErrors(func(error) {}))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	q := message.Option{ID: message.URIQuery, Value: []byte("c=bench")}
	payload := bytes.Repeat([]byte("x"), 32)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		resp, err := cc.Put(context.Background(), "/ps/bench/t", message.TextPlain, bytes.NewReader(payload), q)
		if err != nil {
			b.Fatal(err)
		}
		cc.ReleaseMessage(resp)
	}
}
