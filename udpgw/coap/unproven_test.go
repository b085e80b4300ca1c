package coap

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mqttgw/mqttgw/udpgw"
)

// meter is a quiet raw peer that counts the bytes it sent and received: a
// spoofed source's victim sees what the gateway sends it.
type meter struct {
	*rawPeer
	sent, got int
}

func newMeter(t *testing.T, addr string) *meter {
	p := newRawPeer(t, addr)
	p.quiet = true
	return &meter{rawPeer: p}
}

func (m *meter) sendReq(r req, opts ...message.Option) int32 {
	m.t.Helper()
	b, mid := m.encode(r)
	if len(opts) > 0 {
		msg := pool.NewMessage(context.Background())
		if _, err := msg.UnmarshalWithDecoder(coder.DefaultCoder, b); err != nil {
			m.t.Fatal(err)
		}
		for _, o := range opts {
			msg.SetOptionBytes(o.ID, o.Value)
		}
		var err error
		if b, err = msg.MarshalWithEncoder(coder.DefaultCoder); err != nil {
			m.t.Fatal(err)
		}
	}
	m.sent += len(b)
	m.send(b)
	return mid
}

// next returns the next datagram within d, decoded, and counts its bytes.
func (m *meter) next(d time.Duration) *pool.Message {
	m.t.Helper()
	_ = m.conn.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 65536)
	n, err := m.conn.Read(buf)
	if err != nil {
		return nil
	}
	m.got += n
	msg := pool.NewMessage(context.Background())
	if _, err := msg.UnmarshalWithDecoder(coder.DefaultCoder, buf[:n]); err != nil {
		m.t.Fatalf("undecodable % x: %v", buf[:n], err)
	}
	return msg
}

// drain reads for d and returns what came.
func (m *meter) drain(d time.Duration) []*pool.Message {
	var out []*pool.Message
	for {
		msg := m.next(d)
		if msg == nil {
			return out
		}
		out = append(out, msg)
	}
}

func isPing(m *pool.Message) bool {
	return m.Type() == message.Confirmable && m.Code() == codes.Empty
}

