package coap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// connBroker is a fakeBroker in transparent mode: a udpgw.Connector and
// ConnectionChecker that records what it was asked.
type connBroker struct {
	*fakeBroker

	mu          sync.Mutex
	up          map[string]udpgw.Connection // device → its connection
	connects    []string                    // "device user/password", in order
	disconnects []string                    // "device graceful"
	err         error                       // Connect's answer when set
	gate        chan struct{}               // when set, Connect waits for it
}

var (
	_ udpgw.Connector   = (*connBroker)(nil)
	_ ConnectionChecker = (*connBroker)(nil)
)

func newConnBroker() *connBroker {
	return &connBroker{fakeBroker: newFakeBroker(), up: map[string]udpgw.Connection{}}
}

func (b *connBroker) Connect(ctx context.Context, device string, c udpgw.Connection) error {
	b.mu.Lock()
	gate, err := b.gate, b.err
	b.connects = append(b.connects, fmt.Sprintf("%s %s/%s", device, c.Username, c.Password))
	b.mu.Unlock()
	if !c.CleanSession || c.Will != nil || c.Keepalive != 0 {
		return fmt.Errorf("connection %+v: want a clean session, no will, the default keepalive", c)
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.up[device] = c
	b.mu.Unlock()
	return nil
}

func (b *connBroker) Disconnect(device string, graceful bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.up[device]; ok {
		delete(b.up, device)
		b.disconnects = append(b.disconnects, fmt.Sprint(device, " ", graceful))
	}
}

func (b *connBroker) Connected(device string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.up[device]
	return ok
}

// drop ends device's connection as a broker refusing a reconnect does.
func (b *connBroker) drop(device string) {
	b.mu.Lock()
	delete(b.up, device)
	b.mu.Unlock()
}

func (b *connBroker) set(err error, gate chan struct{}) {
	b.mu.Lock()
	b.err, b.gate = err, gate
	b.mu.Unlock()
}

func (b *connBroker) log() (connects, disconnects []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.connects...), append([]string(nil), b.disconnects...)
}

// refusals records what Options.Refused was told.
type refusals struct {
	mu  sync.Mutex
	why []string
}

func (r *refusals) add(_ netip.AddrPort, user, reason string) {
	r.mu.Lock()
	r.why = append(r.why, user+": "+reason)
	r.mu.Unlock()
}

func (r *refusals) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.why...)
}

func startTransparent(t *testing.T, opts Options) (*testListener, *connBroker, *refusals) {
	t.Helper()
	b := newConnBroker()
	rf := &refusals{}
	opts.Refused = rf.add
	tl := startListener(t, udpgw.Env{Broker: b}, opts)
	return tl, b, rf
}

// doProven is do for a peer that must prove its address first: a 4.01 with
// an Echo option is answered by repeating the request with the Echo value
// (RFC 9175 §2.3). It reports whether the Echo was needed.
func (p *rawPeer) doProven(r req) (*pool.Message, bool) {
	p.t.Helper()
	m := p.do(r)
	echo, err := m.GetOptionBytes(message.Echo)
	if m.Code() != codes.Unauthorized || err != nil {
		return m, false
	}
	b, _ := p.encode(r)
	msg := pool.NewMessage(context.Background())
	if _, err := msg.UnmarshalWithDecoder(coder.DefaultCoder, b); err != nil {
		p.t.Fatal(err)
	}
	msg.SetOptionBytes(message.Echo, echo)
	if b, err = msg.MarshalWithEncoder(coder.DefaultCoder); err != nil {
		p.t.Fatal(err)
	}
	p.send(b)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		m := p.recv(time.Until(deadline))
		if m == nil {
			break
		}
		if string(m.Token()) == r.token {
			return m, true
		}
	}
	p.t.Fatalf("no response to %v %s with Echo", r.code, r.path)
	return nil, true
}

func put(path, token string) req {
	return req{typ: message.Confirmable, code: codes.PUT, path: path, token: token, observe: -1, payload: "v"}
}

