package coap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// rawPeer is a device made of one UDP socket and go-coap's codec, so a test
// decides exactly what it sends and whether it acknowledges.
type rawPeer struct {
	t    *testing.T
	conn *net.UDPConn
	mid  uint16
	// quiet, when set, makes recv return CoAP pings rather than answer them
	// with a Reset as any CoAP endpoint does (RFC 7252 §4.3), which proves
	// the peer's address to the listener (unproven.go).
	quiet bool
}

func newRawPeer(t *testing.T, addr string) *rawPeer {
	t.Helper()
	ra, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, ra)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawPeer{t: t, conn: c, mid: 0x100}
}

type req struct {
	typ     message.Type
	code    codes.Code
	path    string // "/ps/x?c=dev"
	token   string
	observe int // -1: none
	payload string
}

func (p *rawPeer) encode(r req) ([]byte, int32) {
	p.t.Helper()
	m := pool.NewMessage(context.Background())
	m.SetType(r.typ)
	m.SetCode(r.code)
	p.mid++
	m.SetMessageID(int32(p.mid))
	m.SetToken([]byte(r.token))
	path, query, _ := strings.Cut(r.path, "?")
	if err := m.SetPath(path); err != nil {
		p.t.Fatal(err)
	}
	if query != "" {
		for _, q := range strings.Split(query, "&") {
			m.AddQuery(q)
		}
	}
	if r.observe >= 0 {
		m.SetObserve(uint32(r.observe))
	}
	if r.payload != "" {
		m.SetBody(strings.NewReader(r.payload))
	}
	b, err := m.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		p.t.Fatal(err)
	}
	return b, int32(p.mid)
}

func (p *rawPeer) send(b []byte) {
	p.t.Helper()
	if _, err := p.conn.Write(b); err != nil {
		p.t.Fatal(err)
	}
}

// recv returns the next message within d, or nil. It answers CoAP pings
// unless p is quiet.
func (p *rawPeer) recv(d time.Duration) *pool.Message {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for {
		_ = p.conn.SetReadDeadline(deadline)
		buf := make([]byte, 4096)
		n, err := p.conn.Read(buf)
		if err != nil {
			return nil
		}
		m := pool.NewMessage(context.Background())
		if _, err := m.UnmarshalWithDecoder(coder.DefaultCoder, buf[:n]); err != nil {
			p.t.Fatalf("undecodable datagram % x: %v", buf[:n], err)
		}
		if !p.quiet && m.Type() == message.Confirmable && m.Code() == codes.Empty {
			p.send([]byte{0x70, 0x00, buf[2], buf[3]}) // RST: pong
			continue
		}
		return m
	}
}

// do sends a request and returns its response (the first message carrying its
// token that is not a notification).
func (p *rawPeer) do(r req) *pool.Message {
	p.t.Helper()
	b, _ := p.encode(r)
	p.send(b)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		m := p.recv(time.Until(deadline))
		if m == nil {
			break
		}
		if string(m.Token()) == r.token {
			return m
		}
	}
	p.t.Fatalf("no response to %v %s", r.code, r.path)
	return nil
}

// ack acknowledges a Confirmable message.
func (p *rawPeer) ack(m *pool.Message) {
	p.t.Helper()
	b := []byte{0x60, 0x00, byte(m.MessageID() >> 8), byte(m.MessageID())}
	p.send(b)
}

func publish(t *testing.T, b *fakeBroker, topic, payload string) {
	t.Helper()
	if err := b.Publish(context.Background(), "mqtt", udpgw.Message{Topic: topic, Payload: []byte(payload)}); err != nil {
		t.Fatal(err)
	}
}

func observeReq(path, token string) req {
	return req{typ: message.Confirmable, code: codes.GET, path: path, token: token, observe: 0}
}

