package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/metrics"
	"github.com/mqttgw/mqttgw/store"
)

// openStore opens a store in dir, closed when the test ends (after the proxies
// registered later are closed: cleanups run last first).
func openStore(t testing.TB, dir string, o store.Options) *store.Bolt {
	t.Helper()
	st, err := store.Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// startDurable starts a proxy on the queue q, closed when the test ends.
func startDurable(t testing.TB, o Options, q store.Queue) *Proxy {
	t.Helper()
	o.Store = q
	if o.Logger == nil {
		o.Logger = zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	}
	if o.ClientID == "" {
		o.ClientID = "durable"
	}
	o.ReconnectMin = 50 * time.Millisecond
	o.ReconnectMax = 200 * time.Millisecond
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Close(ctx)
	})
	return p
}

func storeEmpty(q store.Queue) func() bool {
	return func() bool { n, _ := q.Len(); return n == 0 }
}

// persistentBroker is a Mosquitto with persistence and a persistent QoS 1
// session "watch" on q/# and the status topic, made before it is stopped: a
// watcher that reads, later, everything the broker took meanwhile.
type persistentBroker struct {
	*mosquittotest.Broker
	watch mosquittotest.SubOptions
}

func startPersistent(t *testing.T) *persistentBroker {
	t.Helper()
	b := mosquittotest.Start(t, mosquittotest.Options{Users: map[string]string{"gw": "pw"},
		Extra: "persistence true\npersistence_location " + t.TempDir() + "/\nmax_queued_messages 100000\n"})
	pb := &persistentBroker{b, mosquittotest.SubOptions{Username: "gw", Password: "pw", QoS: 1,
		Topics: []string{"q/#", "gw/status"}, ClientID: "watch", CleanSession: false}}
	b.Subscribe(t, pb.watch).Close()
	return pb
}

// read reads n messages on q/# from the watch session (after the status
// topic's "online", which must come first), and returns the payloads of each
// topic in arrival order, duplicates removed (QoS 1 allows them).
func (pb *persistentBroker) read(t *testing.T, n int) map[string][]string {
	t.Helper()
	sub := pb.Subscribe(t, pb.watch)
	first := sub.Next(t, 10*time.Second)
	if first.Topic != "gw/status" || string(first.Payload) != "online" {
		t.Fatalf("first message %v, want the status topic's online", first)
	}
	seen := map[string]bool{}
	got := map[string][]string{}
	for len(seen) < n {
		m := sub.Next(t, 10*time.Second)
		if m.Topic == "gw/status" {
			continue
		}
		key := m.Topic + " " + string(m.Payload)
		if seen[key] {
			continue
		}
		seen[key] = true
		got[m.Topic] = append(got[m.Topic], string(m.Payload))
	}
	return got
}

// checkOrder checks that every device's messages 0..per-1 arrived, in order.
func checkOrder(t *testing.T, got map[string][]string, devices, per int) {
	t.Helper()
	for d := range devices {
		topic := fmt.Sprintf("q/dev%d", d)
		if len(got[topic]) != per {
			t.Errorf("%s: got %d messages, want %d: %v", topic, len(got[topic]), per, got[topic])
			continue
		}
		for i, p := range got[topic] {
			if p != fmt.Sprint(i) {
				t.Errorf("%s: message %d is %q, want %d (order lost): %v", topic, i, p, i, got[topic])
				break
			}
		}
	}
}

