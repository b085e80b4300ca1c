package gateway

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/store"
)

// storeEnv is a Mosquitto with persistence, stopped, that holds a persistent
// QoS 1 session "watch" on st/# and the gateway's status topic, and a gateway
// with a durable store and an MQTT-SN listener "sn", started while the broker
// is away.
type storeEnv struct {
	b     *mosquittotest.Broker
	g     *runningGateway
	addr  string
	watch mosquittotest.SubOptions
}

func startStoreSN(t *testing.T, storeKeys string) *storeEnv {
	t.Helper()
	b := mosquittotest.Start(t, mosquittotest.Options{Users: brokerUser,
		Extra: "persistence true\npersistence_location " + t.TempDir() + "/\nmax_queued_messages 100000\n"})
	watch := mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1,
		Topics: []string{"st/#", "mqttgw/gwtest/status"}, ClientID: "watch-store", CleanSession: false}
	b.Subscribe(t, watch).Close()
	b.Stop()
	cfg := upstreamTOML(b) + fmt.Sprintf(`
[store]
dir = %q
%s
[[listener]]
name = "sn"
type = "mqttsn"
bind = "127.0.0.1:0"
[listener.mqttsn]
retry_interval = "200ms"
max_retries = 3
`, t.TempDir(), storeKeys)
	g := newGateway(t, cfg).start(t)
	return &storeEnv{b: b, g: g, addr: g.ListenerAddr("sn").String(), watch: watch}
}

