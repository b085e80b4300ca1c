package mqttsn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeGW is a tiny in-test gateway: a UDP socket on 127.0.0.1 that records
// every message it receives and answers through handle. It is not a
// gateway: it knows one client and the happy path of each exchange.
type fakeGW struct {
	t    *testing.T
	pc   net.PacketConn
	recv chan Message // every message received, in order
	done chan struct{}

	mu     sync.Mutex
	client net.Addr // source of the last datagram
	nextID uint16   // next topic id to assign
	handle func(g *fakeGW, m Message) bool
}

// startGW starts a fake gateway. handle may answer a message itself and
// return true; otherwise the standard answer (gw.auto) is sent.
func startGW(t *testing.T, handle func(g *fakeGW, m Message) bool) *fakeGW {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &fakeGW{t: t, pc: pc, recv: make(chan Message, 1000), done: make(chan struct{}), nextID: 100, handle: handle}
	go g.serve()
	t.Cleanup(func() {
		pc.Close()
		<-g.done
	})
	return g
}

func (g *fakeGW) addr() string { return g.pc.LocalAddr().String() }

func (g *fakeGW) serve() {
	defer close(g.done)
	for {
		buf := make([]byte, 65536) // fresh: decoded messages alias it
		n, from, err := g.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := Decode(buf[:n])
		if err != nil {
			g.t.Errorf("fake gateway: %v", err)
			continue
		}
		g.mu.Lock()
		g.client = from
		handle := g.handle
		g.mu.Unlock()
		g.recv <- m
		if handle == nil || !handle(g, m) {
			g.auto(m)
		}
	}
}

// send sends messages to the client.
func (g *fakeGW) send(ms ...Message) {
	g.mu.Lock()
	to := g.client
	g.mu.Unlock()
	for _, m := range ms {
		b, err := Append(nil, m)
		if err != nil {
			g.t.Errorf("fake gateway: %v", err)
			return
		}
		if _, err := g.pc.WriteTo(b, to); err != nil {
			g.t.Errorf("fake gateway: %v", err)
		}
	}
}

func (g *fakeGW) topicID() uint16 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.nextID++
	return g.nextID - 1
}

// auto sends the standard answer to m.
func (g *fakeGW) auto(m Message) {
	switch m := m.(type) {
	case *Connect:
		if m.Flags.Will {
			g.send(&WillTopicReq{})
		} else {
			g.send(&Connack{})
		}
	case *WillTopic:
		g.send(&WillMsgReq{})
	case *WillMsg:
		g.send(&Connack{})
	case *Register:
		g.send(&Regack{TopicID: g.topicID(), MsgID: m.MsgID})
	case *Publish:
		switch m.Flags.QoS {
		case QoS1:
			g.send(&Puback{TopicID: m.TopicID, MsgID: m.MsgID})
		case QoS2:
			g.send(&Pubrec{MsgID: m.MsgID})
		}
	case *Pubrel:
		g.send(&Pubcomp{MsgID: m.MsgID})
	case *Subscribe:
		var id uint16
		switch {
		case m.Flags.TopicIDType != TopicNormal:
			id = m.TopicID
		case !strings.ContainsAny(m.TopicName, "+#"):
			id = g.topicID()
		}
		g.send(&Suback{Flags: Flags{QoS: m.Flags.QoS}, TopicID: id, MsgID: m.MsgID})
	case *Unsubscribe:
		g.send(&Unsuback{MsgID: m.MsgID})
	case *Pingreq:
		g.send(&Pingresp{})
	case *Disconnect:
		g.send(&Disconnect{})
	case *WillTopicUpd:
		g.send(&WillTopicResp{})
	case *WillMsgUpd:
		g.send(&WillMsgResp{})
	}
}

// next returns the next received message of type t, skipping others.
func (g *fakeGW) next(t MsgType) Message {
	g.t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case m := <-g.recv:
			if m.Type() == t {
				return m
			}
		case <-timeout:
			g.t.Fatalf("fake gateway: no %v received", t)
			return nil
		}
	}
}

// none checks that no message of type t arrives within d.
func (g *fakeGW) none(t MsgType, d time.Duration) {
	g.t.Helper()
	timeout := time.After(d)
	for {
		select {
		case m := <-g.recv:
			if m.Type() == t {
				g.t.Fatalf("fake gateway: unexpected %#v", m)
			}
		case <-timeout:
			return
		}
	}
}

