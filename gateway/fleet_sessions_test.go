package gateway

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/internal/natstest"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/store/natsstore"
)

// fleetKeepalive is the classes' keepalive in the fleet tests: longer than
// keepaliveTest, so that a device's move between instances (a take, a watch,
// a write, each a few round trips to a three-node cluster) never takes a
// session's 1.5 keepalives on a loaded machine.
const fleetKeepalive = 2 * time.Second

// fleetEnv is a three-node NATS cluster, a Mosquitto, and gateways of one
// fleet, each with a plain-UDP listener "sensors" (class meters: k*) and a
// CoAP listener "coap" (class coapers: cdev*), both with a birth and a will
// on devices/{device}/status.
type fleetEnv struct {
	nats *natstest.Cluster
	b    *mosquittotest.Broker
	name string
}

func startFleetEnv(t *testing.T) *fleetEnv {
	t.Helper()
	mosquittotest.RequireTools(t, "mosquitto_sub")
	return &fleetEnv{nats: natstest.Start(t, natstest.Options{}), b: startMosquitto(t, false),
		name: "f" + strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())}
}

// gateway starts instance id of the fleet and waits until it is connected to
// the broker.
func (env *fleetEnv) gateway(t *testing.T, id string) *runningGateway {
	t.Helper()
	urls := make([]string, 0, 3)
	for _, u := range env.nats.URLs() {
		urls = append(urls, fmt.Sprintf("%q", u))
	}
	cfg := replaceOnce(t, upstreamTOML(env.b), `id = "gwtest"`, fmt.Sprintf("id = %q", id)) + fmt.Sprintf(`
[cluster]
nats = [%s]
name = %q
replicas = 3
owner_lease = "2s"

[[listener]]
name = "sensors"
type = "udp"
bind = "127.0.0.1:0"

[[rule]]
name = "json"
listener = "sensors"
match = { json = true }
device = { json = "/id" }
fields.temp = { json = "/temp" }
[[rule.publish]]
topic = "json/{device}/temp"
template = "{temp}"
qos = 1

[[listener]]
name = "coap"
type = "coap"
bind = "127.0.0.1:%s"
`, strings.Join(urls, ", "), env.name, freeUDPPort(t)) + fleetClass("meters", "k*", "sensors") + fleetClass("coapers", "cdev*", "coap") + metricsTOML
	return startGateway(t, cfg)
}

// fleetClass is classTOML with fleetKeepalive.
func fleetClass(name, match, listener string) string {
	return fmt.Sprintf(`
[[class]]
name = %q
listeners = [%q]
match = %q
keepalive = %q
will  = { topic = "devices/{device}/status", payload = "offline {class}", qos = 1, retain = false }
birth = { topic = "devices/{device}/status", payload = "online {class}",  qos = 1, retain = false }
`, name, listener, match, fleetKeepalive)
}

// fleetDevice is one plain-UDP device (k1) and one CoAP device (cdev1), each
// with a socket per instance, which send together.
type fleetDevice struct {
	t    *testing.T
	raw  map[*runningGateway]*udpDevice
	coap map[*runningGateway]*coapPeer
	mid  uint16
}

// send makes both devices send once to g, the CoAP one a confirmable PUT
// answered once the broker has it.
func (d *fleetDevice) send(g *runningGateway) time.Time {
	d.t.Helper()
	if d.raw[g] == nil {
		d.raw[g] = newUDPDevice(d.t, g.Gateway, "sensors")
		d.coap[g] = dialCoAP(d.t, g.ListenerAddr("coap").String())
	}
	at := d.raw[g].send(fmt.Sprintf(`{"id":"k1","temp":%d}`, d.mid))
	d.mid++
	r := d.coap[g].do(coapRequest(coapCON, codePUT, d.mid, fmt.Sprintf("t%d", d.mid), "/ps/cdev/t?c=cdev1", []byte("1")))
	if codeStr(r.code) != "2.04" {
		d.t.Fatalf("CoAP PUT: %s, want 2.04", codeStr(r.code))
	}
	return at
}

// fleetCount is one of a gateway's per-listener counters.
func fleetCount(g *runningGateway, name, listener string, labels ...string) float64 {
	return g.metrics.Get(name, append([]string{"listener", listener}, labels...)...)
}

// waitCount waits until every listener's counter reached want.
func waitCount(t *testing.T, g *runningGateway, want float64, name string, labels ...string) {
	t.Helper()
	for _, l := range []string{"sensors", "coap"} {
		waitFor(t, 15*time.Second, fmt.Sprintf("%s %v of %s = %v", name, labels, l, want), func() bool {
			return fleetCount(g, name, l, labels...) >= want
		})
	}
}

