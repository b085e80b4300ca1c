package gateway

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/mqttsn"
)

// keepaliveTest is the class keepalive of these tests: a session is lost after
// 1.5 × it of silence.
const keepaliveTest = time.Second

// classTOML is one class per protocol with a short keepalive, a retained birth
// and a retained will on devices/{device}/status.
func classTOML(name, match, listeners string) string {
	return fmt.Sprintf(`
[[class]]
name = %q
listeners = [%s]
match = %q
keepalive = %q
will  = { topic = "devices/{device}/status", payload = "offline {class} {listener}", qos = 1, retain = true }
birth = { topic = "devices/{device}/status", payload = "online {class} {listener}",  qos = 1, retain = true }
`, name, listeners, match, keepaliveTest)
}

// device is a plain-UDP device: one socket, which may be replaced to change its
// source port (NAT rebinding).
type udpDevice struct {
	t    *testing.T
	to   *net.UDPAddr
	conn *net.UDPConn
}

func newUDPDevice(t *testing.T, g *Gateway, listener string) *udpDevice {
	t.Helper()
	d := &udpDevice{t: t, to: g.ListenerAddr(listener).(*net.UDPAddr)}
	d.rebind()
	t.Cleanup(func() { d.conn.Close() })
	return d
}

// rebind moves the device to a new source port.
func (d *udpDevice) rebind() {
	d.t.Helper()
	if d.conn != nil {
		d.conn.Close()
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		d.t.Fatal(err)
	}
	d.conn = c
}

func (d *udpDevice) send(payload string) time.Time {
	d.t.Helper()
	now := time.Now()
	if _, err := d.conn.WriteToUDP([]byte(payload), d.to); err != nil {
		d.t.Fatal(err)
	}
	return now
}

// recv returns the next datagram and its source within bound, or fails.
func (d *udpDevice) recv(bound time.Duration) (string, netip.AddrPort) {
	d.t.Helper()
	p, from, ok := d.tryRecv(bound)
	if !ok {
		d.t.Fatalf("device %v: no datagram within %v", d.conn.LocalAddr(), bound)
	}
	return p, from
}

func (d *udpDevice) tryRecv(bound time.Duration) (string, netip.AddrPort, bool) {
	buf := make([]byte, 2048)
	d.conn.SetReadDeadline(time.Now().Add(bound))
	n, from, err := d.conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		return "", netip.AddrPort{}, false
	}
	return string(buf[:n]), from, true
}

// none fails if a datagram arrives within d.
func (d *udpDevice) none(bound time.Duration) {
	d.t.Helper()
	if p, _, ok := d.tryRecv(bound); ok {
		d.t.Fatalf("device %v: unexpected datagram %q", d.conn.LocalAddr(), p)
	}
}

// expectLostOnTime waits for the will and checks it did not come before 1.5
// keepalives after the device's last datagram, then that no second one
// follows.
func expectLostOnTime(t *testing.T, sub *mosquittotest.Sub, last time.Time, topic, will string) {
	t.Helper()
	sub.Expect(t, 5*time.Second, topic, will)
	// Never early: before 1.5 keepalives of silence the device is alive. How
	// late is bounded only by Expect's wait: on a loaded machine the driver's
	// half-second step may run late, and that is no fault of the gateway.
	if after, lo := time.Since(last), keepaliveTest*3/2; after < lo {
		t.Errorf("will %q came %v after the last datagram; want at least %v", will, after, lo)
	}
	sub.None(t, 2*keepaliveTest)
}

func devicesOf(t *testing.T, g *Gateway, query string) map[string]Device {
	t.Helper()
	resp, err := http.Get("http://" + g.MetricsAddr().String() + "/devices" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /devices%s: %s", query, resp.Status)
	}
	var list []Device
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	out := map[string]Device{}
	for _, d := range list {
		out[d.Listener+"/"+d.Device] = d
	}
	return out
}

func expectState(t *testing.T, g *Gateway, key, state string) Device {
	t.Helper()
	d, ok := devicesOf(t, g, "")[key]
	if !ok || d.State != state {
		t.Fatalf("GET /devices: %s is %+v (listed %v); want state %q", key, d, ok, state)
	}
	return d
}

const metricsTOML = "\n[metrics]\nlisten = \"127.0.0.1:0\"\n"