// drain returns the messages received so far.
func (g *fakeGW) drain() []Message {
	var ms []Message
	for {
		select {
		case m := <-g.recv:
			ms = append(ms, m)
		default:
			return ms
		}
	}
}

// checkGoroutines fails the test if goroutines started during it are still
// running at the end (after the clients and fake gateways closed).
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Errorf("%d goroutines leaked:\n%s", runtime.NumGoroutine()-before, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// dial connects a client to g; it is closed when the test ends.
func dial(t *testing.T, g *fakeGW, opts ClientOptions) *Client {
	t.Helper()
	if opts.ClientID == "" {
		opts.ClientID = "dev1"
	}
	c, err := Dial(context.Background(), g.addr(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// dropFirst returns a handler that swallows the first n messages of type mt.
func dropFirst(mt MsgType, n int) func(*fakeGW, Message) bool {
	var dropped atomic.Int32
	return func(_ *fakeGW, m Message) bool {
		return m.Type() == mt && int(dropped.Add(1)) <= n
	}
}

// received collects OnMessage calls.
type received struct {
	mu   sync.Mutex
	msgs []string // "topic id type qos data"
	ch   chan struct{}
}

func newReceived() *received { return &received{ch: make(chan struct{}, 100)} }

func (r *received) on(topic string, id uint16, idType TopicIDType, m *Publish) {
	r.mu.Lock()
	r.msgs = append(r.msgs, fmt.Sprintf("%s %d %s %s %s", topic, id, idType, m.Flags.QoS, m.Data))
	r.mu.Unlock()
	r.ch <- struct{}{}
}

func (r *received) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

func (r *received) wait(t *testing.T, n int) []string {
	t.Helper()
	for range n {
		select {
		case <-r.ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("got %d messages, want %d: %q", len(r.list()), n, r.list())
		}
	}
	return r.list()
}

func TestClientConnect(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, nil)
	c := dial(t, g, ClientOptions{ClientID: "dev1", Keepalive: 90 * time.Second, CleanSession: true})
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	got := g.next(MsgConnect)
	want := &Connect{Flags: Flags{CleanSession: true}, ProtocolID: 1, Duration: 90, ClientID: "dev1"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("CONNECT = %#v, want %#v", got, want)
	}
}

func TestClientConnectWill(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, nil)
	c := dial(t, g, ClientOptions{
		ClientID: "dev1",
		Will:     &Will{Topic: "st/dev1", Payload: []byte("offline"), QoS: QoS1, Retain: true},
	})
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := g.next(MsgConnect).(*Connect); !got.Flags.Will || got.Duration != 60 {
		t.Errorf("CONNECT = %#v, want Will flag and default keepalive 60", got)
	}
	if got, want := g.next(MsgWillTopic), (&WillTopic{Flags: Flags{QoS: QoS1, Retain: true}, Topic: "st/dev1"}); !reflect.DeepEqual(got, want) {
		t.Errorf("WILLTOPIC = %#v, want %#v", got, want)
	}
	if got := g.next(MsgWillMsg).(*WillMsg); string(got.WillMsg) != "offline" {
		t.Errorf("WILLMSG = %q", got.WillMsg)
	}
}

func TestClientConnectRejected(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, func(g *fakeGW, m Message) bool {
		if m.Type() == MsgConnect {
			g.send(&Connack{ReturnCode: Congestion})
			return true
		}
		return false
	})
	c := dial(t, g, ClientOptions{})
	err := c.Connect(testCtx(t))
	if !errors.Is(err, Congestion) {
		t.Fatalf("Connect error = %v, want Congestion", err)
	}
	want := "mqttsn: " + g.addr() + ": connect: rejected: congestion"
	if err.Error() != want {
		t.Errorf("error text %q, want %q", err, want)
	}
}

func TestClientConnectRetransmits(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, dropFirst(MsgConnect, 2))
	c := dial(t, g, ClientOptions{RetryInterval: 20 * time.Millisecond})
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		g.next(MsgConnect)
	}
}

