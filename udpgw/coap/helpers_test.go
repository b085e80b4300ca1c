package coap

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// fakeBroker is an in-memory udpgw.Broker for the engine's unit tests; the
// gateway's end-to-end tests use a real Mosquitto instead.
type fakeBroker struct {
	mu       sync.Mutex
	subs     map[[2]string]func(udpgw.Message) // device, filter
	retained map[string]udpgw.Message
	pubs     []udpgw.Message
	pubErr   error
	pubDelay time.Duration
	unsubs   int
}

func newFakeBroker() *fakeBroker {
	return &fakeBroker{subs: map[[2]string]func(udpgw.Message){}, retained: map[string]udpgw.Message{}}
}

func (b *fakeBroker) Publish(ctx context.Context, device string, m udpgw.Message) error {
	b.mu.Lock()
	err, delay := b.pubErr, b.pubDelay
	b.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err != nil {
		return err
	}
	if strings.ContainsAny(m.Topic, "+#") {
		return udpgw.ErrBadTopic
	}
	b.mu.Lock()
	b.pubs = append(b.pubs, m)
	b.retained[m.Topic] = m
	b.mu.Unlock()
	b.deliver(m)
	return nil
}

// deliver sends m to every matching subscription, once per device, as the
// gateway's hub does.
func (b *fakeBroker) deliver(m udpgw.Message) {
	b.mu.Lock()
	seen := map[string]bool{}
	var fs []func(udpgw.Message)
	for k, f := range b.subs {
		if udpgw.MatchTopic(k[1], m.Topic) && !seen[k[0]] {
			seen[k[0]] = true
			fs = append(fs, f)
		}
	}
	b.mu.Unlock()
	for _, f := range fs {
		f(m)
	}
}

func (b *fakeBroker) HasTopicRule(topic string) bool { return strings.HasPrefix(topic, "rule/") }

func (b *fakeBroker) BrokerTopic(device, topic string) (string, error) { return topic, nil }

func (b *fakeBroker) Subscribe(ctx context.Context, device, filter string, qos byte, deliver func(udpgw.Message)) (byte, error) {
	b.mu.Lock()
	b.subs[[2]string{device, filter}] = deliver
	r, ok := b.retained[filter]
	b.mu.Unlock()
	if ok && r.Retain {
		deliver(r)
	}
	return qos, nil
}

func (b *fakeBroker) Unsubscribe(ctx context.Context, device, filter string) error {
	b.mu.Lock()
	delete(b.subs, [2]string{device, filter})
	b.unsubs++
	b.mu.Unlock()
	return nil
}

func (b *fakeBroker) UnsubscribeAll(device string) {
	b.mu.Lock()
	for k := range b.subs {
		if k[0] == device {
			delete(b.subs, k)
		}
	}
	b.mu.Unlock()
}

func (b *fakeBroker) Retained(ctx context.Context, topic string) (udpgw.Message, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	m, ok := b.retained[topic]
	return m, ok, nil
}

func (b *fakeBroker) setRetained(m udpgw.Message) {
	b.mu.Lock()
	b.retained[m.Topic] = m
	b.mu.Unlock()
}

func (b *fakeBroker) subscriptions() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

func (b *fakeBroker) published() []udpgw.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]udpgw.Message(nil), b.pubs...)
}

// testMetrics records counters by name and labels.
type testMetrics struct {
	mu sync.Mutex
	c  map[string]*testCounter
}

type testCounter struct {
	mu sync.Mutex
	n  int
}

func (c *testCounter) Inc() { c.mu.Lock(); c.n++; c.mu.Unlock() }

func (m *testMetrics) Counter(name, help string, labels ...string) Counter {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.c == nil {
		m.c = map[string]*testCounter{}
	}
	k := name + "{" + strings.Join(labels, ",") + "}"
	if m.c[k] == nil {
		m.c[k] = &testCounter{}
	}
	return m.c[k]
}

func (m *testMetrics) GaugeFunc(string, string, func() float64, ...string) {}

// get returns the counter name with labels (key, value pairs after "listener").
func (m *testMetrics) get(name string, labels ...string) int {
	m.mu.Lock()
	c := m.c[name+"{"+strings.Join(append([]string{"listener", "test"}, labels...), ",")+"}"]
	m.mu.Unlock()
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

type testListener struct {
	*Listener
	broker  *fakeBroker
	metrics *testMetrics
	addr    string
}

// startListener starts a plain CoAP listener on 127.0.0.1:0 with a fake broker;
// cleanup closes it and checks Serve returned.
func startListener(t testing.TB, opts Options) *testListener {
	t.Helper()
	fb := newFakeBroker()
	tm := &testMetrics{}
	opts.Name = "test"
	if opts.Bind == "" {
		opts.Bind = "127.0.0.1:0"
	}
	if opts.Broker == nil {
		opts.Broker = fb
	}
	opts.Sessions = session.NewTable()
	opts.Metrics = tm
	opts.AllowAnonymous = opts.AllowAnonymous || opts.CheckPassword == nil && opts.DTLS == nil && !denyAnonymous[t.Name()]
	if opts.Logger == nil {
		opts.Logger = zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	}
	l, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Serve(context.Background()) }()
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after Close")
		}
	})
	return &testListener{Listener: l, broker: fb, metrics: tm, addr: l.Addr().String()}
}

// denyAnonymous lists tests whose listener refuses anonymous requests.
var denyAnonymous = map[string]bool{}

// waitFor polls cond until it holds or the bound passes.
func waitFor(t *testing.T, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", bound, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
