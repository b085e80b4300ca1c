package gateway

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/mqttsn"
)

// aclText is a Mosquitto ACL as a site would write it: every device may write
// below its own client id, the anonymous ones may read public/#, user "ops"
// reads everything but secrets.
const aclText = `# anonymous devices
topic read public/#

user ops
topic read #
topic deny secret/#

pattern write d/%c/#
`

func aclFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "acl")
	writeFile(t, p, aclText)
	return p
}

// TestACLPlainUDP: a rule's publishes pass the ACL with the rule's device id
// as %c; a datagram with a topic its device may not write is counted,
// dead-lettered and publishes nothing.
func TestACLPlainUDP(t *testing.T) {
	b := startMosquitto(t, false)
	g := startGateway(t, upstreamTOML(b)+fmt.Sprintf(`
[auth]
acl_file = %q
[[listener]]
name = "sensors"
type = "udp"
bind = "127.0.0.1:0"
dead_letter_topic = "dead/sensors"
[[rule]]
name = "rooms"
listener = "sensors"
match = { json = true }
device = { json = "/id" }
fields.room = { json = "/room" }
fields.t = { json = "/t" }
[[rule.publish]]
topic = "d/{room}/t"
template = "{t}"
qos = 1
`, aclFile(t)))
	sub := b.Subscribe(t, reader("d/#", "dead/#"))
	sendUDP(t, g.Gateway, "sensors", []byte(`{"id":"k1","room":"k1","t":1}`))
	sub.Expect(t, 5*time.Second, "d/k1/t", "1")
	bad := `{"id":"k1","room":"k2","t":2}`
	sendUDP(t, g.Gateway, "sensors", []byte(bad))
	sub.Expect(t, 5*time.Second, "dead/sensors", bad)
	sub.None(t, 300*time.Millisecond)
	if v := g.metrics.Get("mqttgw_datagrams_total", "listener", "sensors", "outcome", "forbidden"); v != 1 {
		t.Errorf("forbidden datagrams %v, want 1", v)
	}
	if v := g.metrics.Get("mqttgw_acl_denied_total", "listener", "sensors", "access", "write"); v != 1 {
		t.Errorf("acl denials %v, want 1", v)
	}
}

// TestACLMQTTSN: an MQTT-SN client publishes below its own id, is refused
// elsewhere with PUBACK 0x03, and may subscribe to public/# as an anonymous
// device but not to #. A QoS -1 publish from nowhere is anonymous: denied.
func TestACLMQTTSN(t *testing.T) {
	env := startSN(t, snOpts{top: fmt.Sprintf("[auth]\nacl_file = %q\n", aclFile(t))})
	sub := env.reader(t, 1, "d/#", "public/#")
	c := env.connect(t, mqttsn.ClientOptions{ClientID: "sn1"})
	if err := c.Publish(snCtx(t), "d/sn1/x", 1, false, []byte("mine")); err != nil {
		t.Fatal(err)
	}
	sub.Expect(t, 5*time.Second, "d/sn1/x", "mine")
	err := c.Publish(snCtx(t), "d/other/x", 1, false, []byte("theirs"))
	if !errors.Is(err, mqttsn.NotSupported) {
		t.Fatalf("publish to another device's topic: %v, want rejected: not supported", err)
	}
	if _, _, err := c.Subscribe(snCtx(t), "#", 1); !errors.Is(err, mqttsn.NotSupported) {
		t.Fatalf("subscribe #: %v, want rejected: not supported", err)
	}
	if _, _, err := c.Subscribe(snCtx(t), "public/#", 1); err != nil {
		t.Fatalf("subscribe public/#: %v", err)
	}
	sub.None(t, 300*time.Millisecond)
	if v := env.metric("mqttgw_acl_denied_total", "listener", "sn", "access", "write"); v != 1 {
		t.Errorf("write denials %v, want 1", v)
	}
	// A will is a publish the device chose: one to a topic it may not write is
	// not published when it goes silent.
	w := env.connect(t, mqttsn.ClientOptions{ClientID: "sn2", Keepalive: time.Second,
		Will: &mqttsn.Will{Topic: "d/other/will", Payload: []byte("sneaky"), QoS: 1}})
	w.Close()
	waitFor(t, 5*time.Second, "the will denied", func() bool {
		return env.metric("mqttgw_acl_denied_total", "listener", "sn", "access", "write") == 2
	})
	sub.None(t, 300*time.Millisecond)
	if v := env.metric("mqttgw_acl_denied_total", "listener", "sn", "access", "read"); v != 1 {
		t.Errorf("read denials %v, want 1", v)
	}
}

// TestACLCoAP: a CoAP device (libcoap's client) named by c publishes below its
// own id (2.04) and is answered 4.03 elsewhere; a user's read follows its
// user block (%u from the password file).
func TestACLCoAP(t *testing.T) {
	dir := t.TempDir()
	acl := filepath.Join(dir, "acl")
	writeFile(t, acl, aclText)
	env := startCoAP(t, coapOpts{auth: fmt.Sprintf("acl_file = %q\nallow_anonymous = true", acl), users: map[string]string{"ops": "ops-secret"}})
	sub := env.reader(t, "d/#")
	coapClient(t, "-m", "put", "-e", "ok", env.url("/ps/d/cdev/t?c=cdev"))
	sub.Expect(t, 5*time.Second, "d/cdev/t", "ok")
	out := coapClient(t, "-m", "put", "-e", "no", env.url("/ps/d/other/t?c=cdev"))
	if !strings.Contains(out, "4.03") {
		t.Fatalf("PUT to another device's topic: %q, want 4.03", out)
	}
	env.mqttPub(t, "secret/k", "s", true)
	env.mqttPub(t, "public/k", "p", true)
	if out := coapClient(t, "-m", "get", env.url("/ps/secret/k?c=opsdev&u=ops&p=ops-secret")); !strings.Contains(out, "4.03") {
		t.Errorf("ops GET secret/k: %q, want 4.03 (deny wins)", out)
	}
	if out := coapClient(t, "-m", "get", env.url("/ps/public/k?c=anon")); strings.TrimSpace(out) != "p" {
		t.Errorf("anonymous GET public/k: %q, want its value", out)
	}
	sub.None(t, 300*time.Millisecond)
}

// TestMQTTSNSourcesAndKnownClients: [listener.mqttsn] require_known_client
// admits only client ids of the password file (made by mosquitto_passwd);
// allowed_sources outside loopback makes the listener deaf to the test.
func TestMQTTSNSourcesAndKnownClients(t *testing.T) {
	passwd := filepath.Join(t.TempDir(), "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-c", "-b", passwd, "node7", "unused").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v: %s", err, out)
	}
	env := startSN(t, snOpts{mqttsn: "require_known_client = true", top: fmt.Sprintf("[auth]\npassword_file = %q\n", passwd)})
	env.connect(t, mqttsn.ClientOptions{ClientID: "node7"})
	c := env.device(t, mqttsn.ClientOptions{ClientID: "node8"})
	if err := c.Connect(snCtx(t)); !errors.Is(err, mqttsn.NotSupported) {
		t.Fatalf("unknown client id: %v, want rejected: not supported", err)
	}

	deaf := startSN(t, snOpts{mqttsn: `allowed_sources = ["192.0.2.0/24"]`})
	r := deaf.raw(t)
	r.send(&mqttsn.Connect{Flags: mqttsn.Flags{CleanSession: true}, Duration: 60, ClientID: "x"})
	r.none(300 * time.Millisecond)
	if v := deaf.dropped("source_not_allowed"); v != 1 {
		t.Errorf("source_not_allowed = %v, want 1", v)
	}
}
