package coap

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/mqttgw/mqttgw/internal/wait"
	"github.com/mqttgw/mqttgw/metrics"
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

func (b *fakeBroker) Retained(ctx context.Context, _, topic string) (udpgw.Message, bool, error) {
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

type testListener struct {
	*Listener
	broker  *fakeBroker
	metrics *metrics.Registry
	addr    string
}

// counter returns the listener's counter name with labels (key, value pairs
// after "listener").
func (tl *testListener) counter(name string, labels ...string) int {
	return int(tl.metrics.Get(name, append([]string{"listener", "test"}, labels...)...))
}

// startListener starts a plain CoAP listener named "test" on 127.0.0.1:0, as
// the gateway builds one: from env (a fake broker, a fresh registry and
// metrics, a test logger where env leaves them unset) and opts, declared to the
// registry with its default keepalive and as the owner of its sessions. Cleanup
// closes it and checks Serve returned.
func startListener(t testing.TB, env udpgw.Env, opts Options) *testListener {
	t.Helper()
	fb := newFakeBroker()
	env.Name = "test"
	if env.Broker == nil {
		env.Broker = fb
	}
	if env.Sessions == nil {
		env.Sessions = session.New(session.Options{})
	}
	if env.Metrics == nil {
		env.Metrics = metrics.New()
	}
	if env.Logger == nil {
		env.Logger = zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	}
	if opts.Bind == "" {
		opts.Bind = "127.0.0.1:0"
	}
	opts.AllowAnonymous = opts.AllowAnonymous || opts.CheckPassword == nil && opts.DTLS == nil && !denyAnonymous[t.Name()]
	l, err := New(env, opts)
	if err != nil {
		t.Fatal(err)
	}
	protocol := "coap"
	if opts.DTLS != nil {
		protocol = "coaps"
	}
	env.Sessions.AddListener(env.Name, session.Listener{Protocol: protocol, Keepalive: l.opts.Keepalive, Owner: l})
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
	return &testListener{Listener: l, broker: fb, metrics: env.Metrics, addr: l.Addr().String()}
}

// denyAnonymous lists tests whose listener refuses anonymous requests.
var denyAnonymous = map[string]bool{}

// waitFor polls cond until it holds, failing the test after bound.
var waitFor = wait.For