// TestRawDeviceWillAndBirth: a plain-UDP device sends once and goes silent: its
// class's birth, then its will exactly once, on time; it speaks again: birth again.
// GET /devices follows it: active, lost, active.
func TestRawDeviceWillAndBirth(t *testing.T) {
	b := startMosquitto(t, false)
	g := startGateway(t, rawConfig(b, "")+classTOML("meters", "k*", `"sensors"`)+metricsTOML)
	sub := b.Subscribe(t, reader("devices/#"))
	dev := newUDPDevice(t, g.Gateway, "sensors")

	last := dev.send(`{"id":"k1","temp":21.5}`)
	m := sub.Expect(t, 5*time.Second, "devices/k1/status", "online meters sensors")
	if m.QoS != 1 {
		t.Errorf("birth qos %d, want 1", m.QoS)
	}
	d := expectState(t, g.Gateway, "sensors/k1", "active")
	if d.Class != "meters" || d.Protocol != "udp" || d.Addr != dev.conn.LocalAddr().String() {
		t.Errorf("GET /devices: %+v", d)
	}
	expectLostOnTime(t, sub, last, "devices/k1/status", "offline meters sensors")
	expectState(t, g.Gateway, "sensors/k1", "lost")
	if got := devicesOf(t, g.Gateway, "?state=lost"); len(got) != 1 {
		t.Errorf("GET /devices?state=lost: %v", got)
	}

	last = dev.send(`{"id":"k1","temp":21.6}`)
	sub.Expect(t, 5*time.Second, "devices/k1/status", "online meters sensors")
	expectState(t, g.Gateway, "sensors/k1", "active")
	expectLostOnTime(t, sub, last, "devices/k1/status", "offline meters sensors")

	// A device no class matches has a session but no birth and no will.
	other := b.Subscribe(t, reader("devices/zz9/#"))
	dev.send("zz9 t=1")
	waitFor(t, 5*time.Second, "zz9 listed", func() bool { _, ok := devicesOf(t, g.Gateway, "")["sensors/zz9"]; return ok })
	if d := expectState(t, g.Gateway, "sensors/zz9", "active"); d.Class != "" {
		t.Errorf("zz9 class %q, want none", d.Class)
	}
	other.None(t, 3*keepaliveTest)
	if g.metrics.Get("mqttgw_wills_published_total", "listener", "sensors") != 2 ||
		g.metrics.Get("mqttgw_births_published_total", "listener", "sensors") != 2 {
		t.Errorf("wills %v births %v, want 2 and 2", g.metrics.Get("mqttgw_wills_published_total", "listener", "sensors"),
			g.metrics.Get("mqttgw_births_published_total", "listener", "sensors"))
	}
}

// TestCoAPDeviceClassWill: a CoAP device (libcoap's client) publishes once with
// its client id and goes silent: its class's will reaches Mosquitto once.
func TestCoAPDeviceClassWill(t *testing.T) {
	env := startCoAP(t, coapOpts{extra: classTOML("coapers", "cdev*", `"coap"`) + metricsTOML})
	sub := env.reader(t, "devices/#")
	last := time.Now()
	coapClient(t, "-m", "put", "-e", "1", env.url("/ps/x/y?c=cdev1"))
	sub.Expect(t, 5*time.Second, "devices/cdev1/status", "online coapers coap")
	expectLostOnTime(t, sub, last, "devices/cdev1/status", "offline coapers coap")
	expectState(t, env.g.Gateway, "coap/cdev1", "lost")
}

// TestMQTTSNClassWillFallback: an MQTT-SN client without a will of its own gets
// its class's; one with its own will keeps it. The CONNECT Duration governs.
func TestMQTTSNClassWillFallback(t *testing.T) {
	env := startSN(t, snOpts{top: classTOML("snclass", "sn-*", "") + metricsTOML})
	sub := env.reader(t, 1, "devices/#", "own/#")
	// A raw client: its CONNECT (Duration 1 s) is the last datagram it sends.
	r := env.raw(t)
	last := time.Now()
	r.connect("sn-1", uint16(keepaliveTest/time.Second), true)
	sub.Expect(t, 5*time.Second, "devices/sn-1/status", "online snclass sn")
	expectLostOnTime(t, sub, last, "devices/sn-1/status", "offline snclass sn")
	expectState(t, env.g.Gateway, "sn/sn-1", "lost")

	c2 := env.connect(t, mqttsn.ClientOptions{ClientID: "sn-2", Keepalive: keepaliveTest,
		Will: &mqttsn.Will{Topic: "own/sn-2", Payload: []byte("mine"), QoS: 1}})
	sub.Expect(t, 5*time.Second, "devices/sn-2/status", "online snclass sn")
	c2.Close() // silent from here on
	sub.Expect(t, 5*time.Second, "own/sn-2", "mine")
	sub.None(t, 2*keepaliveTest) // and not the class's will as well
}

