package main

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/internal/wait"
)

// rawKeepalive is the plain-UDP device class's keepalive in these tests.
const rawKeepalive = 2 * time.Second

// startRaw runs instance id of f with a plain-UDP listener "sensors" (class
// meters: every device, a birth and a will on devices/{device}/status) and
// returns it with the listener's address.
func (f *fleet) startRaw(t *testing.T, id string) (*instance, string) {
	t.Helper()
	rawAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t, "udp"))
	in := f.startWith(t, id, fmt.Sprintf(`
[[listener]]
name = "sensors"
type = "udp"
bind = %q
[[rule]]
name = "text"
listener = "sensors"
match = { regex = '^(?P<id>[a-z0-9]+) t=(?P<t>[-0-9.]+)$' }
device = { group = "id" }
fields.t = { group = "t" }
[[rule.publish]]
topic = "text/{device}"
template = "{t}"
qos = 1
[[class]]
name = "meters"
listeners = ["sensors"]
match = "*"
keepalive = %q
will  = { topic = "devices/{device}/status", payload = "offline", qos = 1 }
birth = { topic = "devices/{device}/status", payload = "online",  qos = 1 }
`, rawAddr, rawKeepalive))
	in.run.waitLog(t, "listening")
	in.run.waitLog(t, "connected to broker")
	return in, rawAddr
}

// sendRaw sends one datagram to addr.
func sendRaw(t *testing.T, addr, payload string) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(payload)); err != nil {
		t.Fatal(err)
	}
}

// TestClusterRawKilledOwner: a plain-UDP device talks to instance A, then
// to B, within its keepalive: one session, one birth. B is killed (SIGKILL)
// and the device goes silent: once B's lease ran out, A adopts the session
// and publishes its will, once.
func TestClusterRawKilledOwner(t *testing.T) {
	f := startFleet(t)
	sub := f.broker.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1,
		Topics: []string{"devices/#", "text/#"}})
	a, aAddr := f.startRaw(t, "gwA")
	b, bAddr := f.startRaw(t, "gwB")

	sendRaw(t, aAddr, "r1 t=1")
	// The birth waits for the device's take in the fleet's store, the
	// datagram's publish does not: either may come first.
	got := map[string]string{}
	for range 2 {
		m := sub.Next(t, 15*time.Second)
		got[m.Topic] = string(m.Payload)
	}
	if got["devices/r1/status"] != "online" || got["text/r1"] != "1" {
		t.Fatalf("after the first datagram: %v; want the birth and the publish", got)
	}
	wait.For(t, 15*time.Second, "A's record of r1 written", func() bool {
		return a.metric(t, `mqttgw_session_writes_total{result="put"}`) >= 1
	})

	sendRaw(t, bAddr, "r1 t=2")
	sub.Expect(t, 15*time.Second, "text/r1", "2") // and no second birth before it
	wait.For(t, 15*time.Second, "A lets r1 go", func() bool {
		return a.metric(t, `mqttgw_fleet_sessions_let_go_total{listener="sensors",reason="taken"}`) == 1
	})
	wait.For(t, 15*time.Second, "B's record of r1 written", func() bool {
		return b.metric(t, `mqttgw_session_writes_total{result="put"}`) >= 1
	})
	if v := b.metric(t, `mqttgw_fleet_session_loads_total{listener="sensors",result="continued"}`); v != 1 {
		t.Fatalf("B's continued loads: %v, want 1", v)
	}
	last := time.Now()
	b.kill9(t)

	sub.Expect(t, 30*time.Second, "devices/r1/status", "offline")
	if after := time.Since(last); after < rawKeepalive*3/2 {
		t.Errorf("will %v after the last datagram; want at least %v", after, rawKeepalive*3/2)
	}
	sub.None(t, 5*time.Second) // two scans more: no second will
	if v := a.metric(t, `mqttgw_fleet_sessions_adopted_total{listener="sensors"}`); v != 1 {
		t.Errorf("A adopted %v sessions, want 1", v)
	}
}
