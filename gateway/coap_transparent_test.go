package gateway

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

// coapTransparentACL is the test broker's own ACL for CoAP devices relayed in
// transparent mode: the gateway's account may do anything; alice (a device's
// own user) reads cmd/#; dev (the listener's account, for devices that gave no
// credentials) writes anon/#; every account writes below its client id.
const coapTransparentACL = `user mqttgw
topic readwrite #
user reader
topic read #
user dev
topic write anon/#
user alice
topic read cmd/#
pattern write d/%c/#
`

// coapTransparentEnv is a Mosquitto with its own password file and ACL, and a
// gateway whose coap listener "coap" (client ids "co-" + device) and coaps
// listener "coaps" ("cs-" + device) relay each device over its own connection.
type coapTransparentEnv struct {
	b           *mosquittotest.Broker
	g           *runningGateway
	addr, daddr string
}

func (env *coapTransparentEnv) url(path string) string  { return "coap://" + env.addr + path }
func (env *coapTransparentEnv) surl(path string) string { return "coaps://" + env.daddr + path }

// startCoAPTransparent starts them. The gateway's own password file knows
// alice and bob; the broker knows bob with another password, so it refuses
// him. The coaps device's PSK identity is a broker user whose password is the
// listener's transparent.password. coapKeys are extra [listener.coap] keys of
// the coap listener, listenKeys extra keys of its [[listener]].
func startCoAPTransparent(t *testing.T, listenKeys, coapKeys string) *coapTransparentEnv {
	t.Helper()
	mosquittotest.RequireTools(t, "coap-client-notls", "coap-client-openssl", "stdbuf", "mosquitto_passwd")
	b := mosquittotest.Start(t, mosquittotest.Options{
		Users: map[string]string{"mqttgw": "gw-secret", "reader": "reader-secret", "dev": "dev-secret",
			"alice": "alice-secret", "bob": "not-bob-secret", coapPSKIdentity: "dev-secret"},
		ACL: coapTransparentACL,
	})
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	for i, u := range []string{"alice", "bob"} {
		args := []string{"-b", passwd, u, u + "-secret"}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		if out, err := exec.Command("mosquitto_passwd", args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v: %s", err, out)
		}
	}
	psk := filepath.Join(dir, "psk")
	writeFile(t, psk, fmt.Sprintf("%s:%x\n", coapPSKIdentity, coapPSKKey))
	cfg := upstreamTOML(b) + fmt.Sprintf(`
[auth]
allow_anonymous = true
password_file = %q
psk_file = %q

[[listener]]
name = "coap"
type = "coap"
bind = "127.0.0.1:0"
mode = "transparent"
client_id_prefix = "co-"
%s
[listener.transparent]
username = "dev"
password = "dev-secret"
[listener.coap]
retry_after = "7s"
%s

[[listener]]
name = "coaps"
type = "coaps"
bind = "127.0.0.1:%s"
mode = "transparent"
client_id_prefix = "cs-"
[listener.transparent]
username = "dev"
password = "dev-secret"
[listener.coap]
handshake_timeout = "3s"
`, passwd, psk, listenKeys, coapKeys, freeUDPPort(t))
	g := startGateway(t, cfg)
	return &coapTransparentEnv{b: b, g: g, addr: g.ListenerAddr("coap").String(), daddr: g.ListenerAddr("coaps").String()}
}