// downlinkConfig is rawConfig (listener "sensors") with downlinks and the
// metrics listener.
func downlinkConfig(b *mosquittotest.Broker, downlinks string) string {
	return rawConfig(b, "") + downlinks + metricsTOML
}

// TestDownlinkNow: a mosquitto_pub to cmd/k1/valve reaches the device's socket
// at once, from the listener's port; a device without a session gets nothing
// and it is counted.
func TestDownlinkNow(t *testing.T) {
	b := startMosquitto(t, false)
	g := startGateway(t, downlinkConfig(b, `
[[downlink]]
name = "valve"
listener = "sensors"
filter = "cmd/{device}/valve"
payload = "template"
template = "SET {device} {payload}"
deliver = "now"
`))
	dev := newUDPDevice(t, g.Gateway, "sensors")
	dev.send(`{"id":"k1","temp":1}`)
	waitFor(t, 5*time.Second, "session of k1", func() bool { _, ok := devicesOf(t, g.Gateway, "")["sensors/k1"]; return ok })
	b.Publish(t, mosquittotest.PubOptions{Username: "reader", Password: "reader-secret", Topic: "cmd/k1/valve", Payload: []byte("open"), QoS: 1})
	p, from := dev.recv(5 * time.Second)
	if p != "SET k1 open" || from.Port() != uint16(g.ListenerAddr("sensors").(*net.UDPAddr).Port) {
		t.Fatalf("downlink %q from %v", p, from)
	}
	b.Publish(t, mosquittotest.PubOptions{Username: "reader", Password: "reader-secret", Topic: "cmd/nobody/valve", Payload: []byte("open"), QoS: 1})
	waitFor(t, 5*time.Second, "no_session counted", func() bool {
		return g.metrics.Get("mqttgw_downlinks_total", "listener", "sensors", "outcome", "no_session") == 1
	})
	if v := g.metrics.Get("mqttgw_downlinks_total", "listener", "sensors", "outcome", "sent"); v != 1 {
		t.Errorf("sent = %v, want 1", v)
	}
}

// TestDownlinkOnUplink: a queued downlink leaves only right after the device's
// next datagram, to the port it now sends from; an expired one and the oldest of
// an overflowing queue are counted and never delivered.
func TestDownlinkOnUplink(t *testing.T) {
	b := startMosquitto(t, false)
	g := startGateway(t, downlinkConfig(b, `
[[downlink]]
name = "valve"
listener = "sensors"
filter = "cmd/{device}/valve"
deliver = "on_uplink"
ttl = "1s"
max_queued = 2
`))
	pub := func(payload string) {
		b.Publish(t, mosquittotest.PubOptions{Username: "reader", Password: "reader-secret", Topic: "cmd/k1/valve", Payload: []byte(payload), QoS: 1})
	}
	count := func(outcome string) float64 {
		return g.metrics.Get("mqttgw_downlinks_total", "listener", "sensors", "outcome", outcome)
	}
	dev := newUDPDevice(t, g.Gateway, "sensors")
	dev.send(`{"id":"k1","temp":1}`)
	waitFor(t, 5*time.Second, "session of k1", func() bool { _, ok := devicesOf(t, g.Gateway, "")["sensors/k1"]; return ok })

	pub("first")
	waitFor(t, 5*time.Second, "downlink queued", func() bool { return count("queued") == 1 })
	dev.none(300 * time.Millisecond) // queued, not sent
	if d := expectState(t, g.Gateway, "sensors/k1", "active"); d.QueuedDownlinks != 1 {
		t.Errorf("queued_downlinks = %d, want 1", d.QueuedDownlinks)
	}
	dev.rebind() // NAT rebinding: a new source port
	dev.send(`{"id":"k1","temp":2}`)
	p, from := dev.recv(5 * time.Second)
	if p != "first" || from.Port() != uint16(g.ListenerAddr("sensors").(*net.UDPAddr).Port) {
		t.Fatalf("downlink %q from %v", p, from)
	}

	// Expired: queued, then older than its ttl when the device speaks.
	pub("stale")
	waitFor(t, 5*time.Second, "downlink queued", func() bool { return count("queued") == 2 })
	waitFor(t, 5*time.Second, "queued downlink expired", func() bool {
		return g.metrics.Get("mqttgw_downlinks_expired_total") == 1
	})
	dev.send(`{"id":"k1","temp":3}`)
	dev.none(500 * time.Millisecond)

	// Overflow: three for a queue of two; the oldest is dropped.
	pub("a")
	pub("b")
	pub("c")
	waitFor(t, 5*time.Second, "three queued", func() bool { return count("queued") == 5 })
	if v := count("dropped_overflow"); v != 1 {
		t.Errorf("dropped_overflow = %v, want 1", v)
	}
	dev.send(`{"id":"k1","temp":4}`)
	if p, _ := dev.recv(5 * time.Second); p != "b" {
		t.Errorf("first after overflow %q, want b", p)
	}
	if p, _ := dev.recv(5 * time.Second); p != "c" {
		t.Errorf("second after overflow %q, want c", p)
	}
	dev.none(300 * time.Millisecond)
}