func TestClientPublishQoS0Registers(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, nil)
	c := dial(t, g, ClientOptions{})
	ctx := testCtx(t)
	for range 2 {
		if err := c.Publish(ctx, "a/b", QoS0, false, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := g.next(MsgRegister), (&Register{MsgID: 1, TopicName: "a/b"}); !reflect.DeepEqual(got, want) {
		t.Errorf("REGISTER = %#v, want %#v", got, want)
	}
	want := &Publish{TopicID: 100, Data: []byte("v")}
	for range 2 {
		if got := g.next(MsgPublish); !reflect.DeepEqual(got, want) {
			t.Errorf("PUBLISH = %#v, want %#v", got, want)
		}
	}
	for _, m := range g.drain() {
		if m.Type() == MsgRegister {
			t.Error("topic registered twice")
		}
	}
	if id, idType, ok := c.TopicID("a/b"); !ok || id != 100 || idType != TopicNormal {
		t.Errorf("TopicID(a/b) = %d, %v, %v", id, idType, ok)
	}
}

func TestClientPublishQoS1RetransmitsWithDUP(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, dropFirst(MsgPublish, 1))
	c := dial(t, g, ClientOptions{RetryInterval: 20 * time.Millisecond, PredefinedTopics: map[string]uint16{"cfg/x": 9}})
	if err := c.Publish(testCtx(t), "cfg/x", QoS1, true, []byte("p")); err != nil {
		t.Fatal(err)
	}
	first := g.next(MsgPublish).(*Publish)
	second := g.next(MsgPublish).(*Publish)
	if first.Flags.DUP || !second.Flags.DUP {
		t.Errorf("DUP flags %v then %v, want false then true", first.Flags.DUP, second.Flags.DUP)
	}
	want := Flags{QoS: QoS1, Retain: true, TopicIDType: TopicPredefined}
	second.Flags.DUP = false
	if first.MsgID == 0 || first.MsgID != second.MsgID || first.Flags != want || second.Flags != want || first.TopicID != 9 {
		t.Errorf("PUBLISH %#v then %#v", first, second)
	}
	for _, m := range g.drain() {
		if m.Type() == MsgRegister {
			t.Error("predefined topic was registered")
		}
	}
}

func TestClientPublishQoS2(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, dropFirst(MsgPubrel, 1))
	c := dial(t, g, ClientOptions{RetryInterval: 20 * time.Millisecond})
	if err := c.Publish(testCtx(t), "q/2", QoS2, false, []byte("x")); err != nil {
		t.Fatal(err)
	}
	p := g.next(MsgPublish).(*Publish)
	if p.Flags.QoS != QoS2 {
		t.Errorf("PUBLISH QoS %v", p.Flags.QoS)
	}
	for range 2 { // the first PUBREL was dropped
		if r := g.next(MsgPubrel).(*Pubrel); r.MsgID != p.MsgID {
			t.Errorf("PUBREL MsgId %d, want %d", r.MsgID, p.MsgID)
		}
	}
}

func TestClientPublishRejected(t *testing.T) {
	checkGoroutines(t)
	var rejected atomic.Bool
	g := startGW(t, func(g *fakeGW, m Message) bool {
		if p, ok := m.(*Publish); ok && !rejected.Swap(true) {
			g.send(&Puback{TopicID: p.TopicID, MsgID: p.MsgID, ReturnCode: InvalidTopicID})
			return true
		}
		return false
	})
	c := dial(t, g, ClientOptions{})
	ctx := testCtx(t)
	err := c.Publish(ctx, "a/b", QoS1, false, nil)
	if !errors.Is(err, InvalidTopicID) {
		t.Fatalf("Publish error = %v, want InvalidTopicID", err)
	}
	if err := c.Publish(ctx, "a/b", QoS1, false, nil); err != nil {
		t.Fatal(err)
	}
	g.next(MsgRegister)
	g.next(MsgRegister) // registered again after the rejection
}

func TestClientPublishQoS2Congestion(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, func(g *fakeGW, m Message) bool {
		if p, ok := m.(*Publish); ok {
			g.send(&Puback{TopicID: p.TopicID, MsgID: p.MsgID, ReturnCode: Congestion})
			return true
		}
		return false
	})
	c := dial(t, g, ClientOptions{PredefinedTopics: map[string]uint16{"t": 1}})
	if err := c.Publish(testCtx(t), "t", QoS2, false, nil); !errors.Is(err, Congestion) {
		t.Fatalf("Publish error = %v, want Congestion", err)
	}
}

