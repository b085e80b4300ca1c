package gateway

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

// embeddedAuthACL is the embedded broker's ACL in the test below: devices
// write below their own id, "watcher" reads everything and may write
// everything (the gateway's status topic is still not his to write).
const embeddedAuthACL = `pattern write d/%c/#

user watcher
topic readwrite #
`

// TestEmbeddedBrokerUsesAuthFiles: with auth.password_file, acl_file and
// allow_anonymous = false, the embedded broker checks its MQTT clients with
// the files in force (a user added to the password file and reloaded can
// connect), refuses anonymous clients, keeps the gateway's retained status
// for the gateway, and the gateway itself still connects and publishes for
// its devices.
func TestEmbeddedBrokerUsesAuthFiles(t *testing.T) {
	mosquittotest.RequireTools(t, "mosquitto_pub", "mosquitto_sub", "mosquitto_passwd", "stdbuf")
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	addUser := func(user, password string) {
		t.Helper()
		if out, err := exec.Command("mosquitto_passwd", "-b", passwd, user, password).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v: %s", err, out)
		}
	}
	writeFile(t, passwd, "")
	addUser("watcher", "watch-pw")
	acl := filepath.Join(dir, "acl")
	writeFile(t, acl, embeddedAuthACL)
	text := fmt.Sprintf(`
[gateway]
id = "gwtest"
drain_timeout = "5s"
[upstream]
url = "embedded"
reconnect_min = "100ms"
reconnect_max = "300ms"
publish_timeout = "2s"
[upstream.embedded]
listen = "127.0.0.1:0"
[auth]
password_file = %q
acl_file = %q
allow_anonymous = false
[[listener]]
name = "sensors"
type = "udp"
bind = "127.0.0.1:0"
[[rule]]
name = "json"
listener = "sensors"
match = { json = true }
device = { json = "/id" }
fields.t = { json = "/t" }
[[rule.publish]]
topic = "d/{device}/t"
payload = "template"
template = "{t}"
qos = 1
`, passwd, acl)
	g := startGateway(t, text) // waits until the gateway is connected
	b := embeddedBroker(t, g.Gateway)
	const status = "mqttgw/gwtest/status"

	watch := mosquittotest.SubOptions{Username: "watcher", Password: "watch-pw", QoS: 1, Topics: []string{status, "d/#", "marker"}}
	sub := b.Subscribe(t, watch)
	sub.Expect(t, 10*time.Second, status, "online")
	newUDPDevice(t, g.Gateway, "sensors").send(`{"id":"k1","t":21}`)
	sub.Expect(t, 10*time.Second, "d/k1/t", "21")

	if err := b.PublishErr(t, mosquittotest.PubOptions{Topic: "d/k1/t", Payload: []byte("anonymous"), QoS: 1}); err == nil {
		t.Error("an anonymous client connected with allow_anonymous = false")
	}
	if err := b.PublishErr(t, mosquittotest.PubOptions{Username: "watcher", Password: "wrong", Topic: "marker", QoS: 1}); err == nil {
		t.Error("a wrong password was taken")
	}
	late := mosquittotest.PubOptions{Username: "late", Password: "late-pw", Topic: "marker", Payload: []byte("late"), QoS: 1}
	if err := b.PublishErr(t, late); err == nil {
		t.Error("a user not in the password file connected")
	}
	as := func(o mosquittotest.PubOptions) mosquittotest.PubOptions {
		o.Username, o.Password = "watcher", "watch-pw"
		return o
	}
	b.Publish(t, as(mosquittotest.PubOptions{Topic: status, Payload: []byte("offline"), QoS: 1, Retain: true}))
	b.Publish(t, as(mosquittotest.PubOptions{Topic: "marker", Payload: []byte("after the overwrite"), QoS: 1}))
	sub.Expect(t, 10*time.Second, "marker", "after the overwrite")

	// SIGHUP: the password file in force is read at each CONNECT.
	addUser("late", "late-pw")
	cfg, ps := config.Parse("reloaded.toml", []byte(text))
	if errs := ps.Errors(); len(errs) > 0 {
		t.Fatal(errs)
	}
	if err := g.Reload(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	b.Publish(t, late) // the ACL lets late write nothing: dropped, but connected
	b.Publish(t, as(mosquittotest.PubOptions{Topic: "marker", Payload: []byte("after late"), QoS: 1}))
	sub.Expect(t, 10*time.Second, "marker", "after late")

	fresh := b.Subscribe(t, watch)
	if m := fresh.Next(t, 10*time.Second); m.Topic != status || string(m.Payload) != "online" || !m.Retain {
		t.Fatalf("retained status %v, want retained \"online\"", m)
	}
	if !g.proxy.Connected() {
		t.Error("the gateway lost its connection to the embedded broker")
	}
}

// embeddedBroker is a mosquittotest.Broker for the gateway's embedded broker,
// for its Publish and Subscribe.
func embeddedBroker(t *testing.T, g *Gateway) *mosquittotest.Broker {
	t.Helper()
	addr := g.proxy.EmbeddedAddr()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("embedded broker address %q: %v", addr, err)
	}
	n, _ := strconv.Atoi(port)
	return &mosquittotest.Broker{Host: host, Port: n, Addr: addr, URL: "tcp://" + addr}
}

// TestEmbeddedBrokerLimitsFailures: the embedded broker's password checks share
// the devices' per-source failure limit: after authFailBurst wrong passwords
// from an address, the right one is refused too (for a while), so guessing is
// slow and cannot burn the CPU.
func TestEmbeddedBrokerLimitsFailures(t *testing.T) {
	mosquittotest.RequireTools(t, "mosquitto_pub", "mosquitto_passwd")
	passwd := filepath.Join(t.TempDir(), "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-c", "-b", passwd, "watcher", "watch-pw").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v: %s", err, out)
	}
	g := startGateway(t, fmt.Sprintf(`
[upstream]
url = "embedded"
[upstream.embedded]
listen = "127.0.0.1:0"
[auth]
password_file = %q
[[listener]]
name = "sensors"
type = "udp"
bind = "127.0.0.1:0"
`, passwd))
	b := embeddedBroker(t, g.Gateway)
	right := mosquittotest.PubOptions{Username: "watcher", Password: "watch-pw", Topic: "x", QoS: 1}
	if err := b.PublishErr(t, right); err != nil {
		t.Fatalf("the right password before any failure: %v", err)
	}
	wrong := right
	wrong.Password = "guess"
	for range authFailBurst {
		if err := b.PublishErr(t, wrong); err == nil {
			t.Fatal("a wrong password was taken")
		}
	}
	if err := b.PublishErr(t, right); err == nil {
		t.Errorf("the right password after %d failures from the same address was taken, want refused until the limit refills", authFailBurst)
	}
}