// TestTransparentConnection: a device's first request makes its broker
// connection with its own credentials, once its address is proven (an
// unproven source makes none: 4.01 with Echo); its next requests use it; a
// request naming the device with other credentials is refused (4.01), and an
// anonymous device gets a connection named by its address, without
// credentials (the Connector adds the listener's).
func TestTransparentConnection(t *testing.T) {
	tl, b, rf := startTransparent(t, Options{})
	p := newRawPeer(t, tl.addr)
	r, echoed := p.doProven(put("/ps/t?c=d1&u=alice&p=pw", "a"))
	if r.Code() != codes.Changed || !echoed {
		t.Fatalf("first publish: %v (echo needed: %v), want 2.04 after an Echo round", r.Code(), echoed)
	}
	if r, echoed := p.doProven(put("/ps/t?c=d1&u=alice&p=pw", "b")); r.Code() != codes.Changed || echoed {
		t.Fatalf("second publish: %v (echo needed: %v)", r.Code(), echoed)
	}
	// The same device from a new, unproven address (NAT rebinding) is served
	// over its connection without proof: no new connection for it.
	moved := newRawPeer(t, tl.addr)
	b.fakeBroker.setRetained(udpgw.Message{Topic: "t", Payload: []byte("v")})
	if r := moved.do(req{typ: message.Confirmable, code: codes.GET, path: "/ps/t?c=d1&u=alice&p=pw", token: "g", observe: -1}); r.Code() != codes.Content {
		t.Fatalf("read from a new address: %v, want 2.05", r.Code())
	}
	if r := moved.do(req{typ: message.Confirmable, code: codes.GET, path: "/ps/t?c=d1&u=alice&p=other", token: "h", observe: -1}); r.Code() != codes.Unauthorized {
		t.Fatalf("read with another password: %v, want 4.01", r.Code())
	}
	if r := p.do(put("/ps/t?c=d1", "c")); r.Code() != codes.Unauthorized {
		t.Fatalf("the device's id without its credentials: %v, want 4.01", r.Code())
	}
	anon := newRawPeer(t, tl.addr)
	if r, _ := anon.doProven(put("/ps/t", "d")); r.Code() != codes.Changed {
		t.Fatalf("anonymous publish: %v", r.Code())
	}
	connects, _ := b.log()
	want := []string{"d1 alice/pw", anon.conn.LocalAddr().(*net.UDPAddr).AddrPort().String() + " /"}
	if fmt.Sprint(connects) != fmt.Sprint(want) {
		t.Errorf("connects %q, want %q", connects, want)
	}
	if got := rf.list(); len(got) != 2 || got[0] != "alice: not the credentials of the device's broker connection" {
		t.Errorf("refusals %q, want two for other credentials", got)
	}
	if n := len(b.published()); n != 3 {
		t.Errorf("%d publishes reached the broker, want 3", n)
	}
}

// TestTransparentRefusals: the broker refusing the device's identity is 4.01
// (told to Options.Refused), the broker away (or max_connections) is 5.03 with
// Max-Age; the next request tries again.
func TestTransparentRefusals(t *testing.T) {
	tl, b, rf := startTransparent(t, Options{RetryAfter: 7 * time.Second})
	p := newRawPeer(t, tl.addr)
	b.set(fmt.Errorf("%w: bad user name or password", udpgw.ErrForbidden), nil)
	if r, _ := p.doProven(put("/ps/t?c=d2&u=bob&p=wrong", "a")); r.Code() != codes.Unauthorized {
		t.Fatalf("refused by the broker: %v, want 4.01", r.Code())
	}
	if got := rf.list(); len(got) != 1 || got[0] != "bob: refused by the broker" {
		t.Errorf("refusals %q", got)
	}
	b.set(fmt.Errorf("%w: connection refused", udpgw.ErrUnavailable), nil)
	r := p.do(put("/ps/t?c=d2&u=bob&p=right", "b"))
	if age, err := r.GetOptionUint32(message.MaxAge); r.Code() != codes.ServiceUnavailable || err != nil || age != 7 {
		t.Fatalf("broker away: %v Max-Age %d (%v), want 5.03 Max-Age 7", r.Code(), age, err)
	}
	b.set(nil, nil)
	if r := p.do(put("/ps/t?c=d2&u=bob&p=right", "c")); r.Code() != codes.Changed {
		t.Fatalf("broker back: %v", r.Code())
	}
	if connects, _ := b.log(); len(connects) != 3 {
		t.Errorf("connects %q, want 3", connects)
	}
}