// TestCoAPTransparentOwnIdentity: CoAP devices reach the broker as clients of
// their own — alice with her own user name, an anonymous device (named by its
// address) with the listener's account, a coaps device with its PSK identity —
// so Mosquitto's ACL applies to each: a topic the gateway's account could
// write is not delivered (the marker after it is the first delivery).
func TestCoAPTransparentOwnIdentity(t *testing.T) {
	env := startCoAPTransparent(t, "", "")
	sub := env.b.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1, Topics: []string{"other/#", "d/#", "anon/#"}})

	alice := "?c=a1&u=alice&p=alice-secret"
	// MQTT 3.1.1 brokers acknowledge a denied publish and drop it: 2.04.
	if out := coapClient(t, "-m", "put", "-e", "not mine", env.url("/ps/other/x"+alice)); strings.TrimSpace(out) != "" {
		t.Fatalf("alice's PUT other/x: %q", out)
	}
	if out := coapClient(t, "-m", "put", "-e", "anonymous", env.url("/ps/other/y")); strings.TrimSpace(out) != "" {
		t.Fatalf("anonymous PUT other/y: %q", out)
	}
	coapClient(t, "-m", "put", "-e", "21.5", env.url("/ps/d/co-a1/t"+alice))
	if m := sub.Next(t, 5*time.Second); m.Topic != "d/co-a1/t" || string(m.Payload) != "21.5" {
		t.Fatalf("first delivery %s %q: the broker let a device write where only the gateway's account may", m.Topic, m.Payload)
	}
	coapClient(t, "-m", "post", "-e", "hello", env.url("/ps/anon/x"))
	sub.Expect(t, 5*time.Second, "anon/x", "hello")
	coapsClient(t, "-u", coapPSKIdentity, "-k", coapPSKKey, "-m", "put", "-e", "sealed", env.surl("/ps/d/cs-"+coapPSKIdentity+"/t"))
	sub.Expect(t, 5*time.Second, "d/cs-"+coapPSKIdentity+"/t", "sealed")
	sub.None(t, 300*time.Millisecond)

	log := env.b.Log()
	for _, want := range []string{
		"as co-a1 (p2, c1, k5, u'alice')",
		"as co-127.0.0.1:", // the anonymous device: client id from its address
		"u'dev')",
		fmt.Sprintf("as cs-%s (p2, c1, k5, u'%s')", coapPSKIdentity, coapPSKIdentity),
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the broker's log lacks %q:\n%s", want, log)
		}
	}
	// Each device's first request waited for its connection; the
	// anonymous ones proved their address first (4.01 with Echo, which
	// libcoap repeats the request with).
	if n := env.g.Metrics().Get("mqttgw_coap_address_checks_total", "listener", "coap", "kind", "echo"); n < 2 {
		t.Errorf("4.01 Echo answers = %v, want at least 2", n)
	}
}

// TestCoAPTransparentRefusals: a password the gateway's own file accepts but
// the broker refuses gets 4.01 (RFC 7252 §5.9.2.2), counted as a refused
// authentication; beyond max_connections a device gets 5.03 with Max-Age.
func TestCoAPTransparentRefusals(t *testing.T) {
	env := startCoAPTransparent(t, "", "")
	if out := coapClient(t, "-m", "put", "-e", "x", env.url("/ps/d/co-b1/t?c=b1&u=bob&p=bob-secret")); !strings.Contains(out, "4.01") {
		t.Fatalf("PUT as bob, whom the broker refuses: %q, want 4.01", out)
	}
	waitFor(t, 5*time.Second, "the broker's refusal counted", func() bool {
		return env.g.Metrics().Get("mqttgw_auth_failures_total", "listener", "coap", "reason", "refused by the broker") == 1
	})
	if out := coapClient(t, "-m", "put", "-e", "x", env.url("/ps/d/co-b1/t?c=b1&u=bob&p=guess")); !strings.Contains(out, "4.01") {
		t.Fatalf("PUT with a wrong password: %q, want 4.01", out)
	}

	full := startCoAPTransparent(t, "transparent.max_connections = 1", "")
	sub := full.b.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1, Topics: []string{"d/#"}})
	coapClient(t, "-m", "put", "-e", "1", full.url("/ps/d/co-a1/t?c=a1&u=alice&p=alice-secret"))
	sub.Expect(t, 5*time.Second, "d/co-a1/t", "1")
	// coap-client prints the code of an error response, not its options: the
	// Max-Age is read with a raw request from a proven address.
	p := dialCoAP(t, full.addr)
	r := p.do(coapRequest(coapCON, codePUT, 1, "m1", "/ps/d/co-m2/t?c=m2", []byte("2")))
	if codeStr(r.code) == "4.01" { // 4.01 with Echo: prove the address first
		m := coapRequest(coapCON, codePUT, 2, "m2", "/ps/d/co-m2/t?c=m2", []byte("2"))
		for _, o := range r.opts {
			if o.num == optEcho {
				m.opts = append(m.opts, o)
			}
		}
		r = p.do(m)
	}
	if codeStr(r.code) != "5.03" || r.uintOpt(optMaxAge) != 7 {
		t.Fatalf("PUT beyond max_connections: %s Max-Age %d, want 5.03 Max-Age 7", codeStr(r.code), r.uintOpt(optMaxAge))
	}
	sub.None(t, 300*time.Millisecond)
}