// TestRegistrationResponseComesFirst: a retained message the broker delivers
// during Subscribe is notified only after the registration response, with a
// higher Observe number (RFC 7641 §4.4).
func TestRegistrationResponseComesFirst(t *testing.T) {
	tl := startListener(t, udpgw.Env{}, Options{})
	tl.broker.setRetained(udpgw.Message{Topic: "r/t", Payload: []byte("kept"), Retain: true})
	p := newRawPeer(t, tl.addr)
	b, _ := p.encode(observeReq("/ps/r/t?c=d1", "o1"))
	p.send(b)
	first := p.recv(5 * time.Second)
	if first == nil || first.Type() != message.Acknowledgement || first.Code() != codes.Content {
		t.Fatalf("first message: %v, want the piggybacked 2.05", first)
	}
	seq0, err := first.Observe()
	if err != nil {
		t.Fatal("registration response without Observe")
	}
	second := p.recv(5 * time.Second)
	if second == nil {
		t.Fatal("no notification of the retained message")
	}
	body, _ := second.ReadBody()
	seq1, _ := second.Observe()
	if string(body) != "kept" || seq1 != (seq0+1)&seqMask || string(second.Token()) != "o1" {
		t.Fatalf("notification %q seq %d token %q, want \"kept\" seq %d", body, seq1, second.Token(), seq0+1)
	}
}

// TestSlowObserverDoesNotDelayOthers: one device never acknowledges its
// Confirmable notifications; another gets every message at once. The silent
// one's queue drops its oldest messages (counted), and its observation ends
// when a notification times out (RFC 7641 §4.5).
func TestSlowObserverDoesNotDelayOthers(t *testing.T) {
	tl := startListener(t, udpgw.Env{}, Options{NotifyCON: true, ObserverQueue: 2, AckTimeout: 100 * time.Millisecond, MaxRetransmit: 2})
	silent := newRawPeer(t, tl.addr)
	if r := silent.do(observeReq("/ps/s/t?c=silent", "s1")); r.Code() != codes.Content {
		t.Fatalf("register: %v", r.Code())
	}
	fast := newRawPeer(t, tl.addr)
	if r := fast.do(observeReq("/ps/s/t?c=fast", "f1")); r.Code() != codes.Content {
		t.Fatalf("register: %v", r.Code())
	}
	for i := range 10 {
		publish(t, tl.broker, "s/t", fmt.Sprint(i))
		m := fast.recv(5 * time.Second)
		if m == nil {
			t.Fatalf("fast observer got %d of 10", i)
		}
		body, _ := m.ReadBody()
		if string(body) != fmt.Sprint(i) || m.Type() != message.Confirmable {
			t.Fatalf("notification %d: %q type %v", i, body, m.Type())
		}
		fast.ack(m)
	}
	waitFor(t, 10*time.Second, "silent observer's CON to time out", func() bool {
		return tl.counter("mqttgw_coap_observations_ended_total", "reason", "timeout") == 1
	})
	if n := tl.counter("mqttgw_coap_notifications_dropped_total", "reason", "queue_full"); n != 7 {
		t.Errorf("queue_full drops = %d, want 7 (10 messages: one in flight, a queue of 2)", n)
	}
	if n := tl.counter("mqttgw_coap_notification_retransmissions_total"); n != 2 {
		t.Errorf("retransmissions = %d, want 2", n)
	}
	// The fast observer is still registered; the silent one's subscription went.
	publish(t, tl.broker, "s/t", "after")
	if m := fast.recv(5 * time.Second); m == nil {
		t.Fatal("fast observer lost its observation")
	} else {
		fast.ack(m)
	}
	waitFor(t, 5*time.Second, "silent unsubscribed", func() bool { return tl.broker.subscriptions() == 1 })
}