func TestClientPublishMinusOne(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, nil)
	ctx := testCtx(t)
	hi, _ := ShortTopicID("hi")

	c := dial(t, g, ClientOptions{})
	if err := c.PublishID(ctx, TopicShort, hi, QoSMinusOne, false, []byte("1")); err != nil {
		t.Fatal(err)
	}
	want := &Publish{Flags: Flags{QoS: QoSMinusOne, TopicIDType: TopicShort}, TopicID: hi, Data: []byte("1")}
	if got := g.next(MsgPublish); !reflect.DeepEqual(got, want) {
		t.Errorf("PUBLISH = %#v, want %#v", got, want)
	}

	if err := PublishMinusOne(ctx, g.addr(), TopicPredefined, 7, true, []byte("2")); err != nil {
		t.Fatal(err)
	}
	want = &Publish{Flags: Flags{QoS: QoSMinusOne, Retain: true, TopicIDType: TopicPredefined}, TopicID: 7, Data: []byte("2")}
	if got := g.next(MsgPublish); !reflect.DeepEqual(got, want) {
		t.Errorf("PUBLISH = %#v, want %#v", got, want)
	}

	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := PublishMinusOneTo(pc, g.pc.LocalAddr(), TopicShort, hi, false, []byte("3")); err != nil {
		t.Fatal(err)
	}
	if got := g.next(MsgPublish).(*Publish); string(got.Data) != "3" {
		t.Errorf("PUBLISH data %q", got.Data)
	}

	if err := c.PublishID(ctx, TopicNormal, 5, QoSMinusOne, false, nil); !errors.Is(err, ErrBadQoS) {
		t.Errorf("QoS -1 with a normal topic id: %v", err)
	}
	if err := c.Publish(ctx, "a", QoSMinusOne, false, nil); !errors.Is(err, ErrBadQoS) {
		t.Errorf("Publish QoS -1 by name: %v", err)
	}
	if err := PublishMinusOne(ctx, g.addr(), TopicNormal, 5, false, nil); !errors.Is(err, ErrBadTopicIDType) {
		t.Errorf("PublishMinusOne with a normal topic id: %v", err)
	}
}

func TestClientSubscribeAndReceive(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, nil)
	r := newReceived()
	c := dial(t, g, ClientOptions{OnMessage: r.on})
	granted, id, err := c.Subscribe(testCtx(t), "s/t", QoS1)
	if err != nil || granted != QoS1 || id != 100 {
		t.Fatalf("Subscribe = %v, %d, %v", granted, id, err)
	}
	if got := g.next(MsgSubscribe).(*Subscribe); got.TopicName != "s/t" || got.Flags.QoS != QoS1 || got.Flags.DUP {
		t.Errorf("SUBSCRIBE = %#v", got)
	}

	g.send(&Publish{Flags: Flags{QoS: QoS1}, TopicID: 100, MsgID: 77, Data: []byte("hello")})
	if got := r.wait(t, 1); got[0] != "s/t 100 normal 1 hello" {
		t.Errorf("OnMessage got %q", got)
	}
	if got, want := g.next(MsgPuback), (&Puback{TopicID: 100, MsgID: 77}); !reflect.DeepEqual(got, want) {
		t.Errorf("PUBACK = %#v, want %#v", got, want)
	}
}

func TestClientGatewayRegister(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, nil)
	r := newReceived()
	c := dial(t, g, ClientOptions{OnMessage: r.on})
	if _, id, err := c.Subscribe(testCtx(t), "s/#", QoS0); err != nil || id != 0 {
		t.Fatalf("Subscribe wildcard: id %d, %v", id, err)
	}
	g.send(&Register{TopicID: 300, MsgID: 5, TopicName: "s/x"})
	if got, want := g.next(MsgRegack), (&Regack{TopicID: 300, MsgID: 5}); !reflect.DeepEqual(got, want) {
		t.Errorf("REGACK = %#v, want %#v", got, want)
	}
	g.send(&Publish{TopicID: 300, Data: []byte("a")})
	if got := r.wait(t, 1); got[0] != "s/x 300 normal 0 a" {
		t.Errorf("OnMessage got %q", got)
	}

	// An id nobody registered is rejected, not delivered.
	g.send(&Publish{Flags: Flags{QoS: QoS1}, TopicID: 301, MsgID: 6, Data: []byte("b")})
	if got, want := g.next(MsgPuback), (&Puback{TopicID: 301, MsgID: 6, ReturnCode: InvalidTopicID}); !reflect.DeepEqual(got, want) {
		t.Errorf("PUBACK = %#v, want %#v", got, want)
	}
	if got := r.list(); len(got) != 1 {
		t.Errorf("OnMessage got %q", got)
	}
}

