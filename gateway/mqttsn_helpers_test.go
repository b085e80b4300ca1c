package gateway

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/mqttsn"
)

// snEnv is a real Mosquitto and a gateway with one MQTT-SN listener "sn".
type snEnv struct {
	b    *mosquittotest.Broker
	g    *runningGateway
	addr string // the listener's HOST:PORT
}

// snOpts tune the environment's config.
type snOpts struct {
	listener string // extra [[listener]] keys (before [listener.mqttsn])
	mqttsn   string // extra [listener.mqttsn] keys
	top      string // extra top-level tables, e.g. [[mqttsn.predefined]]
}

// startSN starts Mosquitto and the gateway with short MQTT-SN timers.
func startSN(t *testing.T, o snOpts) *snEnv {
	t.Helper()
	b := startMosquitto(t, false)
	cfg := upstreamTOML(b) + fmt.Sprintf(`
[[listener]]
name = "sn"
type = "mqttsn"
bind = "127.0.0.1:0"
%s
[listener.mqttsn]
retry_interval = "200ms"
max_retries = 3
%s
%s
`, o.listener, o.mqttsn, o.top)
	g := startGateway(t, cfg)
	return &snEnv{b: b, g: g, addr: g.ListenerAddr("sn").String()}
}

// reader subscribes a mosquitto_sub as the broker's "reader" user.
func (env *snEnv) reader(t *testing.T, qos int, topics ...string) *mosquittotest.Sub {
	t.Helper()
	return env.b.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: qos, Topics: topics})
}

// pub publishes on the broker as "reader".
func (env *snEnv) pub(t *testing.T, topic, payload string, qos int, retain bool) {
	t.Helper()
	env.b.Publish(t, mosquittotest.PubOptions{Username: "reader", Password: "reader-secret", Topic: topic, Payload: []byte(payload), QoS: qos, Retain: retain})
}

func (env *snEnv) metric(name string, labels ...string) float64 {
	return env.g.Metrics().Get(name, labels...)
}

func (env *snEnv) dropped(reason string) float64 {
	return env.metric("mqttgw_mqttsn_dropped_total", "listener", "sn", "reason", reason)
}

// snInbox collects the messages an MQTT-SN client receives.
type snInbox struct {
	mu   sync.Mutex
	msgs []snGot
	ch   chan struct{}
}

type snGot struct {
	topic   string
	id      uint16
	idType  mqttsn.TopicIDType
	payload string
	qos     mqttsn.QoS
	retain  bool
}

func newSNInbox() *snInbox { return &snInbox{ch: make(chan struct{}, 1024)} }

func (in *snInbox) on(topic string, id uint16, idType mqttsn.TopicIDType, m *mqttsn.Publish) {
	in.mu.Lock()
	in.msgs = append(in.msgs, snGot{topic, id, idType, string(m.Data), m.Flags.QoS, m.Flags.Retain})
	in.mu.Unlock()
	select {
	case in.ch <- struct{}{}:
	default:
	}
}

func (in *snInbox) list() []snGot {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]snGot(nil), in.msgs...)
}

// wait returns once n messages arrived, failing the test after a bound.
func (in *snInbox) wait(t *testing.T, n int) []snGot {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%d MQTT-SN messages", n), func() bool { return len(in.list()) >= n })
	return in.list()
}

// device dials an MQTT-SN client to the listener, closed by t.Cleanup.
func (env *snEnv) device(t *testing.T, o mqttsn.ClientOptions) *mqttsn.Client {
	t.Helper()
	if o.RetryInterval == 0 {
		o.RetryInterval = 300 * time.Millisecond
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = 5
	}
	c, err := mqttsn.Dial(context.Background(), env.addr, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// connect dials and connects.
func (env *snEnv) connect(t *testing.T, o mqttsn.ClientOptions) *mqttsn.Client {
	t.Helper()
	c := env.device(t, o)
	if err := c.Connect(snCtx(t)); err != nil {
		t.Fatalf("connect %s: %v", o.ClientID, err)
	}
	return c
}

func snCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return c
}

// snRaw is a bare UDP socket talking to the listener, for byte-level tests.
type snRaw struct {
	t *testing.T
	c *net.UDPConn
}

func (env *snEnv) raw(t *testing.T) *snRaw {
	t.Helper()
	ra, err := net.ResolveUDPAddr("udp", env.addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, ra)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &snRaw{t, c}
}

func (r *snRaw) sendBytes(b []byte) {
	r.t.Helper()
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

func (r *snRaw) send(m mqttsn.Message) {
	r.t.Helper()
	b, err := mqttsn.Append(nil, m)
	if err != nil {
		r.t.Fatal(err)
	}
	r.sendBytes(b)
}

// recv returns the next message, failing after d.
func (r *snRaw) recv(d time.Duration) mqttsn.Message {
	r.t.Helper()
	m, ok := r.tryRecv(d)
	if !ok {
		r.t.Fatalf("no datagram from the gateway within %v", d)
	}
	return m
}

func (r *snRaw) tryRecv(d time.Duration) (mqttsn.Message, bool) {
	r.t.Helper()
	buf := make([]byte, 70000)
	_ = r.c.SetReadDeadline(time.Now().Add(d))
	n, err := r.c.Read(buf)
	if err != nil {
		return nil, false
	}
	m, err := mqttsn.Decode(buf[:n])
	if err != nil {
		r.t.Fatalf("gateway sent an undecodable datagram % x: %v", buf[:n], err)
	}
	return m, true
}

// expect receives the next message and checks its type.
func snExpect[T mqttsn.Message](r *snRaw) T {
	r.t.Helper()
	m := r.recv(5 * time.Second)
	v, ok := m.(T)
	if !ok {
		var zero T
		r.t.Fatalf("got %T %+v, want %T", m, m, zero)
	}
	return v
}

// none checks that nothing arrives for d.
func (r *snRaw) none(d time.Duration) {
	r.t.Helper()
	if m, ok := r.tryRecv(d); ok {
		r.t.Fatalf("got %T %+v, want nothing", m, m)
	}
}

// connectRaw runs CONNECT (without will) on a raw socket.
func (r *snRaw) connect(id string, duration uint16, clean bool) {
	r.t.Helper()
	r.send(&mqttsn.Connect{Flags: mqttsn.Flags{CleanSession: clean}, Duration: duration, ClientID: id})
	if ca := snExpect[*mqttsn.Connack](r); ca.ReturnCode != mqttsn.Accepted {
		r.t.Fatalf("CONNACK %v", ca.ReturnCode)
	}
}