// TestReaderNeverWaitsForAHandler: while one device's publishes wait for the
// broker, another device is served, and the waiting device's excess requests
// are dropped and counted rather than queued without bound.
func TestReaderNeverWaitsForAHandler(t *testing.T) {
	block := make(chan struct{})
	b := &blockingBroker{fakeBroker: newFakeBroker(), block: block}
	tl := startListener(t, udpgw.Env{Broker: b}, Options{})
	defer close(block)
	slow := newRawPeer(t, tl.addr)
	for i := range 3 * maxInflight {
		m, _ := slow.encode(req{typ: message.Confirmable, code: codes.PUT, path: "/ps/slow/t", token: fmt.Sprint("s", i), observe: -1, payload: "x"})
		slow.send(m)
	}
	waitFor(t, 5*time.Second, "excess requests dropped", func() bool {
		return tl.counter("mqttgw_coap_datagrams_dropped_total", "reason", "busy") >= 2*maxInflight-1
	})
	other := newRawPeer(t, tl.addr)
	b.fakeBroker.setRetained(udpgw.Message{Topic: "o/t", Payload: []byte("v")})
	if r := other.do(req{typ: message.Confirmable, code: codes.GET, path: "/ps/o/t", token: "g", observe: -1}); r.Code() != codes.Content {
		t.Fatalf("other device: %v", r.Code())
	}
}

// blockingBroker's Publish waits until block is closed.
type blockingBroker struct {
	*fakeBroker
	block chan struct{}
}

