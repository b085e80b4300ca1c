package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/internal/natstest"
	"github.com/mqttgw/mqttgw/mqttsn"
)

// fleet is a NATS JetStream cluster, a Mosquitto and the mqttgw binary,
// whose instances share one [cluster] config but for their ids and ports.
type fleet struct {
	nats   *natstest.Cluster
	broker *mosquittotest.Broker
	bin    string
	name   string // the fleet's, unique per test
	lease  string // owner_lease; "" is 2s
}

func startFleet(t *testing.T) *fleet {
	t.Helper()
	f := &fleet{
		nats: natstest.Start(t, natstest.Options{}),
		broker: mosquittotest.Start(t, mosquittotest.Options{Users: map[string]string{"mqttgw": "gw-secret", "reader": "reader-secret"},
			Extra: "persistence true\npersistence_location " + t.TempDir() + "/\nmax_queued_messages 100000\n"}),
		bin:  buildBinary(t),
		name: "f" + strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()),
	}
	return f
}

// instance is one running mqttgw of the fleet.
type instance struct {
	id      string
	snAddr  string // its MQTT-SN listener
	metrics string // its metrics listener, HOST:PORT
	run     *binaryRun
}

// start runs instance id with its own MQTT-SN port and waits until it
// listens (not for the broker: a test may have stopped it).
func (f *fleet) start(t *testing.T, id string) *instance {
	t.Helper()
	snAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t, "udp"))
	in := f.startWith(t, id, fmt.Sprintf(`
[[listener]]
name = "sn"
type = "mqttsn"
bind = %q
[listener.mqttsn]
retry_interval = "300ms"
`, snAddr))
	in.snAddr = snAddr
	in.run.waitLog(t, "listening")
	return in
}

// startWith runs instance id with the fleet's common config ([gateway],
// [upstream], [cluster], [metrics]) and the TOML of its listeners, rules and
// classes; it does not wait.
func (f *fleet) startWith(t *testing.T, id, listeners string) *instance {
	t.Helper()
	in := &instance{id: id, metrics: fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp"))}
	cfgFile := filepath.Join(t.TempDir(), id+".toml")
	writeTestFile(t, cfgFile, fmt.Sprintf(`
[gateway]
id = %q
[upstream]
url = %q
username = "mqttgw"
password = "gw-secret"
reconnect_min = "100ms"
reconnect_max = "300ms"
[cluster]
nats = [%s]
name = %q
replicas = 3
owner_lease = %q
[metrics]
listen = %q
`, id, f.broker.URL, tomlStrings(f.nats.URLs()), f.name, cmp.Or(f.lease, "2s"), in.metrics)+listeners)
	in.run = startBinary(t, f.bin, "run", "--config", cfgFile)
	return in
}

// tomlStrings is ss as the items of a TOML array.
func tomlStrings(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// metric returns the value of the sample of the metrics page whose name
// and labels are exactly series (`name{a="b"}`), or -1 when there is none.
func (in *instance) metric(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + in.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", series, line, err)
			}
			return f
		}
	}
	return -1
}

// kill9 ends the instance with SIGKILL: nothing more is written.
func (in *instance) kill9(t *testing.T) {
	t.Helper()
	if err := in.run.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	err := <-in.run.exited
	in.run.exited <- err // for the cleanup
	if ws, ok := in.run.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("%s ended with %v, want killed by SIGKILL", in.id, err)
	}
}

// snClient connects an MQTT-SN client with CleanSession false to addr;
// messages it receives go to the returned channel.
func snClient(t *testing.T, addr, id string) (*mqttsn.Client, <-chan string) {
	t.Helper()
	return snClientWith(t, addr, mqttsn.ClientOptions{ClientID: id, Keepalive: time.Minute})
}