// TestTransparentRequestsWaitForConnect: requests of one device from two
// addresses while its connection is being made: one Connect, both served
// once it is up.
func TestTransparentRequestsWaitForConnect(t *testing.T) {
	tl, b, _ := startTransparent(t, Options{})
	p1, p2 := newRawPeer(t, tl.addr), newRawPeer(t, tl.addr)
	// Prove both addresses with an anonymous device each.
	for _, p := range []*rawPeer{p1, p2} {
		if r, _ := p.doProven(put("/ps/t", "x")); r.Code() != codes.Changed {
			t.Fatal(r.Code())
		}
	}
	gate := make(chan struct{})
	b.set(nil, gate)
	done := make(chan codes.Code, 2)
	for i, p := range []*rawPeer{p1, p2} {
		go func() { done <- p.do(put("/ps/t?c=d3", fmt.Sprint("w", i))).Code() }()
	}
	waitFor(t, 5*time.Second, "a Connect for d3", func() bool {
		connects, _ := b.log()
		return len(connects) == 3
	})
	close(gate)
	for range 2 {
		if c := <-done; c != codes.Changed {
			t.Fatalf("publish: %v, want 2.04", c)
		}
	}
	if connects, _ := b.log(); len(connects) != 3 {
		t.Errorf("connects %q: want one for d3", connects)
	}
}

// TestTransparentSessionEnd: the end of a device's session closes its
// connection (gracefully: it has no will); its return makes a new one. A
// connection the broker dropped is made again by the next request, and the
// observations it carried end.
func TestTransparentSessionEnd(t *testing.T) {
	tl, b, _ := startTransparent(t, Options{})
	p := newRawPeer(t, tl.addr)
	if r, _ := p.doProven(observeReq("/ps/o/t?c=d4", "o1")); r.Code() != codes.Content {
		t.Fatalf("observe: %v", r.Code())
	}
	b.drop("d4")
	if r := p.do(put("/ps/t?c=d4", "a")); r.Code() != codes.Changed {
		t.Fatalf("publish after the broker dropped the connection: %v", r.Code())
	}
	if n := tl.counter("mqttgw_coap_observations_ended_total", "reason", "connection"); n != 1 {
		t.Errorf("observations ended with the connection: %d, want 1", n)
	}
	tl.env.Sessions.Expire(time.Now().Add(2*tl.opts.Keepalive), nil)
	waitFor(t, 5*time.Second, "the connection closed", func() bool {
		_, d := b.log()
		return len(d) == 1
	})
	if _, d := b.log(); d[0] != "d4 true" {
		t.Errorf("disconnects %q, want d4, graceful", d)
	}
	waitFor(t, 5*time.Second, "device forgotten", func() bool {
		tl.mu.Lock()
		defer tl.mu.Unlock()
		return len(tl.devices) == 0
	})
	if r := p.do(put("/ps/t?c=d4", "b")); r.Code() != codes.Changed {
		t.Fatalf("publish in a new session: %v", r.Code())
	}
	if connects, _ := b.log(); len(connects) != 3 || !b.Connected("d4") {
		t.Errorf("connects %q, want a third for the new session", connects)
	}
	if s := tl.env.Sessions.Lookup(session.Key{Listener: "test", Device: "d4"}); s == nil || !s.Live() {
		t.Error("no live session after the device came back")
	}
}

// TestTransparentConnectAbortedByClose: Close does not wait for a broker
// that never answers a Connect.
func TestTransparentConnectAbortedByClose(t *testing.T) {
	tl, b, _ := startTransparent(t, Options{})
	p := newRawPeer(t, tl.addr)
	if r, _ := p.doProven(put("/ps/t", "x")); r.Code() != codes.Changed {
		t.Fatal(r.Code())
	}
	b.set(nil, make(chan struct{}))
	b1, _ := p.encode(put("/ps/t?c=stuck", "s"))
	p.send(b1)
	waitFor(t, 5*time.Second, "a Connect for stuck", func() bool {
		connects, _ := b.log()
		return len(connects) == 2
	})
	closed := make(chan error, 1)
	go func() { closed <- tl.Close() }()
	select {
	case err := <-closed:
		if err != nil && !errors.Is(err, net.ErrClosed) {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for a Connect")
	}
}