func TestClientInboundQoS2(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, nil)
	r := newReceived()
	c := dial(t, g, ClientOptions{OnMessage: r.on})
	ab, _ := ShortTopicID("ab")
	if _, err := c.SubscribeID(testCtx(t), TopicShort, ab, QoS2); err != nil {
		t.Fatal(err)
	}
	if got := g.next(MsgSubscribe).(*Subscribe); got.Flags.TopicIDType != TopicShort || got.TopicID != ab {
		t.Errorf("SUBSCRIBE = %#v", got)
	}
	pub := &Publish{Flags: Flags{QoS: QoS2, TopicIDType: TopicShort}, TopicID: ab, MsgID: 9, Data: []byte("once")}
	g.send(pub)
	g.next(MsgPubrec)
	dup := *pub
	dup.Flags.DUP = true
	g.send(&dup) // our PUBREC "got lost": the gateway retransmits
	if got := g.next(MsgPubrec).(*Pubrec); got.MsgID != 9 {
		t.Errorf("PUBREC = %#v", got)
	}
	g.send(&Pubrel{MsgID: 9})
	if got := g.next(MsgPubcomp).(*Pubcomp); got.MsgID != 9 {
		t.Errorf("PUBCOMP = %#v", got)
	}
	if got := r.list(); !reflect.DeepEqual(got, []string{"ab 24930 short 2 once"}) {
		t.Errorf("OnMessage got %q, want one delivery", got)
	}
	// After PUBREL the MsgId is free: the same id is a new message.
	g.send(pub)
	g.next(MsgPubrec)
	if got := r.wait(t, 2); len(got) != 2 {
		t.Errorf("OnMessage got %q", got)
	}
}

func TestClientAnswersGatewayPing(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, nil)
	c := dial(t, g, ClientOptions{})
	if err := c.Ping(testCtx(t)); err != nil { // lets the gateway learn our address
		t.Fatal(err)
	}
	g.send(&Pingreq{})
	g.next(MsgPingresp)
}

func TestClientKeepalive(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, nil)
	c := dial(t, g, ClientOptions{Keepalive: 50 * time.Millisecond})
	ctx := testCtx(t)
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if got := g.next(MsgConnect).(*Connect); got.Duration != 1 {
		t.Errorf("CONNECT Duration %d, want 1 (rounded up)", got.Duration)
	}
	start := time.Now()
	g.next(MsgPingreq)
	g.next(MsgPingreq)
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("two keep-alive PINGREQs within %v", d)
	}
	// Asleep: no keep-alive.
	if err := c.Sleep(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	g.drain()
	g.none(MsgPingreq, 250*time.Millisecond)
}

func TestClientNoKeepalive(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, nil)
	c := dial(t, g, ClientOptions{Keepalive: -1})
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := g.next(MsgConnect).(*Connect); got.Duration != 0 {
		t.Errorf("CONNECT Duration %d, want 0", got.Duration)
	}
	g.none(MsgPingreq, 200*time.Millisecond)
}

func TestClientSleepWake(t *testing.T) {
	checkGoroutines(t)
	ab, _ := ShortTopicID("ab")
	g := startGW(t, func(g *fakeGW, m Message) bool {
		if p, ok := m.(*Pingreq); ok && p.ClientID != "" {
			// Awake: flush the buffered messages, then PINGRESP (§6.14).
			g.send(
				&Publish{Flags: Flags{TopicIDType: TopicShort}, TopicID: ab, Data: []byte("1")},
				&Publish{Flags: Flags{QoS: QoS1, TopicIDType: TopicPredefined}, TopicID: 5, MsgID: 3, Data: []byte("2")},
				&Pingresp{},
			)
			return true
		}
		return false
	})
	r := newReceived()
	c := dial(t, g, ClientOptions{ClientID: "sleepy", OnMessage: r.on, PredefinedTopics: map[string]uint16{"cfg": 5}})
	ctx := testCtx(t)
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Sleep(ctx, 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, want := g.next(MsgDisconnect), (&Disconnect{Duration: 600, HasDuration: true}); !reflect.DeepEqual(got, want) {
		t.Errorf("DISCONNECT = %#v, want %#v", got, want)
	}
	if err := c.Wake(ctx); err != nil {
		t.Fatal(err)
	}
	// Both buffered messages were delivered before Wake returned.
	want := []string{"ab 24930 short 0 1", "cfg 5 predefined 1 2"}
	if got := r.list(); !reflect.DeepEqual(got, want) {
		t.Errorf("OnMessage got %q, want %q", got, want)
	}
	if got := g.next(MsgPingreq).(*Pingreq); got.ClientID != "sleepy" {
		t.Errorf("PINGREQ ClientId %q", got.ClientID)
	}
	if got := g.next(MsgPuback).(*Puback); got.MsgID != 3 {
		t.Errorf("PUBACK = %#v", got)
	}
	if err := c.Sleep(ctx, 0); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("Sleep(0) error = %v", err)
	}
}

