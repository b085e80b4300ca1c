package mqttsn

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/mqttgw/mqttgw/internal/wait"
	"github.com/mqttgw/mqttgw/metrics"
	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// fakeBroker is a udpgw.Broker in memory. Publishes wait while gate is closed
// (nil gate: never); err, when set, fails them.
type fakeBroker struct {
	mu        sync.Mutex
	published []udpgw.Message
	devices   []string
	calls     []string                                  // "sub F", "unsub F", "unsuball D", in order
	subs      map[string]map[string]func(udpgw.Message) // device → filter → deliver
	gate      chan struct{}
	err       error
}

func newFakeBroker() *fakeBroker {
	return &fakeBroker{subs: map[string]map[string]func(udpgw.Message){}}
}

func (b *fakeBroker) Publish(ctx context.Context, device string, m udpgw.Message) error {
	b.mu.Lock()
	gate, err := b.gate, b.err
	b.mu.Unlock()
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
	b.published = append(b.published, m)
	b.devices = append(b.devices, device)
	b.mu.Unlock()
	return nil
}

func (b *fakeBroker) Subscribe(ctx context.Context, device, filter string, qos byte, deliver func(udpgw.Message)) (byte, error) {
	b.mu.Lock()
	gate := b.gate
	b.mu.Unlock()
	if gate != nil {
		<-gate
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	b.calls = append(b.calls, "sub "+filter)
	if b.subs[device] == nil {
		b.subs[device] = map[string]func(udpgw.Message){}
	}
	b.subs[device][filter] = deliver
	return min(qos, 2), nil
}

func (b *fakeBroker) Unsubscribe(ctx context.Context, device, filter string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, "unsub "+filter)
	delete(b.subs[device], filter)
	return nil
}

func (b *fakeBroker) UnsubscribeAll(device string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, "unsuball "+device)
	delete(b.subs, device)
}

func (b *fakeBroker) HasTopicRule(string) bool { return false }

// BrokerTopic applies the fake listener's mountpoint, as the gateway's does.
func (b *fakeBroker) BrokerTopic(_, topic string) (string, error) { return "mp/" + topic, nil }

func (b *fakeBroker) Retained(context.Context, string, string) (udpgw.Message, bool, error) {
	return udpgw.Message{}, false, nil
}

// send delivers m to device's subscription on filter, as the hub would.
func (b *fakeBroker) send(t *testing.T, device, filter string, m udpgw.Message) {
	t.Helper()
	b.mu.Lock()
	f := b.subs[device][filter]
	b.mu.Unlock()
	if f == nil {
		t.Fatalf("no subscription of %s to %s", device, filter)
	}
	f(m)
}

func (b *fakeBroker) pubs() []udpgw.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]udpgw.Message(nil), b.published...)
}

func (b *fakeBroker) callList() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.calls...)
}

type testEngine struct {
	*Engine
	b        *fakeBroker
	sessions *session.Registry
	reg      *metrics.Registry
	clock    *testClock
	addr     string
}

// testClock is the engine's clock in tests (udpgw.Env.Now): it starts at the
// real time and moves only when a test advances it, so Tick sees exactly the
// time the test chose.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// startEngine serves an engine on 127.0.0.1:0 with short timers; tune edits the
// options first. Its registry has the engine as the listener's owner, as the
// gateway's has; nothing drives Tick: tests call tick.
func startEngine(t testing.TB, tune func(*Options)) *testEngine {
	t.Helper()
	return startEngineWith(t, session.Options{}, tune)
}