// TestCoAPTransparentObserve: an observation goes through the device's own
// connection (the broker sees its SUBSCRIBE and delivers to it); a GET reads
// a retained value through it too, so Mosquitto's read ACL applies: it grants
// a SUBSCRIBE its ACL denies (2.0 does) and delivers nothing, so the retained
// value of a topic alice may not read is not found (4.04).
func TestCoAPTransparentObserve(t *testing.T) {
	env := startCoAPTransparent(t, "", "")
	alice := "?c=a2&u=alice&p=alice-secret"
	pub := func(topic, payload string, retain bool) {
		t.Helper()
		env.b.Publish(t, mosquittotest.PubOptions{Username: "mqttgw", Password: "gw-secret", Topic: topic, Payload: []byte(payload), QoS: 1, Retain: retain})
	}
	pub("cmd/a2", "first;", true)
	if out := coapClient(t, "-m", "get", env.url("/ps/cmd/a2"+alice)); strings.TrimSpace(out) != "first;" {
		t.Fatalf("GET cmd/a2: %q, want the retained value", out)
	}
	pub("secret/k", "s", true)
	if out := coapClient(t, "-m", "get", env.url("/ps/secret/k"+alice)); !strings.Contains(out, "4.04") {
		t.Fatalf("GET secret/k, which alice may not read: %q, want 4.04", out)
	}
	o := observe(t, 30, env.url("/ps/cmd/a2"+alice))
	o.waitOutput(t, 10*time.Second, "first;")
	waitFor(t, 5*time.Second, "the device's own SUBSCRIBE", func() bool {
		return strings.Contains(env.b.Log(), "co-a2 0 cmd/a2")
	})
	pub("cmd/a2", "second;", false)
	o.waitOutput(t, 10*time.Second, "first;second;")
}

// TestCoAPTransparentSessionLost: when a device's session is lost (1.5
// keepalives of silence) its broker connection closes (DISCONNECT: it has no
// will of its own), and its return opens a new one.
func TestCoAPTransparentSessionLost(t *testing.T) {
	env := startCoAPTransparent(t, "", `keepalive = "1s"`)
	sub := env.b.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1, Topics: []string{"d/#"}})
	alice := "?c=a3&u=alice&p=alice-secret"
	coapClient(t, "-m", "put", "-e", "1", env.url("/ps/d/co-a3/t"+alice))
	sub.Expect(t, 5*time.Second, "d/co-a3/t", "1")
	waitFor(t, 10*time.Second, "the lost device's connection closed", func() bool {
		return strings.Contains(env.b.Log(), "Client co-a3 disconnected.")
	})
	if n := env.g.Metrics().Get("mqttgw_sessions_lost_total", "listener", "coap"); n != 1 {
		t.Errorf("sessions lost = %v, want 1", n)
	}
	coapClient(t, "-m", "put", "-e", "2", env.url("/ps/d/co-a3/t"+alice))
	sub.Expect(t, 5*time.Second, "d/co-a3/t", "2")
	if n := strings.Count(env.b.Log(), "as co-a3 "); n != 2 {
		t.Errorf("the broker saw co-a3 connect %d times, want 2", n)
	}
}
