package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/metrics"
)

func TestDequeOrderAndGrowth(t *testing.T) {
	var d deque
	for i := range 40 {
		d.pushBack(Message{Topic: fmt.Sprint(i)})
	}
	d.pushFront(Message{Topic: "first"})
	want := append([]string{"first"}, func() (s []string) {
		for i := range 40 {
			s = append(s, fmt.Sprint(i))
		}
		return
	}()...)
	for _, w := range want {
		m, ok := d.front()
		if !ok || m.Topic != w {
			t.Fatalf("front = %q %v, want %q", m.Topic, ok, w)
		}
		d.popFront()
	}
	if d.len() != 0 {
		t.Fatalf("len %d after draining", d.len())
	}
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestQueueDropsOldestWhenFull(t *testing.T) {
	reg := metrics.New()
	p, err := New(Options{URL: "tcp://" + freeAddr(t), ClientID: "t", QueueSize: 3, Metrics: reg, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := p.Enqueue(Message{Topic: fmt.Sprint(i), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if got := reg.Get("mqttgw_upstream_queue_dropped_total"); got != 2 {
		t.Errorf("dropped %v, want 2", got)
	}
	if m, _ := p.queue.front(); m.Topic != "2" {
		t.Errorf("oldest kept is %q, want \"2\" (0 and 1 dropped)", m.Topic)
	}
}

// TestQueueBoundedInBytes: big messages are bounded by bytes, not by count:
// the oldest go first until the newest fits.
func TestQueueBoundedInBytes(t *testing.T) {
	reg := metrics.New()
	p, err := New(Options{URL: "tcp://" + freeAddr(t), ClientID: "t", QueueBytes: 10_000, Metrics: reg, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 3000)
	for i := range 5 {
		if err := p.Enqueue(Message{Topic: fmt.Sprint(i), Payload: big, QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if got := reg.Get("mqttgw_upstream_queue_dropped_total"); got != 2 {
		t.Errorf("dropped %v, want 2", got)
	}
	if got := reg.Get("mqttgw_upstream_queue_bytes"); got != 3*3001 {
		t.Errorf("queue bytes %v, want %d", got, 3*3001)
	}
	if m, _ := p.queue.front(); m.Topic != "2" {
		t.Errorf("oldest kept is %q, want \"2\"", m.Topic)
	}
}

func TestPublishWithoutBrokerIsUnavailable(t *testing.T) {
	reg := metrics.New()
	p, err := New(Options{URL: "tcp://" + freeAddr(t), ClientID: "t", Metrics: reg, Logger: zaptest.NewLogger(t), ConnectTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	err = p.Publish(context.Background(), Message{Topic: "a", QoS: 1})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Publish = %v, want ErrUnavailable", err)
	}
	if reg.Get("mqttgw_upstream_unavailable_total") != 1 {
		t.Error("unavailable not counted")
	}
}

// TestQueuedBeforeBrokerExists: messages accepted while the broker has never been
// reachable are delivered, in order, once it comes up.
func TestQueuedBeforeBrokerExists(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{Users: map[string]string{"gw": "pw"},
		Extra: "persistence true\npersistence_location " + t.TempDir() + "/"})
	// A persistent subscriber session, so it receives what arrives while it is away.
	watch := mosquittotest.SubOptions{Username: "gw", Password: "pw", QoS: 1, Topics: []string{"q/#"}, ClientID: "watch", CleanSession: false}
	b.Subscribe(t, watch).Close()
	b.Stop()

	p, err := New(Options{URL: b.URL, ClientID: "t", Username: "gw", Password: "pw", ReconnectMin: 100 * time.Millisecond, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		p.Enqueue(Message{Topic: "q/x", Payload: []byte(fmt.Sprint(i)), QoS: 1})
	}
	b.Restart()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil { // drains the queue
		t.Fatal(err)
	}
	if n := p.m.published.Value(); n != 20 {
		t.Fatalf("broker acknowledged %d of 20 queued messages", n)
	}
	sub := b.Subscribe(t, watch)
	for i := range 20 {
		sub.Expect(t, 5*time.Second, "q/x", fmt.Sprint(i))
	}
}

// TestQoS0BurstNotQueued (issue 11): while the broker is connected, a burst
// of QoS 0 messages from Enqueue (plain datagrams) goes to the connection,
// not through the drop-oldest queue: none is dropped there however small
// the queue, and each is published.
func TestQoS0BurstNotQueued(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{Users: map[string]string{"gw": "pw"}})
	reg := metrics.New()
	p := startDurable(t, Options{URL: b.URL, ClientID: "burst0", Username: "gw", Password: "pw", QueueSize: 10, Metrics: reg}, nil)
	waitFor(t, 10*time.Second, "the proxy to connect", p.online)
	const burst = 5000
	for i := range burst {
		if err := p.Enqueue(Message{Topic: "q0/burst", Payload: fmt.Appendf(nil, "%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := reg.Get("mqttgw_upstream_queue_dropped_total"); got != 0 {
		t.Errorf("%v QoS 0 messages dropped by the queue while the broker was connected", got)
	}
	waitFor(t, 10*time.Second, "every message published", func() bool { return reg.Get("mqttgw_upstream_published_total") >= burst })
}