// snDevice connects an MQTT-SN client to the listener.
func (env *storeEnv) snDevice(t *testing.T, id string) *mqttsn.Client {
	t.Helper()
	c, err := mqttsn.Dial(context.Background(), env.addr, mqttsn.ClientOptions{ClientID: id, CleanSession: true,
		RetryInterval: 500 * time.Millisecond, MaxRetries: 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Connect(snCtx(t)); err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	return c
}

// acked is what the devices were acknowledged: device → payloads, in order.
type acked struct {
	mu   sync.Mutex
	msgs map[string][]string
	n    int
}

func (a *acked) add(topic, payload string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.msgs == nil {
		a.msgs = map[string][]string{}
	}
	a.msgs[topic] = append(a.msgs[topic], payload)
	a.n++
}

// publishAll runs devices MQTT-SN devices, each publishing per QoS 1 messages
// on st/devN one after the other. A message refused with congestion is
// counted and the device goes on with its next one; any other failure fails
// the test. It returns what was acknowledged and how many were refused.
func (env *storeEnv) publishAll(t *testing.T, devices, per int) (*acked, int) {
	t.Helper()
	var (
		a       acked
		wg      sync.WaitGroup
		refused sync.Map
		errs    = make(chan error, devices)
	)
	for d := range devices {
		id := fmt.Sprintf("dev%d", d)
		c := env.snDevice(t, id)
		wg.Go(func() {
			n := 0
			for i := range per {
				topic, payload := "st/"+id, fmt.Sprint(i)
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				err := c.Publish(ctx, topic, mqttsn.QoS1, false, []byte(payload))
				cancel()
				switch {
				case err == nil:
					a.add(topic, payload)
				case snIsCode(err, mqttsn.Congestion):
					n++
				default:
					errs <- fmt.Errorf("%s message %d: %w", id, i, err)
					return
				}
			}
			refused.Store(id, n)
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
	total := 0
	refused.Range(func(_, v any) bool { total += v.(int); return true })
	return &a, total
}

// expectDelivered reads the watch session until every acknowledged message
// arrived and checks that the status topic's online came first and that each
// device's acknowledged messages arrived in order (first arrivals; QoS 1 may
// repeat one).
func (env *storeEnv) expectDelivered(t *testing.T, a *acked) {
	t.Helper()
	sub := env.b.Subscribe(t, env.watch)
	first := sub.Next(t, 10*time.Second)
	if first.Topic != "mqttgw/gwtest/status" || string(first.Payload) != "online" {
		t.Fatalf("first message %v, want the gateway's online", first)
	}
	want := map[string]bool{}
	for topic, ps := range a.msgs {
		for _, p := range ps {
			want[topic+" "+p] = true
		}
	}
	seen := map[string]bool{}
	got := map[string][]string{}
	for missing := len(want); missing > 0; {
		m := sub.Next(t, 10*time.Second)
		key := m.Topic + " " + string(m.Payload)
		if !strings.HasPrefix(m.Topic, "st/") || seen[key] {
			continue
		}
		seen[key] = true
		if want[key] {
			missing--
			got[m.Topic] = append(got[m.Topic], string(m.Payload))
		}
	}
	for topic, ps := range a.msgs {
		if fmt.Sprint(got[topic]) != fmt.Sprint(ps) {
			t.Errorf("%s: acknowledged %v, delivered in the order %v", topic, ps, got[topic])
		}
	}
}

func (env *storeEnv) storeLen() int {
	n, _ := env.g.store.Queue().Len()
	return n
}

// TestStoreMQTTSNBrokerAway: MQTT-SN devices publish QoS 1 while the broker
// is stopped: every message is acknowledged (PUBACK accepted) once the store
// holds it, and every one reaches a subscriber after the broker returns,
// each device's in order, after the gateway's online.
func TestStoreMQTTSNBrokerAway(t *testing.T) {
	env := startStoreSN(t, "")
	const devices, per = 5, 20
	a, refused := env.publishAll(t, devices, per)
	if refused != 0 || a.n != devices*per {
		t.Fatalf("acknowledged %d, refused %d, want all %d acknowledged", a.n, refused, devices*per)
	}
	if n := env.storeLen(); n != devices*per {
		t.Fatalf("store holds %d, want %d", n, devices*per)
	}
	env.b.Restart()
	waitFor(t, 20*time.Second, "the store to be replayed", func() bool { return env.storeLen() == 0 })
	env.g.stop(t)
	env.expectDelivered(t, a)
}

// TestStoreMQTTSNFullCongestion: with a store of 5 messages and the broker
// away, devices get "rejected: congestion" beyond it, counted, and nothing
// acknowledged is lost once the broker returns.
func TestStoreMQTTSNFullCongestion(t *testing.T) {
	env := startStoreSN(t, "max_messages = 5")
	const devices, per = 3, 4
	a, refused := env.publishAll(t, devices, per)
	if a.n != 5 || refused != devices*per-5 {
		t.Fatalf("acknowledged %d, refused %d; want 5 acknowledged (max_messages), %d refused", a.n, refused, devices*per-5)
	}
	if got := env.g.Metrics().Get("mqttgw_store_refused_total", "source", "publish", "reason", "full"); got != float64(refused) {
		t.Errorf("mqttgw_store_refused_total{publish,full} = %v, want %d", got, refused)
	}
	if got := env.g.Metrics().Get("mqttgw_mqttsn_refused_total", "listener", "sn", "reason", "congestion"); got < float64(refused) {
		t.Errorf("mqttgw_mqttsn_refused_total{congestion} = %v, want at least %d", got, refused)
	}
	env.b.Restart()
	waitFor(t, 20*time.Second, "the store to be replayed", func() bool { return env.storeLen() == 0 })
	env.g.stop(t)
	env.expectDelivered(t, a)
}

// TestStoreRefusedAtStart: a store another gateway holds, or a file that is
// not a store, makes New fail with the store's own words; nothing is
// rewritten.
func TestStoreRefusedAtStart(t *testing.T) {
	b := startMosquitto(t, false)
	cfgFor := func(dir string) *config.Config {
		cfg, ps := config.Parse("test.toml", []byte(upstreamTOML(b)+fmt.Sprintf("[store]\ndir = %q\n", dir)))
		if errs := ps.Errors(); len(errs) > 0 {
			t.Fatal(errs)
		}
		return cfg
	}
	t.Run("in use", func(t *testing.T) {
		dir := t.TempDir()
		first, err := New(cfgFor(dir), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer first.start(t).stop(t)
		_, err = New(cfgFor(dir), nil)
		if !errors.Is(err, store.ErrInUse) || !strings.Contains(err.Error(), filepath.Join(dir, store.FileName)) {
			t.Fatalf("second gateway on one store: %v, want ErrInUse naming the file", err)
		}
	})
	t.Run("not a store", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, store.FileName)
		junk := []byte(strings.Repeat("not a bbolt file\n", 1000))
		if err := os.WriteFile(path, junk, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := New(cfgFor(dir), nil)
		if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), path) {
			t.Fatalf("New on a junk file: %v, want ErrCorrupt naming the file", err)
		}
		if b, _ := os.ReadFile(path); string(b) != string(junk) {
			t.Error("the file was changed")
		}
		// The store was not left open: a good directory works after it.
		if g, err := New(cfgFor(t.TempDir()), nil); err != nil {
			t.Fatal(err)
		} else {
			g.start(t).stop(t)
		}
	})
}

// TestStoreRawDatagramsFull: plain datagrams (no acknowledgement) go to the
// store while the broker is away; beyond max_messages they are dropped and
// counted with the reason, never silently; the stored ones are published
// once the broker is back.
func TestStoreRawDatagramsFull(t *testing.T) {
	b := startMosquitto(t, false)
	b.Stop()
	g := newGateway(t, rawConfig(b, "")+fmt.Sprintf("\n[store]\ndir = %q\nmax_messages = 2\n", t.TempDir())).start(t)
	for i := range 4 {
		sendUDP(t, g.Gateway, "sensors", fmt.Appendf(nil, `{"id":"r%d","temp":%d}`, i, i))
	}
	refused := func() float64 {
		return g.Metrics().Get("mqttgw_store_refused_total", "source", "enqueue", "reason", "full")
	}
	waitFor(t, 10*time.Second, "2 datagrams stored and 2 dropped as full", func() bool {
		n, _ := g.store.Queue().Len()
		return n == 2 && refused() == 2
	})
	if got := g.Metrics().Get("mqttgw_upstream_queue_length"); got != 2 {
		t.Errorf("queue_length %v, want the store's 2", got)
	}
	b.Restart()
	waitFor(t, 10*time.Second, "the store to be replayed", func() bool { n, _ := g.store.Queue().Len(); return n == 0 })
	sub := b.Subscribe(t, reader("json/#")) // retained: the two stored ones
	for range 2 {
		if m := sub.Next(t, 5*time.Second); !m.Retain || !strings.HasPrefix(m.Topic, "json/r") {
			t.Errorf("got %v, want a retained json/r*/temp", m)
		}
	}
	sub.None(t, 200*time.Millisecond)
}