func (b *blockingBroker) Publish(ctx context.Context, device string, m udpgw.Message) error {
	select {
	case <-b.block:
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.fakeBroker.Publish(ctx, device, m)
}

// TestNotificationAfterConnectionExpired: go-coap's per-address connection
// (made only for a block-wise transfer) is closed when idle, but the device's
// observation lives on, and notifications need none: the next message goes
// to the device's address from the listener's socket.
func TestNotificationAfterConnectionExpired(t *testing.T) {
	tl := startListener(t, udpgw.Env{}, Options{ConnIdle: 100 * time.Millisecond})
	p := newRawPeer(t, tl.addr)
	if r := p.do(observeReq("/ps/idle/t?c=sleepy", "i1")); r.Code() != codes.Content {
		t.Fatalf("register: %v", r.Code())
	}
	waitFor(t, 10*time.Second, "connection expired", func() bool {
		tl.peersMu.Lock()
		defer tl.peersMu.Unlock()
		return len(tl.peers) == 0
	})
	publish(t, tl.broker, "idle/t", "wake up")
	m := p.recv(5 * time.Second)
	if m == nil {
		t.Fatal("no notification after the connection expired")
	}
	if body, _ := m.ReadBody(); string(body) != "wake up" {
		t.Fatalf("notification %q", body)
	}
}

// TestObserverLimits: registrations beyond max_observers_per_device or
// max_observers_per_topic are answered as plain GETs, without Observe (RFC 7641
// §4.1), and counted.
func TestObserverLimits(t *testing.T) {
	tl := startListener(t, udpgw.Env{}, Options{MaxObserversPerDevice: 1, MaxObserversPerTopic: 2})
	a := newRawPeer(t, tl.addr)
	if r := a.do(observeReq("/ps/l/1?c=a", "a1")); !r.HasOption(message.Observe) {
		t.Fatal("first registration refused")
	}
	if r := a.do(observeReq("/ps/l/2?c=a", "a2")); r.HasOption(message.Observe) || r.Code() != codes.NotFound {
		t.Fatalf("second registration of one device: %v observe %v, want 4.04 without Observe", r.Code(), r.HasOption(message.Observe))
	}
	// Re-registering the same token is an update, not a new observer (§4.1).
	if r := a.do(observeReq("/ps/l/1?c=a", "a1")); !r.HasOption(message.Observe) {
		t.Fatal("re-registration refused")
	}
	b := newRawPeer(t, tl.addr)
	if r := b.do(observeReq("/ps/l/1?c=b", "b1")); !r.HasOption(message.Observe) {
		t.Fatal("second observer of the topic refused")
	}
	c := newRawPeer(t, tl.addr)
	if r := c.do(observeReq("/ps/l/1?c=c", "c1")); r.HasOption(message.Observe) {
		t.Fatal("third observer of a topic limited to 2 accepted")
	}
	if n := tl.counter("mqttgw_coap_observations_refused_total"); n != 2 {
		t.Errorf("refused = %d, want 2", n)
	}
}

// TestSessionEndedEndsObservations: when the registry's driver expires a
// device's session its observations end, the broker subscription goes and the
// device is forgotten.
func TestSessionEndedEndsObservations(t *testing.T) {
	tl := startListener(t, udpgw.Env{}, Options{})
	p := newRawPeer(t, tl.addr)
	p.do(observeReq("/ps/x/t?c=gone", "g1"))
	if tl.broker.subscriptions() != 1 {
		t.Fatal("not subscribed")
	}
	s := tl.env.Sessions.Lookup(session.Key{Listener: "test", Device: "gone"})
	if s == nil {
		t.Fatal("no session for the device")
	}
	peer := session.Peer{Addr: p.conn.LocalAddr().(*net.UDPAddr).AddrPort()}
	if got := tl.env.Sessions.ByPeer("test", peer); got != s {
		t.Fatalf("ByPeer(%v) = %v, want the device's session", peer.Addr, got)
	}
	// The gateway's driver: 1.5 keepalives of silence later the session is
	// lost and its owner, the listener, is told.
	tl.env.Sessions.Expire(time.Now().Add(2*tl.opts.Keepalive), nil)
	waitFor(t, 5*time.Second, "unsubscribed", func() bool { return tl.broker.subscriptions() == 0 })
	waitFor(t, 5*time.Second, "device forgotten", func() bool {
		tl.mu.Lock()
		defer tl.mu.Unlock()
		return len(tl.devices) == 0 && len(tl.perTopic) == 0 && len(tl.sent) == 0
	})
	if tl.env.Sessions.ByPeer("test", peer) != nil {
		t.Error("the lost device is still found by its address")
	}
	if n := tl.counter("mqttgw_coap_observations_ended_total", "reason", "lost"); n != 1 {
		t.Errorf("ended{lost} = %d", n)
	}
}

// TestNATRebindingFollowsSession: a device known by its client id keeps its
// observation when its address changes; its next request from the new address
// moves its session there (one session, found by the new address only), the
// next notification follows it, and a deregistration without c from the new
// address is matched to the device through the registry (RFC 7641 §3.6).
func TestNATRebindingFollowsSession(t *testing.T) {
	tl := startListener(t, udpgw.Env{}, Options{})
	old := newRawPeer(t, tl.addr)
	if r := old.do(observeReq("/ps/nat/cmd?c=roamer", "n1")); r.Code() != codes.Content {
		t.Fatalf("register: %v", r.Code())
	}
	publish(t, tl.broker, "nat/cmd", "one")
	if m := old.recv(5 * time.Second); m == nil {
		t.Fatal("no notification at the first address")
	}
	moved := newRawPeer(t, tl.addr) // the NAT gave the device a new port
	if r := moved.do(req{typ: message.Confirmable, code: codes.PUT, path: "/ps/nat/hello?c=roamer", token: "p", observe: -1, payload: "moved"}); r.Code() != codes.Changed {
		t.Fatalf("publish from the new address: %v", r.Code())
	}
	s := tl.env.Sessions.Lookup(session.Key{Listener: "test", Device: "roamer"})
	newAddr := moved.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	oldAddr := old.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	if s == nil || s.Addr() != newAddr || tl.env.Sessions.Len() != 1 {
		t.Fatalf("session %v at %v, %d sessions; want one, at %v", s, s.Addr(), tl.env.Sessions.Len(), newAddr)
	}
	if tl.env.Sessions.ByPeer("test", session.Peer{Addr: oldAddr}) != nil {
		t.Error("the old address still names the device")
	}
	publish(t, tl.broker, "nat/cmd", "two")
	m := moved.recv(5 * time.Second)
	if m == nil {
		t.Fatal("no notification at the new address")
	}
	if body, _ := m.ReadBody(); string(body) != "two" || string(m.Token()) != "n1" {
		t.Fatalf("notification %q token %q", body, m.Token())
	}
	// The answer is a plain GET's: the last value, without Observe.
	if r := moved.do(req{typ: message.Confirmable, code: codes.GET, path: "/ps/nat/cmd", token: "n1", observe: 1}); r.Code() != codes.Content || r.HasOption(message.Observe) {
		t.Fatalf("deregistration: %v, Observe %v", r.Code(), r.HasOption(message.Observe))
	}
	waitFor(t, 5*time.Second, "deregistered", func() bool {
		return tl.counter("mqttgw_coap_observations_ended_total", "reason", "deregister") == 1 && tl.broker.subscriptions() == 0
	})
}

// TestRegistryOwnsSession: the engine creates a device's session through the
// registry (the Created hook runs once, however many requests), never sets its
// keepalive (the class's, set by the hook, gives the Max-Age of its
// observation), and an ACK to a notification refreshes the session without
// creating one.
func TestRegistryOwnsSession(t *testing.T) {
	var mu sync.Mutex
	created := 0
	reg := session.New(session.Options{Created: func(s *session.Session) {
		mu.Lock()
		created++
		mu.Unlock()
		s.SetKeepalive(time.Hour) // the device's class overrides the listener's 24 h
	}})
	var now atomicTime
	now.set(time.Now())
	tl := startListener(t, udpgw.Env{Sessions: reg, Now: now.get}, Options{NotifyCON: true})
	p := newRawPeer(t, tl.addr)
	r := p.do(observeReq("/ps/k/t?c=classy", "k1"))
	if v, err := r.GetOptionUint32(message.MaxAge); err != nil || v != 5400 {
		t.Fatalf("Max-Age %d (%v), want 5400: the class's keepalive × 1.5", v, err)
	}
	p.do(req{typ: message.NonConfirmable, code: codes.PUT, path: "/ps/k/u?c=classy", token: "u", observe: -1, payload: "x"})
	s := reg.Lookup(session.Key{Listener: "test", Device: "classy"})
	if s == nil || s.Keepalive() != time.Hour {
		t.Fatalf("session %v: keepalive not left to the class", s)
	}
	mu.Lock()
	n := created
	mu.Unlock()
	if n != 1 {
		t.Fatalf("Created ran %d times, want 1", n)
	}
	// The device answers the gateway's ping, which proves its address
	// (unproven.go), before the clock jumps past the unproven entries' life.
	if m := p.recv(300 * time.Millisecond); m != nil {
		t.Fatalf("unexpected %v", m)
	}
	waitFor(t, 5*time.Second, "address proven", func() bool { return tl.counter("mqttgw_sources_proven_total") == 1 })
	now.set(now.get().Add(time.Minute))
	publish(t, tl.broker, "k/t", "v")
	m := p.recv(5 * time.Second)
	if m == nil || m.Type() != message.Confirmable {
		t.Fatalf("notification %v", m)
	}
	if v, _ := m.GetOptionUint32(message.MaxAge); v != 5400 {
		t.Errorf("notification Max-Age %d, want 5400", v)
	}
	p.ack(m)
	waitFor(t, 5*time.Second, "ACK refreshes the session", func() bool { return s.LastSeen().Equal(now.get()) })
	if reg.Len() != 1 {
		t.Errorf("%d sessions, want 1", reg.Len())
	}
}

// atomicTime is a settable clock for Env.Now.
type atomicTime struct {
	mu sync.Mutex
	t  time.Time
}

func (a *atomicTime) set(t time.Time) { a.mu.Lock(); a.t = t; a.mu.Unlock() }

func (a *atomicTime) get() time.Time { a.mu.Lock(); defer a.mu.Unlock(); return a.t }

// TestDeviceCannotBeTakenOver: a client id first used with a password cannot be
// claimed by a request without it.
func TestDeviceCannotBeTakenOver(t *testing.T) {
	tl := startListener(t, udpgw.Env{}, Options{AllowAnonymous: true, CheckPassword: func(_ netip.Addr, u, p string) error {
		if u == "u" && p == "pw" {
			return nil
		}
		return errors.New("bad user name or password")
	}})
	a := newRawPeer(t, tl.addr)
	if r := a.do(req{typ: message.Confirmable, code: codes.PUT, path: "/ps/t?c=owned&u=u&p=pw", token: "a", observe: -1, payload: "1"}); r.Code() != codes.Changed {
		t.Fatalf("owner: %v", r.Code())
	}
	b := newRawPeer(t, tl.addr)
	if r := b.do(req{typ: message.Confirmable, code: codes.PUT, path: "/ps/t?c=owned", token: "b", observe: -1, payload: "2"}); r.Code() != codes.Unauthorized {
		t.Fatalf("anonymous claim of an owned client id: %v, want 4.01", r.Code())
	}
	if r := b.do(req{typ: message.Confirmable, code: codes.PUT, path: "/ps/t?c=free", token: "c", observe: -1, payload: "3"}); r.Code() != codes.Changed {
		t.Fatalf("anonymous: %v", r.Code())
	}
}

// TestTopicRulePath: a path outside /ps/ is publishable when a topic rule
// matches it, and 4.04 otherwise.
func TestTopicRulePath(t *testing.T) {
	tl := startListener(t, udpgw.Env{}, Options{})
	p := newRawPeer(t, tl.addr)
	if r := p.do(req{typ: message.Confirmable, code: codes.POST, path: "/rule/d1/temp", token: "r", observe: -1, payload: "1"}); r.Code() != codes.Changed {
		t.Fatalf("rule path: %v", r.Code())
	}
	if got := tl.broker.published(); len(got) != 1 || got[0].Topic != "rule/d1/temp" {
		t.Fatalf("published %v", got)
	}
	if r := p.do(req{typ: message.Confirmable, code: codes.POST, path: "/other/x", token: "o", observe: -1, payload: "1"}); r.Code() != codes.NotFound {
		t.Fatalf("no rule: %v", r.Code())
	}
	if r := p.do(req{typ: message.Confirmable, code: codes.GET, path: "/rule/d1/temp", token: "g", observe: -1}); r.Code() != codes.NotFound {
		t.Fatalf("GET on a rule path: %v, want 4.04 (rules rewrite publishes only)", r.Code())
	}
}

// TestCloseStopsEverything: Close is idempotent, Serve returns, and no goroutine
// of the listener outlives it.
func TestCloseStopsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	tl := startListener(t, udpgw.Env{}, Options{NotifyCON: true, AckTimeout: time.Hour})
	p := newRawPeer(t, tl.addr)
	p.do(observeReq("/ps/c/t?c=x", "c1"))
	publish(t, tl.broker, "c/t", "pending") // a CON notification never acknowledged: the pump waits
	if m := p.recv(5 * time.Second); m == nil {
		t.Fatal("no notification")
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := tl.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}()
	}
	wg.Wait()
	waitFor(t, 5*time.Second, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= before+1 })
}