// snClientWith is snClient with o (ClientID, Keepalive, Will, and retries:
// 300 ms × 20 unless set); OnMessage is set here.
func snClientWith(t *testing.T, addr string, o mqttsn.ClientOptions) (*mqttsn.Client, <-chan string) {
	t.Helper()
	id := o.ClientID
	got := make(chan string, 100)
	if o.RetryInterval == 0 {
		o.RetryInterval, o.MaxRetries = 300*time.Millisecond, 20
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(15*time.Second, time.Duration(o.MaxRetries+1)*o.RetryInterval))
	defer cancel()
	c, err := mqttsn.Dial(ctx, addr, mqttsn.ClientOptions{ClientID: id, Keepalive: o.Keepalive, Will: o.Will, RetryInterval: o.RetryInterval, MaxRetries: o.MaxRetries,
		OnMessage: func(topic string, _ uint16, _ mqttsn.TopicIDType, m *mqttsn.Publish) {
			select {
			case got <- topic + " " + string(m.Data):
			default:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("%s: CONNECT to %s: %v", id, addr, err)
	}
	return c, got
}

// TestClusterMQTTSNTakeOver: a persistent MQTT-SN session written by
// instance A through the fleet's JetStream store is continued by instance B
// after A is killed (SIGKILL): the topic id registered through A is valid at
// B (PUBACK accepted, the message reaches Mosquitto), and the subscription
// made through A is made again at the broker by B, whose messages reach the
// client through B.
func TestClusterMQTTSNTakeOver(t *testing.T) {
	f := startFleet(t)
	up := f.broker.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1, Topics: []string{"fleet/+/up"}})
	a, b := f.start(t, "gwA"), f.start(t, "gwB")
	a.run.waitLog(t, "connected to broker")
	b.run.waitLog(t, "connected to broker")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	c, _ := snClient(t, a.snAddr, "dev1")
	id, err := c.Register(ctx, "fleet/dev1/up")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Subscribe(ctx, "fleet/dev1/cmd", 1); err != nil {
		t.Fatal(err)
	}
	if err := c.PublishID(ctx, mqttsn.TopicNormal, id, 1, false, []byte("via A")); err != nil {
		t.Fatal(err)
	}
	if m := up.Next(t, 15*time.Second); m.Topic != "fleet/dev1/up" || string(m.Payload) != "via A" {
		t.Fatalf("at the broker: %s %q, want fleet/dev1/up \"via A\"", m.Topic, m.Payload)
	}

	a.kill9(t)
	c.Close()
	c, got := snClient(t, b.snAddr, "dev1")
	if err := c.PublishID(ctx, mqttsn.TopicNormal, id, 1, false, []byte("via B")); err != nil {
		t.Fatalf("PUBLISH at B on the topic id registered at A: %v, want PUBACK accepted", err)
	}
	if m := up.Next(t, 15*time.Second); m.Topic != "fleet/dev1/up" || string(m.Payload) != "via B" {
		t.Fatalf("at the broker: %s %q, want fleet/dev1/up \"via B\"", m.Topic, m.Payload)
	}
	// B makes the subscription again at the broker on its own time: publish
	// until one arrives.
	n := 0
	err = poll(20*time.Second, func() (bool, error) {
		select {
		case m := <-got:
			if !strings.HasPrefix(m, "fleet/dev1/cmd cmd") {
				return false, fmt.Errorf("client got %q", m)
			}
			return true, nil
		case <-time.After(200 * time.Millisecond):
		}
		n++
		f.broker.Publish(t, mosquittotest.PubOptions{Username: "reader", Password: "reader-secret", Topic: "fleet/dev1/cmd", Payload: fmt.Appendf(nil, "cmd%d", n), QoS: 1})
		return false, nil
	})
	if err != nil {
		t.Fatalf("a message on the subscription made through A did not reach the client through B: %v", err)
	}
}

// TestClusterMQTTSNMoveWhileAlive: a client moves from instance A to
// instance B while both run. B takes it over (the owner key); A, watching
// the key, lets it go: its session ends at A as taken over (no will, ever),
// a datagram from the client's old address at A is answered as from an
// unknown client, and A writes nothing of it any more, so what the client
// registered through B is in the record when A later takes the client back
// (B killed).
func TestClusterMQTTSNMoveWhileAlive(t *testing.T) {
	f := startFleet(t)
	up := f.broker.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1, Topics: []string{"fleet/+/up", "fleet/+/b"}})
	wills := f.broker.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1, Topics: []string{"fleet/+/will"}})
	a, b := f.start(t, "gwA"), f.start(t, "gwB")
	a.run.waitLog(t, "connected to broker")
	b.run.waitLog(t, "connected to broker")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// A short keepalive: were the session left at A, A would lose it and
	// publish the will within seconds.
	opts := mqttsn.ClientOptions{ClientID: "dev1", Keepalive: 2 * time.Second, Will: &mqttsn.Will{Topic: "fleet/dev1/will", Payload: []byte("gone"), QoS: 1}}

	atA, _ := snClientWith(t, a.snAddr, opts)
	id1, err := atA.Register(ctx, "fleet/dev1/up")
	if err != nil {
		t.Fatal(err)
	}
	if err := atA.PublishID(ctx, mqttsn.TopicNormal, id1, 1, false, []byte("via A")); err != nil {
		t.Fatal(err)
	}
	up.Expect(t, 15*time.Second, "fleet/dev1/up", "via A")

	// The client reappears at B (a load balancer moved it); A still runs.
	atB, _ := snClientWith(t, b.snAddr, opts)
	if err := atB.PublishID(ctx, mqttsn.TopicNormal, id1, 1, false, []byte("via B")); err != nil {
		t.Fatalf("PUBLISH at B on the topic id registered at A: %v", err)
	}
	up.Expect(t, 15*time.Second, "fleet/dev1/up", "via B")
	const letGo = `mqttgw_mqttsn_clients_let_go_total{listener="sn",reason="taken"}`
	if err := poll(20*time.Second, func() (bool, error) { return a.metric(t, letGo) == 1, nil }); err != nil {
		t.Fatalf("A did not let the client go: %s = %v", letGo, a.metric(t, letGo))
	}
	id2, err := atB.Register(ctx, "fleet/dev1/b")
	if err != nil {
		t.Fatal(err)
	}
	if err := atB.PublishID(ctx, mqttsn.TopicNormal, id2, 1, false, []byte("registered at B")); err != nil {
		t.Fatal(err)
	}
	up.Expect(t, 15*time.Second, "fleet/dev1/b", "registered at B")

	// The old address at A is no client of A's any more.
	pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
	err = atA.PublishID(pctx, mqttsn.TopicNormal, id1, 1, false, []byte("stale at A"))
	pcancel()
	if err == nil {
		t.Fatal("a PUBLISH from the client's old address was accepted by A after B took it over")
	}
	atA.Close()

	// B dies; the client comes back to A, which takes it back from B's
	// record: the registration made at B is there.
	b.kill9(t)
	atB.Close()
	back, _ := snClientWith(t, a.snAddr, opts)
	if err := back.PublishID(ctx, mqttsn.TopicNormal, id2, 1, false, []byte("back at A")); err != nil {
		t.Fatalf("PUBLISH at A on the topic id registered at B: %v, want accepted", err)
	}
	up.Expect(t, 15*time.Second, "fleet/dev1/b", "back at A")
	if n := a.metric(t, `mqttgw_wills_published_total{listener="sn"}`); n > 0 {
		t.Fatalf("A published %v wills", n)
	}
	if m, ok := wills.Poll(t, 200*time.Millisecond); ok {
		t.Fatalf("a will was published: %v", m)
	}
}