// startEngineWith is startEngine with a registry made with so (its hooks).
func startEngineWith(t testing.TB, so session.Options, tune func(*Options)) *testEngine {
	t.Helper()
	b := newFakeBroker()
	te := &testEngine{b: b, sessions: session.New(so), reg: metrics.New(), clock: &testClock{t: time.Now()}}
	env := udpgw.Env{Name: "sn", Logger: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)), Metrics: te.reg,
		Now: te.clock.Now, Broker: b, Sessions: te.sessions}
	o := Options{Bind: "127.0.0.1:0", RetryInterval: 50 * time.Millisecond, MaxRetries: 2, DrainTimeout: time.Second}
	if tune != nil {
		tune(&o)
	}
	e, err := New(env, o)
	if err != nil {
		t.Fatal(err)
	}
	te.sessions.AddListener("sn", session.Listener{Protocol: "mqttsn", Owner: e})
	te.Engine, te.addr = e, e.Addr().String()
	done := make(chan error, 1)
	go func() { done <- e.Serve(context.Background()) }()
	t.Cleanup(func() {
		b.mu.Lock()
		if b.gate != nil {
			select {
			case <-b.gate:
			default:
				close(b.gate)
			}
		}
		b.mu.Unlock()
		e.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return te
}

// tick advances the engine's clock by d and runs the engine's timed work then,
// as the gateway's driver would.
func (te *testEngine) tick(d time.Duration) {
	te.Tick(te.clock.advance(d))
}

// expire runs the registry's expiry at the engine's clock plus d, as the
// gateway's driver does (the registry then calls the engine's SessionEnded), and
// returns the sessions it lost.
func (te *testEngine) expire(d time.Duration) []*session.Session {
	var lost []*session.Session
	te.sessions.Expire(te.clock.Now().Add(d), func(s *session.Session) { lost = append(lost, s) })
	return lost
}

func (te *testEngine) dropped(reason string) float64 {
	return te.reg.Get("mqttgw_mqttsn_dropped_total", "listener", "sn", "reason", reason)
}

// device is a raw UDP socket talking to the engine.
type device struct {
	t testing.TB
	c *net.UDPConn
}

func (te *testEngine) device(t testing.TB) *device {
	t.Helper()
	ra, _ := net.ResolveUDPAddr("udp", te.addr)
	c, err := net.DialUDP("udp", nil, ra)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &device{t, c}
}

func (d *device) send(m mqttsn.Message) {
	d.t.Helper()
	b, err := mqttsn.Append(nil, m)
	if err != nil {
		d.t.Fatal(err)
	}
	if _, err := d.c.Write(b); err != nil {
		d.t.Fatal(err)
	}
}

func (d *device) tryRecv(wait time.Duration) (mqttsn.Message, bool) {
	d.t.Helper()
	buf := make([]byte, 70000)
	_ = d.c.SetReadDeadline(time.Now().Add(wait))
	n, err := d.c.Read(buf)
	if err != nil {
		return nil, false
	}
	m, err := mqttsn.Decode(buf[:n])
	if err != nil {
		d.t.Fatalf("undecodable answer % x: %v", buf[:n], err)
	}
	return m, true
}

func (d *device) none(wait time.Duration) {
	d.t.Helper()
	if m, ok := d.tryRecv(wait); ok {
		d.t.Fatalf("got %T %+v, want nothing", m, m)
	}
}

func recv[T mqttsn.Message](d *device) T {
	d.t.Helper()
	m, ok := d.tryRecv(5 * time.Second)
	if !ok {
		var zero T
		d.t.Fatalf("no %T within 5s", zero)
	}
	v, ok := m.(T)
	if !ok {
		var zero T
		d.t.Fatalf("got %T %+v, want %T", m, m, zero)
	}
	return v
}

func (d *device) connect(id string, duration uint16, clean bool) {
	d.t.Helper()
	d.send(&mqttsn.Connect{Flags: mqttsn.Flags{CleanSession: clean}, Duration: duration, ClientID: id})
	if ca := recv[*mqttsn.Connack](d); ca.ReturnCode != mqttsn.Accepted {
		d.t.Fatalf("CONNACK %v", ca.ReturnCode)
	}
}

func (d *device) register(name string) uint16 {
	d.t.Helper()
	d.send(&mqttsn.Register{MsgID: 1000, TopicName: name})
	ra := recv[*mqttsn.Regack](d)
	if ra.ReturnCode != mqttsn.Accepted {
		d.t.Fatalf("REGACK %v", ra.ReturnCode)
	}
	return ra.TopicID
}

func (d *device) subscribe(filter string, qos mqttsn.QoS) *mqttsn.Suback {
	d.t.Helper()
	d.send(&mqttsn.Subscribe{Flags: mqttsn.Flags{QoS: qos}, MsgID: 2000, TopicName: filter})
	sa := recv[*mqttsn.Suback](d)
	if sa.ReturnCode != mqttsn.Accepted {
		d.t.Fatalf("SUBACK %v", sa.ReturnCode)
	}
	return sa
}

// waitUntil polls cond for at most 5 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	wait.For(t, 5*time.Second, what, cond)
}