// TestEchoValue: an Echo value proves only the address it was made for, and
// only for a while; a forged or altered one proves nothing.
func TestEchoValue(t *testing.T) {
	e := newEchoer()
	now := time.Unix(1_700_000_000, 0)
	a := netip.MustParseAddrPort("192.0.2.1:5683")
	v := e.value(a, now)
	if len(v) != echoLen || !message.VerifyOptLen(message.Echo, len(v)) {
		t.Fatalf("value of %d bytes", len(v))
	}
	if !e.valid(v, a, now.Add(time.Minute)) {
		t.Fatal("own value refused")
	}
	for name, tc := range map[string]struct {
		v    []byte
		addr netip.AddrPort
		at   time.Time
	}{
		"other port":    {v, netip.MustParseAddrPort("192.0.2.1:5684"), now},
		"other address": {v, netip.MustParseAddrPort("192.0.2.2:5683"), now},
		"too old":       {v, a, now.Add(echoValidity + time.Second)},
		"altered":       {append(append([]byte(nil), v[:11]...), v[11]^1), a, now},
		"short":         {v[:8], a, now},
		"other key":     {newEchoer().value(a, now), a, now},
	} {
		if e.valid(tc.v, tc.addr, tc.at) {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestLargeGetNeedsEcho: a GET whose answer is more than 3× the request, from
// a source that has not proven its address, gets a small 4.01 with an Echo
// option (RFC 9175 §2.4) and a ping: at most 3× the request; the held answer
// is counted. The request repeated with the Echo value is answered in full.
func TestLargeGetNeedsEcho(t *testing.T) {
	tl := startListener(t, udpgw.Env{}, Options{})
	big := strings.Repeat("v", 900)
	tl.broker.setRetained(udpgw.Message{Topic: "big/t", Payload: []byte(big)})
	m := newMeter(t, tl.addr)
	get := req{typ: message.Confirmable, code: codes.GET, path: "/ps/big/t", token: "g1", observe: -1}
	m.sendReq(get)
	var echo []byte
	for _, r := range m.drain(300 * time.Millisecond) {
		switch {
		case isPing(r):
		case r.Code() == codes.Unauthorized && string(r.Token()) == "g1":
			echo, _ = r.GetOptionBytes(message.Echo)
		default:
			t.Fatalf("unexpected %v", r)
		}
	}
	if echo == nil {
		t.Fatal("no 4.01 with an Echo option")
	}
	if m.got > 3*m.sent {
		t.Fatalf("an unproven source got %d bytes for %d sent: more than 3×", m.got, m.sent)
	}
	if n := tl.counter("mqttgw_amplification_held_bytes_total"); n < len(big) {
		t.Errorf("held bytes = %d, want at least %d", n, len(big))
	}
	if n := tl.counter("mqttgw_coap_address_checks_total", "kind", "echo"); n != 1 {
		t.Errorf("echo challenges = %d, want 1", n)
	}
	// The client repeats the request with the Echo value (RFC 9175 §2.3).
	get.token = "g2"
	m.sendReq(get, message.Option{ID: message.Echo, Value: echo})
	r := m.next(5 * time.Second)
	if r == nil || r.Code() != codes.Content {
		t.Fatalf("with Echo: %v, want 2.05", r)
	}
	if body, _ := r.ReadBody(); string(body) != big {
		t.Fatalf("with Echo: %d bytes of body, want %d", len(body), len(big))
	}
	if n := tl.counter("mqttgw_sources_proven_total"); n != 1 {
		t.Errorf("proofs = %d, want 1", n)
	}
}

// TestNotificationsWithinBudget: notifications to an observer that has not
// proven its address count against its budget too. A spoofed registration
// (a quiet peer: it never answers the gateway's pings) gets at most 3× what
// it sent, the rest is held, and once the challenges go unanswered the
// observation ends.
func TestNotificationsWithinBudget(t *testing.T) {
	tl := startListener(t, udpgw.Env{}, Options{AckTimeout: 50 * time.Millisecond, MaxRetransmit: 2})
	m := newMeter(t, tl.addr)
	m.sendReq(observeReq("/ps/busy/t", "o1"))
	waitFor(t, 5*time.Second, "registration", func() bool { return tl.broker.subscriptions() == 1 })
	for i := range 20 {
		publish(t, tl.broker, "busy/t", fmt.Sprint(i, strings.Repeat("x", 100)))
	}
	waitFor(t, 10*time.Second, "observation ended", func() bool {
		return tl.counter("mqttgw_coap_observations_ended_total", "reason", "unproven") == 1
	})
	m.drain(200 * time.Millisecond)
	if m.got > 3*m.sent {
		t.Fatalf("an unproven observer got %d bytes for %d sent: more than 3×", m.got, m.sent)
	}
	if n := tl.counter("mqttgw_amplification_held_total"); n == 0 {
		t.Error("nothing counted as held")
	}
	waitFor(t, 5*time.Second, "unsubscribed", func() bool { return tl.broker.subscriptions() == 0 })
}

// TestPingProvesObserver: an observer that answers the gateway's CoAP ping
// (as every CoAP endpoint does, RFC 7252 §4.3) proves its address, and then
// gets notifications of any size.
func TestPingProvesObserver(t *testing.T) {
	tl := startListener(t, udpgw.Env{}, Options{})
	p := newRawPeer(t, tl.addr) // answers pings
	if r := p.do(observeReq("/ps/big/t", "o1")); r.Code() != codes.Content {
		t.Fatalf("register: %v", r.Code())
	}
	if r := p.recv(300 * time.Millisecond); r != nil { // answers the ping that follows
		t.Fatalf("unexpected %v", r)
	}
	waitFor(t, 5*time.Second, "proof", func() bool { return tl.counter("mqttgw_sources_proven_total") == 1 })
	big := strings.Repeat("n", 1000)
	for range 3 {
		publish(t, tl.broker, "big/t", big)
		r := p.recv(5 * time.Second)
		if r == nil {
			t.Fatal("notification not sent")
		}
		if body, _ := r.ReadBody(); string(body) != big {
			t.Fatalf("notification of %d bytes", len(body))
		}
	}
	if n := tl.counter("mqttgw_amplification_held_total"); n != 0 {
		t.Errorf("held %d datagrams to a proven observer", n)
	}
}

// TestRetransmissionAcrossProof: a Confirmable publish answered before its
// source proved itself and retransmitted after (its ACK was lost) gets the
// same answer and is published once (RFC 7252 §4.5), as is a duplicate
// before the proof; the proven source is served without a go-coap
// connection.
func TestRetransmissionAcrossProof(t *testing.T) {
	tl := startListener(t, udpgw.Env{}, Options{})
	p := newRawPeer(t, tl.addr)
	p.quiet = true // it answers the ping when the test says so
	b, _ := p.encode(req{typ: message.Confirmable, code: codes.PUT, path: "/ps/once/t", token: "p1", observe: -1, payload: "1"})
	answers := func(want int) (ping *pool.Message) {
		t.Helper()
		n := 0
		for m := p.recv(300 * time.Millisecond); m != nil; m = p.recv(300 * time.Millisecond) {
			switch {
			case isPing(m):
				ping = m
			case m.Code() == codes.Changed && m.MessageID() == int32(p.mid) && string(m.Token()) == "p1":
				n++
			default:
				t.Fatalf("unexpected %v", m)
			}
		}
		if n != want {
			t.Fatalf("%d answers, want %d", n, want)
		}
		return ping
	}
	p.send(b)
	ping := answers(1)
	if ping == nil {
		t.Fatal("a served source was not challenged")
	}
	p.send(b) // a duplicate while unproven
	answers(1)
	p.send([]byte{0x70, 0x00, byte(ping.MessageID() >> 8), byte(ping.MessageID())})
	waitFor(t, 5*time.Second, "proof", func() bool { return tl.counter("mqttgw_sources_proven_total") == 1 })
	p.send(b) // the retransmission, now on the proven path
	answers(1)
	if n := len(tl.broker.published()); n != 1 {
		t.Errorf("%d publishes, want 1 (no duplicate)", n)
	}
	tl.peersMu.Lock()
	peers := len(tl.peers)
	tl.peersMu.Unlock()
	tl.fastMu.Lock()
	fast := len(tl.fast)
	tl.fastMu.Unlock()
	if peers != 0 || fast != 1 {
		t.Errorf("%d go-coap connections and %d proven peers after the proof, want 0 and 1", peers, fast)
	}
}

// TestUnprovenSourcesCheap: reads from many sources that never prove their
// address leave no go-coap connection, no device and no session, only their
// small entries, at most MaxUnproven of them (the oldest evicted, counted).
func TestUnprovenSourcesCheap(t *testing.T) {
	sessions := udpgw.Env{}.WithDefaults().Sessions
	tl := startListener(t, udpgw.Env{Sessions: sessions}, Options{MaxUnproven: 10})
	tl.broker.setRetained(udpgw.Message{Topic: "r/t", Payload: []byte("v")})
	for i := range 30 {
		m := newMeter(t, tl.addr)
		m.sendReq(req{typ: message.Confirmable, code: codes.GET, path: "/ps/r/t", token: fmt.Sprint(i), observe: -1})
		if r := m.next(5 * time.Second); r == nil || r.Code() != codes.Content {
			t.Fatalf("source %d: %v", i, r)
		}
	}
	tl.peersMu.Lock()
	peers := len(tl.peers)
	tl.peersMu.Unlock()
	if peers != 0 {
		t.Errorf("%d go-coap connections for unproven sources", peers)
	}
	if n := sessions.Len(); n != 0 {
		t.Errorf("%d sessions for unproven reads", n)
	}
	if n := tl.counter("mqttgw_coap_devices"); n != 0 {
		t.Errorf("%d devices for unproven reads", n)
	}
	if n := tl.counter("mqttgw_unproven_sources"); n != 10 {
		t.Errorf("unproven sources = %d, want 10 (max_unproven)", n)
	}
	if n := tl.counter("mqttgw_unproven_evicted_total"); n != 20 {
		t.Errorf("evicted = %d, want 20", n)
	}
}

// TestUnprovenRateLimit: an unproven source above its rate has the excess
// dropped and counted, and is challenged; once it answers, it is limited no
// more.
func TestUnprovenRateLimit(t *testing.T) {
	tl := startListener(t, udpgw.Env{}, Options{UnprovenRate: 1})
	m := newMeter(t, tl.addr) // burst 2
	for i := range 5 {
		m.sendReq(req{typ: message.NonConfirmable, code: codes.POST, path: "/ps/rate/t", token: fmt.Sprint(i), observe: -1, payload: "x"})
	}
	waitFor(t, 5*time.Second, "rate limit counted", func() bool { return tl.counter("mqttgw_source_rate_limited_total") >= 3 })
	var ping *pool.Message
	for _, r := range m.drain(300 * time.Millisecond) {
		if isPing(r) {
			ping = r
		}
	}
	if ping == nil {
		t.Fatal("a source above its rate was not challenged")
	}
	m.send([]byte{0x70, 0x00, byte(ping.MessageID() >> 8), byte(ping.MessageID())})
	waitFor(t, 5*time.Second, "proof", func() bool { return tl.counter("mqttgw_sources_proven_total") == 1 })
	before := tl.counter("mqttgw_source_rate_limited_total")
	for i := range 10 { // one at a time: a connection admits maxInflight at once
		m.sendReq(req{typ: message.NonConfirmable, code: codes.POST, path: "/ps/rate/t", token: fmt.Sprint("p", i), observe: -1, payload: "y"})
		waitFor(t, 5*time.Second, "publish", func() bool { return len(tl.broker.published()) == 2+i+1 })
	}
	if n := tl.counter("mqttgw_source_rate_limited_total"); n != before {
		t.Errorf("a proven source was rate limited: %d → %d", before, n)
	}
}

// TestCoAPSReadBuffer: a coaps socket is bound by pion; read_buffer and the
// kernel drop count still reach it, through the listen config's Control.
func TestCoAPSReadBuffer(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("SO_RCVBUF and /proc/net/udp are read on Linux only")
	}
	core, logs := observer.New(zap.DebugLevel)
	psk := func(string) ([]byte, bool) { return []byte("secret"), true }
	tl := startListener(t, udpgw.Env{Logger: zap.New(core)}, Options{ReadBuffer: 100 << 10, DTLS: &DTLSOptions{PSK: psk}})
	applied := logs.FilterMessage("read_buffer applied").All()
	if len(applied) != 1 || applied[0].ContextMap()["granted"] != int64(200<<10) {
		t.Fatalf("read_buffer logs: %v, want one with granted %d", applied, 200<<10)
	}
	if !hasSeries(t, tl, "mqttgw_udp_kernel_drops_total") {
		t.Error("no kernel drop series for the coaps socket")
	}
}

func hasSeries(t *testing.T, tl *testListener, name string) bool {
	t.Helper()
	var b strings.Builder
	if err := tl.metrics.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	return strings.Contains(b.String(), name+`{listener="test"}`)
}

// TestKernelDropsCoAP: a burst into a plain CoAP listener whose reader is
// stopped shows in mqttgw_udp_kernel_drops_total.
func TestKernelDropsCoAP(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/net/udp is read on Linux only")
	}
	env := udpgw.Env{Name: "test", Broker: newFakeBroker()}.WithDefaults()
	l, err := New(env, Options{Bind: "127.0.0.1:0", ReadBuffer: 1, AllowAnonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close() // never served: nothing reads the socket
	c, err := net.DialUDP("udp", nil, l.Addr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 1000)
	deadline := time.Now().Add(10 * time.Second)
	for env.Metrics.Get("mqttgw_udp_kernel_drops_total", "listener", "test") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no kernel drops counted")
		}
		for range 100 {
			_, _ = c.Write(payload)
		}
		time.Sleep(time.Millisecond) // polling: let loopback deliver
	}
}

// TestSpoofedObservationEnds: an observation registered from an address that
// never answers the gateway's pings (a spoofed one) ends UnprovenTTL later,
// even with nothing to notify, and its subscription goes with it.
func TestSpoofedObservationEnds(t *testing.T) {
	tl := startListener(t, udpgw.Env{}, Options{UnprovenTTL: 100 * time.Millisecond})
	m := newMeter(t, tl.addr)
	m.sendReq(observeReq("/ps/quiet/t", "o1"))
	if r := m.next(5 * time.Second); r == nil || r.Code() != codes.Content || !r.HasOption(message.Observe) {
		t.Fatalf("registration response %v", r)
	}
	waitFor(t, 10*time.Second, "observation ended", func() bool {
		return tl.counter("mqttgw_coap_observations_ended_total", "reason", "unproven") == 1
	})
	waitFor(t, 5*time.Second, "unsubscribed", func() bool { return tl.broker.subscriptions() == 0 })
	if m.drain(100 * time.Millisecond); m.got > 3*m.sent {
		t.Errorf("got %d bytes for %d sent", m.got, m.sent)
	}
}