// TestAcknowledgedDatagrams: the ack leaves only after Mosquitto acknowledged
// the publish; a retry is acknowledged again and published once; with the
// broker stopped nothing is acknowledged.
func TestAcknowledgedDatagrams(t *testing.T) {
	b := startMosquitto(t, false)
	g := startGateway(t, upstreamTOML(b)+`
[[listener]]
name = "sensors"
type = "udp"
bind = "127.0.0.1:0"

[[rule]]
name = "acked"
listener = "sensors"
match = { json = true }
device = { json = "/id" }
fields.seq = { json = "/seq" }
fields.temp = { json = "/temp" }
[[rule.publish]]
topic = "acked/{device}"
template = "{seq} {temp}"
qos = 1
[rule.ack]
template = "ACK {seq}"
dedup = "{device}:{seq}"
window = "5m"
`+metricsTOML)
	sub := b.Subscribe(t, reader("acked/#"))
	dev := newUDPDevice(t, g.Gateway, "sensors")
	for range 3 {
		dev.send(`{"id":"d1","seq":17,"temp":5}`)
		if p, _ := dev.recv(5 * time.Second); p != "ACK 17" {
			t.Fatalf("ack %q", p)
		}
	}
	sub.Expect(t, 5*time.Second, "acked/d1", "17 5")
	sub.None(t, 500*time.Millisecond) // published once

	b.Stop()
	waitFor(t, 10*time.Second, "gateway sees the broker gone", func() bool { return !g.proxy.Connected() })
	dev.send(`{"id":"d1","seq":18,"temp":6}`)
	dev.none(time.Second)
	if v := g.metrics.Get("mqttgw_acks_total", "listener", "sensors", "outcome", "failed"); v != 1 {
		t.Errorf("failed = %v, want 1", v)
	}
	// Back: the retry is published and acknowledged.
	b.Restart()
	waitFor(t, 15*time.Second, "gateway reconnected", g.proxy.Connected)
	sub2 := b.Subscribe(t, reader("acked/#"))
	dev.send(`{"id":"d1","seq":18,"temp":6}`)
	if p, _ := dev.recv(5 * time.Second); p != "ACK 18" {
		t.Fatalf("ack after restart %q", p)
	}
	sub2.Expect(t, 5*time.Second, "acked/d1", "18 6")
}

// TestShutdownPublishesNoDeviceWills: a clean stop takes the gateway's status
// offline but publishes no device's will: the devices did not go silent.
func TestShutdownPublishesNoDeviceWills(t *testing.T) {
	b := startMosquitto(t, false)
	g := startGateway(t, rawConfig(b, "")+classTOML("meters", "k*", `"sensors"`))
	sub := b.Subscribe(t, reader("devices/#", "mqttgw/gwtest/status"))
	sub.Expect(t, 5*time.Second, "mqttgw/gwtest/status", "online")
	newUDPDevice(t, g.Gateway, "sensors").send(`{"id":"k1","temp":1}`)
	sub.Expect(t, 5*time.Second, "devices/k1/status", "online meters sensors")
	g.stop(t)
	sub.Expect(t, 5*time.Second, "mqttgw/gwtest/status", "offline")
	sub.None(t, 2*keepaliveTest)
}

// TestPProfOnlyWhenAsked: /debug/pprof/ is served on the metrics listener only
// with [metrics] pprof = true.
func TestPProfOnlyWhenAsked(t *testing.T) {
	b := startMosquitto(t, false)
	for _, on := range []bool{false, true} {
		g := startGateway(t, rawConfig(b, "")+metricsTOML+fmt.Sprintf("pprof = %v\n", on))
		resp, err := http.Get("http://" + g.MetricsAddr().String() + "/debug/pprof/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := map[bool]int{false: http.StatusNotFound, true: http.StatusOK}[on]; resp.StatusCode != want {
			t.Errorf("pprof = %v: GET /debug/pprof/ = %d, want %d", on, resp.StatusCode, want)
		}
		g.stop(t)
	}
}