func TestClientNoResponse(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, func(*fakeGW, Message) bool { return true }) // answers nothing
	c := dial(t, g, ClientOptions{RetryInterval: 20 * time.Millisecond, MaxRetries: 2})
	err := c.Ping(testCtx(t))
	if !errors.Is(err, ErrNoResponse) {
		t.Fatalf("Ping error = %v, want ErrNoResponse", err)
	}
	for range 3 { // first transmission and two retries
		g.next(MsgPingreq)
	}
	g.none(MsgPingreq, 60*time.Millisecond)

	c2 := dial(t, g, ClientOptions{RetryInterval: 20 * time.Millisecond, MaxRetries: -1})
	if err := c2.Connect(testCtx(t)); !errors.Is(err, ErrNoResponse) {
		t.Fatalf("Connect error = %v, want ErrNoResponse", err)
	}
}

func TestClientContextCancel(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, func(*fakeGW, Message) bool { return true })
	c := dial(t, g, ClientOptions{}) // default 10 s retry interval
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := c.Subscribe(ctx, "a", QoS1)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Subscribe error = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Subscribe returned after %v", d)
	}
}

func TestClientClose(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, func(*fakeGW, Message) bool { return true })
	c, err := Dial(context.Background(), g.addr(), ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Ping(context.Background()) }()
	g.next(MsgPingreq) // Ping is waiting now
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("blocked Ping returned %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := c.Publish(context.Background(), "a", QoS0, false, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close: %v", err)
	}
	if err := c.PublishID(context.Background(), TopicPredefined, 1, QoS0, false, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("PublishID after Close: %v", err)
	}
	if err := c.Connect(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Connect after Close: %v", err)
	}
}

func TestClientUnsubscribeWillUpdatesDisconnect(t *testing.T) {
	checkGoroutines(t)
	var rejectWill atomic.Bool
	g := startGW(t, func(g *fakeGW, m Message) bool {
		if m.Type() == MsgWillTopicUpd && rejectWill.Load() {
			g.send(&WillTopicResp{ReturnCode: NotSupported})
			return true
		}
		return false
	})
	c := dial(t, g, ClientOptions{})
	ctx := testCtx(t)

	if err := c.Unsubscribe(ctx, "a/#"); err != nil {
		t.Fatal(err)
	}
	if got := g.next(MsgUnsubscribe).(*Unsubscribe); got.TopicName != "a/#" || got.MsgID == 0 {
		t.Errorf("UNSUBSCRIBE = %#v", got)
	}
	if err := c.UnsubscribeID(ctx, TopicPredefined, 4); err != nil {
		t.Fatal(err)
	}
	if got := g.next(MsgUnsubscribe).(*Unsubscribe); got.TopicID != 4 || got.Flags.TopicIDType != TopicPredefined {
		t.Errorf("UNSUBSCRIBE = %#v", got)
	}

	if err := c.UpdateWillTopic(ctx, "w/t", QoS1, true); err != nil {
		t.Fatal(err)
	}
	if got, want := g.next(MsgWillTopicUpd), (&WillTopicUpd{Flags: Flags{QoS: QoS1, Retain: true}, Topic: "w/t"}); !reflect.DeepEqual(got, want) {
		t.Errorf("WILLTOPICUPD = %#v, want %#v", got, want)
	}
	if err := c.UpdateWillTopic(ctx, "", QoS0, false); err != nil {
		t.Fatal(err)
	}
	if got := g.next(MsgWillTopicUpd); !reflect.DeepEqual(got, &WillTopicUpd{}) {
		t.Errorf("WILLTOPICUPD = %#v, want the empty one", got)
	}
	rejectWill.Store(true)
	if err := c.UpdateWillTopic(ctx, "x", QoS0, false); !errors.Is(err, NotSupported) {
		t.Errorf("UpdateWillTopic error = %v, want NotSupported", err)
	}
	if err := c.UpdateWillMsg(ctx, []byte("bye")); err != nil {
		t.Fatal(err)
	}
	if got := g.next(MsgWillMsgUpd).(*WillMsgUpd); string(got.WillMsg) != "bye" {
		t.Errorf("WILLMSGUPD = %q", got.WillMsg)
	}

	if err := c.Disconnect(ctx); err != nil {
		t.Fatal(err)
	}
	if got := g.next(MsgDisconnect); !reflect.DeepEqual(got, &Disconnect{}) {
		t.Errorf("DISCONNECT = %#v", got)
	}
}