// FuzzDatagram feeds arbitrary datagrams through go-coap's decoder, the
// monitor and the request logic of a listener, and through the proven path
// (fast.go), synchronously (go-coap's own queue and the proven path's
// workers would make coverage depend on goroutine timing): nothing may panic.
func FuzzDatagram(f *testing.F) {
	f.Add([]byte{0x40, 0x01, 0x12, 0x34})                                                           // CON GET, no options
	f.Add([]byte{0x44, 0x03, 0x00, 0x01, 't', 'o', 'k', '1', 0xb2, 'p', 's', 0x01, 'x', 0xff, 'v'}) // CON PUT /ps/x "v"
	f.Add([]byte{0x41, 0x01, 0x00, 0x02, 'o', 0x60, 0xb2, 'p', 's', 0x01, 'y'})                     // CON GET Observe=0 /ps/y
	f.Add([]byte{0x41, 0x01, 0x00, 0x03, 'o', 0x61, 0x01, 0xb2, 'p', 's', 0x01, 'y'})               // CON GET Observe=1 /ps/y
	f.Add([]byte{0x42, 0x03, 0x00, 0x04, 'a', 'b', 0xb2, 'p', 's', 0x01, 'z', 0xd1, 0x0e, 0x08})    // PUT with Block1 NUM 0 M
	f.Add([]byte{0x70, 0x00, 0x00, 0x05})                                                           // RST
	f.Add([]byte{0x40, 0x01, 0x00, 0x06, 0xb5, 'p'})                                                // truncated option
	f.Add([]byte{0x51, 0x02, 0x00, 0x07, 'q', 0xb2, 'p', 's', 0x01, 'a', 0x44, 'c', '=', 'i', 'd'}) // NON POST /ps/a?c=id
	// A broker that keeps nothing, so that state from earlier inputs does not
	// make later ones slower; nothing may log to f while it fuzzes.
	tl := startListener(f, udpgw.Env{Broker: nopBroker{}, Logger: zap.NewNop()}, Options{})
	from := netip.MustParseAddrPort("127.0.0.1:9") // discard: answers go nowhere
	f.Fuzz(func(t *testing.T, d []byte) {
		if len(d) < 4 || d[0]>>6 != 1 {
			return // readUDP drops these before go-coap
		}
		fuzzProven(t, tl, d, from)
		p, _ := tl.peer(from)
		if p == nil {
			t.Skip("listener closed")
		}
		m := p.cc.AcquireMessage(context.Background())
		defer p.cc.ReleaseMessage(m)
		if _, err := m.UnmarshalWithDecoder(coder.DefaultCoder, d); err != nil {
			return // go-coap rejects it (RST for a Confirmable one)
		}
		st := stateOf(p.cc)
		if drop, _ := tl.monitor(p.cc, m); drop || !isRequest(m) {
			return
		}
		st.release(m.MessageID())
		tl.serve(p.cc, st, m)
	})
}