// publishDevices publishes per QoS 1 messages from each of devices devices at
// once, each device's one after the other as a device does (it waits for its
// acknowledgement), and fails the test on any error.
func publishDevices(t *testing.T, p *Proxy, devices, per int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, devices)
	for d := range devices {
		wg.Go(func() {
			for i := range per {
				m := Message{Topic: fmt.Sprintf("q/dev%d", d), Payload: []byte(fmt.Sprint(i)), QoS: 1, Listener: "sn", Device: fmt.Sprintf("dev%d", d)}
				if err := p.Publish(context.Background(), m); err != nil {
					errs <- fmt.Errorf("device %d message %d: %w", d, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
}

// TestDurablePublishWhileBrokerAway: with the broker stopped, QoS 1 Publish
// returns nil once the store holds the message; once the broker is back, the
// status topic's online comes first, then every message, each device's in
// order, and the store ends empty.
func TestDurablePublishWhileBrokerAway(t *testing.T) {
	b := startPersistent(t)
	b.Stop()
	reg := metrics.New()
	st := openStore(t, t.TempDir(), store.Options{})
	p := startDurable(t, Options{URL: b.URL, Username: "gw", Password: "pw", StatusTopic: "gw/status", Metrics: reg}, st.Queue())

	const devices, per = 8, 25
	publishDevices(t, p, devices, per)
	if n, _ := st.Queue().Len(); n != devices*per {
		t.Fatalf("store holds %d messages, want %d", n, devices*per)
	}
	if got := reg.Get("mqttgw_upstream_stored_total"); got != devices*per {
		t.Errorf("stored_total %v, want %d", got, devices*per)
	}
	if got := reg.Get("mqttgw_upstream_queue_length"); got != devices*per {
		t.Errorf("queue_length %v, want %d (the store's)", got, devices*per)
	}

	b.Restart()
	waitFor(t, 20*time.Second, "the store to be replayed", storeEmpty(st.Queue()))
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkOrder(t, b.read(t, devices*per), devices, per)
}

// TestDurableDirectWhileConnected: with the broker there and the store
// empty, Publish waits for the broker's acknowledgement and writes nothing to
// the store.
func TestDurableDirectWhileConnected(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{Users: map[string]string{"gw": "pw"}})
	reg := metrics.New()
	st := openStore(t, t.TempDir(), store.Options{NoSync: true})
	p := startDurable(t, Options{URL: b.URL, Username: "gw", Password: "pw", Metrics: reg}, st.Queue())
	waitFor(t, 10*time.Second, "connected", p.Connected)
	sub := b.Subscribe(t, mosquittotest.SubOptions{Username: "gw", Password: "pw", QoS: 1, Topics: []string{"d/#"}})
	if err := p.Publish(context.Background(), Message{Topic: "d/1", Payload: []byte("x"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	sub.Expect(t, 5*time.Second, "d/1", "x")
	if got := reg.Get("mqttgw_upstream_stored_total"); got != 0 {
		t.Errorf("stored_total %v, want 0: the broker took it", got)
	}
	if got := reg.Get("mqttgw_upstream_published_total"); got != 1 {
		t.Errorf("published_total %v, want 1", got)
	}
}

// TestDurableStoreFull: a full store refuses with ErrUnavailable (the
// device's congestion answer) wrapping store.ErrFull, counted; Enqueue's
// messages beyond it are dropped and counted; what was taken stays.
func TestDurableStoreFull(t *testing.T) {
	reg := metrics.New()
	st := openStore(t, t.TempDir(), store.Options{NoSync: true, MaxMessages: 3})
	p := startDurable(t, Options{URL: "tcp://" + freeAddr(t), Metrics: reg, ConnectTimeout: 200 * time.Millisecond}, st.Queue())
	for i := range 3 {
		if err := p.Publish(context.Background(), Message{Topic: "q/a", Payload: []byte(fmt.Sprint(i)), QoS: 1}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	err := p.Publish(context.Background(), Message{Topic: "q/a", Payload: []byte("3"), QoS: 1})
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, store.ErrFull) {
		t.Fatalf("publish beyond max_messages: %v, want ErrUnavailable and store.ErrFull", err)
	}
	if got := reg.Get("mqttgw_store_refused_total", "source", "publish", "reason", "full"); got != 1 {
		t.Errorf("refused{publish,full} = %v, want 1", got)
	}
	if err := p.Enqueue(Message{Topic: "q/b", QoS: 1}); err != nil {
		t.Fatalf("Enqueue: %v (it drops later, counted)", err)
	}
	waitFor(t, 5*time.Second, "the enqueued message to be dropped and counted", func() bool {
		return reg.Get("mqttgw_store_refused_total", "source", "enqueue", "reason", "full") == 1
	})
	if n, _ := st.Queue().Len(); n != 3 {
		t.Errorf("store holds %d, want the 3 it took", n)
	}
	// QoS 0 does not go to the store: with the broker away it is refused as before.
	if err := p.Publish(context.Background(), Message{Topic: "q/a", QoS: 0}); !errors.Is(err, ErrUnavailable) || errors.Is(err, store.ErrFull) {
		t.Errorf("QoS 0 publish: %v, want ErrUnavailable without a store error", err)
	}
}

// TestDurableStoreTooLarge: a message larger than max_bytes can never be
// stored: ErrUnavailable wrapping store.ErrTooLarge, counted.
func TestDurableStoreTooLarge(t *testing.T) {
	reg := metrics.New()
	st := openStore(t, t.TempDir(), store.Options{NoSync: true, MaxBytes: 1000})
	p := startDurable(t, Options{URL: "tcp://" + freeAddr(t), Metrics: reg, ConnectTimeout: 200 * time.Millisecond}, st.Queue())
	err := p.Publish(context.Background(), Message{Topic: "q/a", Payload: make([]byte, 2000), QoS: 1})
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("publish: %v, want ErrUnavailable and store.ErrTooLarge", err)
	}
	if got := reg.Get("mqttgw_store_refused_total", "source", "publish", "reason", "too_large"); got != 1 {
		t.Errorf("refused{publish,too_large} = %v, want 1", got)
	}
}

// TestDurableReplayAfterRestart: messages taken while the broker was away
// (published and enqueued) stay in the store when the proxy closes — none
// counted as dropped — and a new proxy on the same store directory replays
// them, in order, once the broker is back.
func TestDurableReplayAfterRestart(t *testing.T) {
	b := startPersistent(t)
	b.Stop()
	dir := t.TempDir()
	reg := metrics.New()
	core, logs := observer.New(zap.InfoLevel)
	st := openStore(t, dir, store.Options{})
	p := startDurable(t, Options{URL: b.URL, Username: "gw", Password: "pw", StatusTopic: "gw/status", Metrics: reg, Logger: zap.New(core)}, st.Queue())
	const devices, per = 4, 10
	publishDevices(t, p, devices, per)
	for i := range per { // a plain-datagram device, through the spool
		if err := p.Enqueue(Message{Topic: "q/raw", Payload: []byte(fmt.Sprint(i)), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := reg.Get("mqttgw_upstream_queue_dropped_total"); got != 0 {
		t.Errorf("dropped_total %v at shutdown, want 0: the store keeps them", got)
	}
	if n, _ := st.Queue().Len(); n != devices*per+per {
		t.Fatalf("store holds %d after Close, want %d", n, devices*per+per)
	}
	if logs.FilterMessageSnippet("stay in the durable store").Len() != 1 {
		t.Errorf("Close did not log what stays in the store: %v", logs.All())
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st2 := openStore(t, dir, store.Options{})
	b.Restart()
	p2 := startDurable(t, Options{URL: b.URL, Username: "gw", Password: "pw", StatusTopic: "gw/status", ClientID: "durable2"}, st2.Queue())
	waitFor(t, 20*time.Second, "the store to be replayed", storeEmpty(st2.Queue()))
	if err := p2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := b.read(t, devices*per+per)
	checkOrder(t, got, devices, per)
	got["q/dev0"] = got["q/raw"]
	checkOrder(t, got, 1, per)
}

// TestDurableFailedPublishRetried: publishes whose acknowledgements do not
// come (a relay holds everything the broker sends) time out; they are kept in
// the store and sent again, never skipped, and all arrive once the broker's
// answers flow again.
func TestDurableFailedPublishRetried(t *testing.T) {
	b := startPersistent(t)
	relay := startHoldRelay(t, b.Addr)
	reg := metrics.New()
	st := openStore(t, t.TempDir(), store.Options{NoSync: true})
	p := startDurable(t, Options{URL: "tcp://" + relay.addr, Username: "gw", Password: "pw", StatusTopic: "gw/status",
		Metrics: reg, PublishTimeout: 300 * time.Millisecond, Keepalive: time.Minute}, st.Queue())
	waitFor(t, 10*time.Second, "connected", p.Connected)
	relay.hold(true)
	const devices, per = 3, 5
	publishDevices(t, p, devices, per) // not acknowledged in time: the store takes them
	waitFor(t, 10*time.Second, "a replayed publish to fail and be retried", func() bool {
		return reg.Get("mqttgw_upstream_queue_retried_total") > 0
	})
	if n, _ := st.Queue().Len(); n != devices*per {
		t.Fatalf("store holds %d while the broker does not answer, want %d", n, devices*per)
	}
	relay.hold(false)
	waitFor(t, 20*time.Second, "the store to be replayed", storeEmpty(st.Queue()))
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkOrder(t, b.read(t, devices*per), devices, per)
}

// holdRelay is a TCP relay to the broker that can hold back what the broker
// sends (PUBACKs included), without closing anything.
type holdRelay struct {
	addr string
	mu   sync.Mutex
	cond *sync.Cond
	held bool
}

func startHoldRelay(t *testing.T, broker string) *holdRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &holdRelay{addr: ln.Addr().String()}
	r.cond = sync.NewCond(&r.mu)
	var wg sync.WaitGroup
	var conns []net.Conn
	var connsMu sync.Mutex
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", broker)
			if err != nil {
				c.Close()
				continue
			}
			connsMu.Lock()
			conns = append(conns, c, up)
			connsMu.Unlock()
			wg.Go(func() { io.Copy(up, c); up.Close() })
			wg.Go(func() { r.copyHeld(c, up); c.Close() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		r.hold(false)
		connsMu.Lock()
		for _, c := range conns {
			c.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	})
	return r
}

func (r *holdRelay) hold(on bool) {
	r.mu.Lock()
	r.held = on
	r.mu.Unlock()
	r.cond.Broadcast()
}

// copyHeld copies src to dst, waiting before each write while held.
func (r *holdRelay) copyHeld(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			for r.held {
				r.cond.Wait()
			}
			r.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestDurableQueueGauges: the queue gauges show the store's messages and
// record bytes.
func TestDurableQueueGauges(t *testing.T) {
	reg := metrics.New()
	st := openStore(t, t.TempDir(), store.Options{NoSync: true})
	p := startDurable(t, Options{URL: "tcp://" + freeAddr(t), Metrics: reg, ConnectTimeout: 200 * time.Millisecond}, st.Queue())
	for i := range 4 {
		if err := p.Publish(context.Background(), Message{Topic: "q/a", Payload: []byte(strings.Repeat("x", 100)), QoS: 1}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	_, bytes := st.Queue().Len()
	if got := reg.Get("mqttgw_upstream_queue_length"); got != 4 {
		t.Errorf("queue_length %v, want 4", got)
	}
	if got := reg.Get("mqttgw_upstream_queue_bytes"); got != float64(bytes) {
		t.Errorf("queue_bytes %v, want the store's %d", got, bytes)
	}
}

// TestDurableAcrossReconnect: the broker goes away after the proxy connected
// (paho's own reconnect, not the first connection): Publish falls back to the
// store, and the store is replayed after the reconnect.
func TestDurableAcrossReconnect(t *testing.T) {
	b := startPersistent(t)
	st := openStore(t, t.TempDir(), store.Options{NoSync: true})
	p := startDurable(t, Options{URL: b.URL, Username: "gw", Password: "pw", StatusTopic: "gw/status", PublishTimeout: time.Second}, st.Queue())
	waitFor(t, 10*time.Second, "connected", p.Connected)
	b.Stop()
	waitFor(t, 10*time.Second, "the loss to be noticed", func() bool { return !p.Connected() })
	const devices, per = 4, 10
	publishDevices(t, p, devices, per)
	b.Restart()
	waitFor(t, 20*time.Second, "the store to be replayed", storeEmpty(st.Queue()))
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := b.read(t, devices*per)
	checkOrder(t, got, devices, per)
}