func TestClientConcurrentPublish(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, nil)
	c := dial(t, g, ClientOptions{RetryInterval: time.Second})
	ctx := testCtx(t)
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Go(func() {
			errs <- c.Publish(ctx, fmt.Sprintf("t/%d", i%4), QoS(1+i%2), false, []byte{byte(i)})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestClientDropsGarbage(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, func(g *fakeGW, m Message) bool {
		if m.Type() == MsgPingreq {
			g.pc.WriteTo([]byte{0x02, 0x03}, g.client) // reserved type
			g.send(&Pingresp{})
			return true
		}
		return false
	})
	c := dial(t, g, ClientOptions{})
	if err := c.Ping(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for c.Dropped() != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if c.Dropped() != 1 {
		t.Errorf("Dropped() = %d, want 1", c.Dropped())
	}
}

func TestClientRegister(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, func(g *fakeGW, m Message) bool {
		if r, ok := m.(*Register); ok && r.TopicName == "no" {
			g.send(&Regack{MsgID: r.MsgID, ReturnCode: NotSupported})
			return true
		}
		return false
	})
	c := dial(t, g, ClientOptions{})
	ctx := testCtx(t)
	id, err := c.Register(ctx, "r/t")
	if err != nil || id != 100 {
		t.Fatalf("Register = %d, %v", id, err)
	}
	if _, err := c.Register(ctx, "no"); !errors.Is(err, NotSupported) {
		t.Errorf("Register error = %v, want NotSupported", err)
	}
	if _, _, ok := c.TopicID("no"); ok {
		t.Error("rejected topic remembered")
	}
}

func TestClientForgetsRejectedQoS0Topic(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, func(g *fakeGW, m Message) bool {
		if p, ok := m.(*Publish); ok {
			g.send(&Puback{TopicID: p.TopicID, ReturnCode: InvalidTopicID})
			return true
		}
		return false
	})
	c := dial(t, g, ClientOptions{})
	if err := c.Publish(testCtx(t), "a", QoS0, false, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, _, ok := c.TopicID("a"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("topic id still known after PUBACK invalid topic ID")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestClientGatewayDisconnectStopsKeepalive(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, nil)
	c := dial(t, g, ClientOptions{Keepalive: 30 * time.Millisecond})
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	g.next(MsgPingreq)
	g.send(&Disconnect{}) // the gateway ends the connection (§6.12)
	time.Sleep(50 * time.Millisecond)
	g.drain()
	g.none(MsgPingreq, 150*time.Millisecond)
}

func TestEncapsulatedRadius(t *testing.T) {
	if r := (&Encapsulated{Ctrl: 0xFE}).Radius(); r != 2 {
		t.Errorf("Radius() = %d, want 2", r)
	}
}

// TestClientPublishRightAfterSuback: a gateway may PUBLISH with the topic id of
// a SUBACK right after it (a retained message), before Subscribe has returned;
// the reader must know the id by then rather than reject the PUBLISH.
func TestClientPublishRightAfterSuback(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, func(g *fakeGW, m Message) bool {
		s, ok := m.(*Subscribe)
		if !ok {
			return false
		}
		g.send(&Suback{Flags: Flags{QoS: QoS1}, TopicID: 300, MsgID: s.MsgID},
			&Publish{Flags: Flags{QoS: QoS1, Retain: true}, TopicID: 300, MsgID: 9, Data: []byte("retained")})
		return true
	})
	r := newReceived()
	c := dial(t, g, ClientOptions{OnMessage: r.on})
	if _, id, err := c.Subscribe(testCtx(t), "r/t", QoS1); err != nil || id != 300 {
		t.Fatalf("Subscribe = %d, %v", id, err)
	}
	if got := r.wait(t, 1); got[0] != "r/t 300 normal 1 retained" {
		t.Errorf("OnMessage got %q", got)
	}
	if pa := g.next(MsgPuback).(*Puback); pa.ReturnCode != Accepted {
		t.Errorf("PUBACK %v: the PUBLISH was rejected", pa.ReturnCode)
	}
}

// timeoutConn wraps a UDP socket the way a DTLS connection behaves: a read
// deadline ends Read with its own timeout error (a net.Error, not
// os.ErrDeadlineExceeded), and once the peer has gone Read says io.EOF.
type timeoutConn struct {
	net.Conn
	eof atomic.Bool
}

type dtlsLikeTimeout struct{}

func (dtlsLikeTimeout) Error() string   { return "dtls timeout: read/write timeout" }
func (dtlsLikeTimeout) Timeout() bool   { return true }
func (dtlsLikeTimeout) Temporary() bool { return true }

func (c *timeoutConn) Read(b []byte) (int, error) {
	if c.eof.Load() {
		return 0, io.EOF
	}
	n, err := c.Conn.Read(b)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if c.eof.Load() {
			return 0, io.EOF
		}
		return 0, dtlsLikeTimeout{}
	}
	return n, err
}