// fuzzProven is FuzzDatagram's pass through the proven path: what the reader
// does with d (fromProven) when it is not a request, else the worker's
// serving of it.
func fuzzProven(t *testing.T, tl *testListener, d []byte, from netip.AddrPort) {
	m := tl.pool.AcquireMessage(context.Background())
	defer tl.pool.ReleaseMessage(m)
	if _, err := m.UnmarshalWithDecoder(coder.DefaultCoder, d); err != nil || !isRequest(m) || m.HasOption(message.Block1) || m.HasOption(message.Block2) {
		tl.fromProven(d, from) // on the reader, or handed to a connection
		return
	}
	fp := tl.fastPeer(from)
	if fp == nil {
		t.Skip("listener closed")
	}
	tl.fastMu.Lock()
	fp.take(uint16(m.MessageID()))
	fp.inflight++
	tl.fastMu.Unlock()
	tl.serveProven(fp, m)
}

// nopBroker accepts everything and delivers nothing.
type nopBroker struct{}

func (nopBroker) Publish(context.Context, string, udpgw.Message) error { return nil }
func (nopBroker) HasTopicRule(string) bool                             { return false }
func (nopBroker) BrokerTopic(_, topic string) (string, error)          { return topic, nil }
func (nopBroker) Subscribe(_ context.Context, _, _ string, qos byte, _ func(udpgw.Message)) (byte, error) {
	return qos, nil
}
func (nopBroker) Unsubscribe(context.Context, string, string) error { return nil }
func (nopBroker) UnsubscribeAll(string)                             {}
func (nopBroker) Retained(context.Context, string, string) (udpgw.Message, bool, error) {
	return udpgw.Message{}, false, nil
}