// TestFleetSessionsMove: a plain-UDP and a CoAP device talk to instance A,
// then B, then A again, within their keepalive: each keeps one session, one
// birth, no will; the instance left lets the session go. Once they stop,
// their will comes once, from A, the last owner, after 1.5 keepalives.
func TestFleetSessionsMove(t *testing.T) {
	env := startFleetEnv(t)
	a, b := env.gateway(t, "gwA"), env.gateway(t, "gwB")
	subs := map[string]*mosquittotest.Sub{}
	for _, dev := range []string{"k1", "cdev1"} {
		subs[dev] = env.b.Subscribe(t, reader("devices/"+dev+"/#"))
	}
	class := map[string]string{"k1": "meters", "cdev1": "coapers"}
	d := &fleetDevice{t: t, raw: map[*runningGateway]*udpDevice{}, coap: map[*runningGateway]*coapPeer{}}

	d.send(a)
	for dev, sub := range subs {
		sub.Expect(t, 10*time.Second, "devices/"+dev+"/status", "online "+class[dev])
	}
	waitCount(t, a, 1, "mqttgw_fleet_session_loads_total", "result", "new")
	waitFor(t, 15*time.Second, "A's records written", func() bool {
		return a.metrics.Get("mqttgw_session_writes_total", "result", "put") >= 2
	})
	first := devicesOf(t, a.Gateway, "")

	d.send(b)
	waitCount(t, b, 1, "mqttgw_fleet_session_loads_total", "result", "continued")
	waitCount(t, a, 1, "mqttgw_fleet_sessions_let_go_total", "reason", "taken")
	waitFor(t, 15*time.Second, "B's records written", func() bool {
		return b.metrics.Get("mqttgw_session_writes_total", "result", "put") >= 2
	})
	if n := liveSessions(a.Gateway); n != 0 {
		t.Errorf("A holds %d live sessions after B took the devices; want 0", n)
	}
	// The session continued: its first contact is A's.
	for key, atB := range devicesOf(t, b.Gateway, "") {
		if atA, ok := first[key]; !ok || !atB.FirstSeen.Equal(atA.FirstSeen) || atB.State != "active" {
			t.Errorf("%s at B: %+v; want active, first seen %v as at A", key, atB, atA.FirstSeen)
		}
	}

	last := d.send(a)
	waitCount(t, a, 1, "mqttgw_fleet_session_loads_total", "result", "continued")
	waitCount(t, b, 1, "mqttgw_fleet_sessions_let_go_total", "reason", "taken")
	for dev, sub := range subs {
		// The next message is the will: no second birth came before it.
		sub.Expect(t, 10*time.Second, "devices/"+dev+"/status", "offline "+class[dev])
		if after := time.Since(last); after < fleetKeepalive*3/2 {
			t.Errorf("%s: will %v after the last datagram; want at least %v", dev, after, fleetKeepalive*3/2)
		}
	}
	for _, sub := range subs {
		sub.None(t, fleetKeepalive)
	}
	for _, l := range []string{"sensors", "coap"} {
		for g, want := range map[string][2]float64{"A": {1, 1}, "B": {0, 0}} {
			gw := map[string]*runningGateway{"A": a, "B": b}[g]
			births := fleetCount(gw, "mqttgw_births_published_total", l)
			wills := fleetCount(gw, "mqttgw_wills_published_total", l)
			if births != want[0] || wills != want[1] {
				t.Errorf("%s %s: %v births, %v wills; want %v, %v", g, l, births, wills, want[0], want[1])
			}
		}
	}
	// The lost sessions' records are deleted (fenced, by their owner).
	waitFor(t, 15*time.Second, "A's deletions", func() bool {
		return a.metrics.Get("mqttgw_session_writes_total", "result", "delete") >= 2
	})
}

// TestFleetSessionsOrphanWill: an instance stops while its devices are live;
// they go silent. Once its lease ran out, another instance adopts their
// sessions and publishes each will once; a device that speaks again is born
// again there.
func TestFleetSessionsOrphanWill(t *testing.T) {
	env := startFleetEnv(t)
	a, b := env.gateway(t, "gwA"), env.gateway(t, "gwB")
	subs := map[string]*mosquittotest.Sub{}
	for _, dev := range []string{"k1", "cdev1"} {
		subs[dev] = env.b.Subscribe(t, reader("devices/"+dev+"/#"))
	}
	class := map[string]string{"k1": "meters", "cdev1": "coapers"}
	d := &fleetDevice{t: t, raw: map[*runningGateway]*udpDevice{}, coap: map[*runningGateway]*coapPeer{}}

	last := d.send(a)
	for dev, sub := range subs {
		sub.Expect(t, 10*time.Second, "devices/"+dev+"/status", "online "+class[dev])
	}
	waitFor(t, 15*time.Second, "A's records written", func() bool {
		return a.metrics.Get("mqttgw_session_writes_total", "result", "put") >= 2
	})
	a.stop(t) // no wills at shutdown: the devices did not go silent
	for dev, sub := range subs {
		sub.Expect(t, 30*time.Second, "devices/"+dev+"/status", "offline "+class[dev])
		if after := time.Since(last); after < fleetKeepalive*3/2 {
			t.Errorf("%s: will %v after the last datagram; want at least %v", dev, after, fleetKeepalive*3/2)
		}
	}
	for _, sub := range subs {
		sub.None(t, 2*time.Second+fleetKeepalive) // a scan and more: no second will
	}
	for _, l := range []string{"sensors", "coap"} {
		if n, w := fleetCount(b, "mqttgw_fleet_sessions_adopted_total", l), fleetCount(b, "mqttgw_wills_published_total", l); n != 1 || w != 1 {
			t.Errorf("B %s: %v adopted, %v wills; want 1, 1", l, n, w)
		}
	}
	d.send(b)
	for dev, sub := range subs {
		sub.Expect(t, 10*time.Second, "devices/"+dev+"/status", "online "+class[dev])
	}
}