// TestClientDialConn runs the client over a connection the caller made, as
// `mqttgw pub` does over DTLS: CONNECT, the keep-alive PINGREQ driven by the
// connection's own timeout error, and a reader that ends when the connection
// reports io.EOF, leaving no goroutine behind.
func TestClientDialConn(t *testing.T) {
	checkGoroutines(t)
	g := startGW(t, nil)
	uc, err := net.Dial("udp", g.addr())
	if err != nil {
		t.Fatal(err)
	}
	tc := &timeoutConn{Conn: uc}
	c := DialConn(tc, ClientOptions{ClientID: "dev1", Keepalive: 50 * time.Millisecond, RetryInterval: 100 * time.Millisecond})
	defer c.Close()
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	g.next(MsgConnect)
	g.next(MsgPingreq) // sent when the read deadline passed
	tc.eof.Store(true)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the reader did not end on io.EOF")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// closedPort returns a loopback UDP address where nothing listens: a port just
// bound and released.
func closedPort(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// TestClientRefused: a datagram to a port where nothing listens comes back as
// ICMP port unreachable, and the exchange fails with ErrRefused at once, as
// mosquitto_pub fails on a refused connection: with a retry interval of an
// hour, only the refusal can end Connect before the context does. A gateway
// that goes away fails the next exchange the same way; a QoS 0 publish, which
// waits for nothing, does not fail.
func TestClientRefused(t *testing.T) {
	checkGoroutines(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Dial(ctx, closedPort(t), ClientOptions{ClientID: "dev1", RetryInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Connect(ctx)
	if !errors.Is(err, ErrRefused) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("Connect to a closed port: %v, want ErrRefused (and ECONNREFUSED)", err)
	}
	if !strings.Contains(err.Error(), "connect: port unreachable") {
		t.Errorf("error %q does not say what happened", err)
	}

	g := startGW(t, nil)
	c2 := dial(t, g, ClientOptions{RetryInterval: time.Hour})
	if err := c2.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	g.pc.Close() // the gateway goes away
	<-g.done
	if err := c2.PublishID(ctx, TopicPredefined, 1, QoS0, false, []byte("x")); err != nil {
		t.Errorf("QoS 0 publish to a closed port: %v, want nil (nothing waits for an answer)", err)
	}
	if err := c2.Publish(ctx, "a/b", QoS1, false, []byte("x")); !errors.Is(err, ErrRefused) {
		t.Errorf("Publish after the gateway went away: %v, want ErrRefused", err)
	}
	if _, _, err := c2.Subscribe(ctx, "a/#", QoS1); !errors.Is(err, ErrRefused) {
		t.Errorf("Subscribe after the gateway went away: %v, want ErrRefused", err)
	}
}