// TestFleetSessionsFencedLetGo: an instance that missed another's take (its
// watch of the owner keys silenced here) learns it from its next write of
// the device's record, which the fence refuses: it lets the session go,
// without a will, and leaves the record to the new owner.
func TestFleetSessionsFencedLetGo(t *testing.T) {
	env := startFleetEnv(t)
	a := env.gateway(t, "gwA")
	sub := env.b.Subscribe(t, reader("devices/k1/#"))
	dev := newUDPDevice(t, a.Gateway, "sensors")
	dev.send(`{"id":"k1","temp":1}`)
	sub.Expect(t, 10*time.Second, "devices/k1/status", "online meters")
	waitFor(t, 15*time.Second, "A's record written", func() bool {
		return a.metrics.Get("mqttgw_session_writes_total", "result", "put") >= 1
	})

	a.sessionKeeper.fl.running.Store(false) // A's watch sees no take from now on
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	other, err := natsstore.Open(ctx, natsstore.Options{URLs: env.nats.URLs(), Name: env.name, Instance: "gwX", Replicas: 3, MaxBytes: 1 << 20,
		OwnerLease: time.Minute}) // alive: its devices are no orphans
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })
	key := session.Key{Listener: "sensors", Device: "k1"}
	if _, prev, err := other.Take(ctx, recordKey(key)); err != nil || prev != "gwA" {
		t.Fatalf("gwX takes k1: previous owner %q, %v; want gwA", prev, err)
	}
	a.sessionKeeper.markDirty(key) // as its next save would
	waitFor(t, 15*time.Second, "A lets k1 go on a refused write", func() bool {
		return fleetCount(a, "mqttgw_fleet_sessions_let_go_total", "sensors", "reason", "fenced") == 1
	})
	if n := liveSessions(a.Gateway); n != 0 {
		t.Errorf("A holds %d live sessions after its write was refused; want 0", n)
	}
	sub.None(t, 2*fleetKeepalive) // no will: the device is another's
	if v := a.metrics.Get("mqttgw_session_writes_total", "result", "delete"); v != 0 {
		t.Errorf("A deleted %v records after it let k1 go; want 0", v)
	}
}

// TestFleetMovedDeviceWaits: with the broker away, instance A holds a
// plain-UDP device's QoS 1 publishes in its JetStream queue. The device moves
// to B (A alive) and publishes more: B parks them until A's queue has let go
// of what the device left there (fence.go). When the broker is back, every
// message reaches a persistent subscriber in the device's order.
func TestFleetMovedDeviceWaits(t *testing.T) {
	env := startFleetEnv(t)
	watch := mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1,
		Topics: []string{"json/k1/temp"}, ClientID: "watch-moved", CleanSession: false}
	env.b.Subscribe(t, watch).Close()
	ga, gb := env.gateway(t, "gwA"), env.gateway(t, "gwB")
	env.b.Stop()
	waitFor(t, 10*time.Second, "both instances see the broker gone", func() bool {
		return !ga.Proxy().Connected() && !gb.Proxy().Connected()
	})

	const per = 10
	var want []string
	devA := newUDPDevice(t, ga.Gateway, "sensors")
	for i := range per {
		devA.send(fmt.Sprintf(`{"id":"k1","temp":%d}`, i))
		want = append(want, fmt.Sprint(i))
	}
	waitFor(t, 15*time.Second, "A's queue holds the device's messages", func() bool {
		return ga.metrics.Get("mqttgw_upstream_stored_total") >= per
	})
	devB := newUDPDevice(t, gb.Gateway, "sensors")
	for i := per; i < 2*per; i++ {
		devB.send(fmt.Sprintf(`{"id":"k1","temp":%d}`, i))
		want = append(want, fmt.Sprint(i))
	}
	waitFor(t, 15*time.Second, "B parks the moved device's publishes", func() bool {
		return gb.metrics.Get("mqttgw_fleet_fenced_total") >= per
	})
	if n := gb.metrics.Get("mqttgw_upstream_stored_total"); n != 0 {
		t.Fatalf("B stored %v messages of the device before A's queue let go of its own", n)
	}
	env.b.Restart()
	sub := env.b.Subscribe(t, watch)
	var got []string
	seen := map[string]bool{}
	for len(got) < len(want) {
		m := sub.Next(t, 20*time.Second)
		if m.Topic != "json/k1/temp" || seen[string(m.Payload)] {
			continue // a QoS 1 duplicate is allowed
		}
		seen[string(m.Payload)] = true
		got = append(got, string(m.Payload))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("delivered %v, want the device's order %v", got, want)
	}
}
