package gateway

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/mqttsn"
)

// transparentACL is the test broker's own ACL: the gateway's account may do
// anything, a device's account only what is below its broker client id.
const transparentACL = `user mqttgw
topic readwrite #
user reader
topic read #
user dev
topic read cmd/#
pattern write d/%c/#
pattern write will/%c
`

// startTransparent starts a Mosquitto with its own password file and ACL and a
// gateway whose MQTT-SN listener "sn" relays each device over its own
// connection as user "dev", client id "sn-" + device id.
func startTransparent(t *testing.T, extra string) (*mosquittotest.Broker, *runningGateway, string) {
	t.Helper()
	b := mosquittotest.Start(t, mosquittotest.Options{
		Users: map[string]string{"mqttgw": "gw-secret", "reader": "reader-secret", "dev": "dev-secret"},
		ACL:   transparentACL,
	})
	g := startGateway(t, upstreamTOML(b)+transparentListener(extra))
	return b, g, g.ListenerAddr("sn").String()
}

func transparentListener(extra string) string {
	return fmt.Sprintf(`
[[listener]]
name = "sn"
type = "mqttsn"
bind = "127.0.0.1:0"
mode = "transparent"
client_id_prefix = "sn-"
[listener.transparent]
username = "dev"
password = "dev-secret"
%s
[listener.mqttsn]
retry_interval = "200ms"
max_retries = 3
`, extra)
}

func dialSN(t *testing.T, addr string, o mqttsn.ClientOptions) *mqttsn.Client {
	t.Helper()
	o.RetryInterval, o.MaxRetries = 300*time.Millisecond, 5
	c, err := mqttsn.Dial(snCtx(t), addr, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Connect(snCtx(t)); err != nil {
		t.Fatalf("connect %s: %v", o.ClientID, err)
	}
	return c
}

// TestTransparentBrokerEnforcesItsACL: a device's publishes reach the broker
// under its own identity, so Mosquitto's ACL applies: below its client id is
// delivered, a topic the gateway's own account could write is not.
func TestTransparentBrokerEnforcesItsACL(t *testing.T) {
	b, _, addr := startTransparent(t, "")
	sub := b.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1, Topics: []string{"d/#", "other/#"}})
	c := dialSN(t, addr, mqttsn.ClientOptions{ClientID: "dev1"})
	if err := c.Publish(snCtx(t), "other/x", 1, false, []byte("not mine")); err != nil {
		t.Fatal(err) // MQTT 3.1.1 brokers acknowledge a denied publish and drop it
	}
	if err := c.Publish(snCtx(t), "d/sn-dev1/t", 1, false, []byte("21.5")); err != nil {
		t.Fatal(err)
	}
	m := sub.Next(t, 5*time.Second)
	if m.Topic != "d/sn-dev1/t" {
		t.Fatalf("first delivery %s %q: the broker let the device write where only the gateway's account may", m.Topic, m.Payload)
	}
	if !strings.Contains(b.Log(), "New client connected from") || !strings.Contains(b.Log(), "as sn-dev1") {
		t.Errorf("the broker never saw client sn-dev1:\n%s", b.Log())
	}
}

// TestTransparentWillAndDisconnect: DISCONNECT ends the device's connection
// without its will; a session lost after 1.5 keepalives of silence makes the
// broker publish the will, once (the gateway does not publish it too).
func TestTransparentWillAndDisconnect(t *testing.T) {
	b, g, addr := startTransparent(t, "")
	sub := b.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1, Topics: []string{"will/#", "d/#"}})
	will := &mqttsn.Will{Topic: "will/sn-w1", Payload: []byte("gone"), QoS: 1}
	c := dialSN(t, addr, mqttsn.ClientOptions{ClientID: "w1", Will: will})
	if err := c.Disconnect(snCtx(t)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the device's broker connection closed", func() bool {
		return strings.Contains(b.Log(), "Client sn-w1 disconnected.")
	})
	if err := dialSN(t, addr, mqttsn.ClientOptions{ClientID: "marker"}).Publish(snCtx(t), "d/sn-marker/m", 1, false, []byte("m")); err != nil {
		t.Fatal(err)
	}
	sub.Expect(t, 5*time.Second, "d/sn-marker/m", "m") // no will before the marker

	lost := dialSN(t, addr, mqttsn.ClientOptions{ClientID: "w2", Keepalive: time.Second,
		Will: &mqttsn.Will{Topic: "will/sn-w2", Payload: []byte("lost"), QoS: 1}})
	lost.Close() // silent from now on
	sub.Expect(t, 10*time.Second, "will/sn-w2", "lost")
	sub.None(t, 500*time.Millisecond)
	if v := g.metrics.Get("mqttgw_wills_published_total", "listener", "sn"); v != 0 {
		t.Errorf("the gateway published %v wills itself, want 0 (the broker does)", v)
	}
}

// TestTransparentPersistentAcrossGatewayRestart: a persistent device's
// subscription and the QoS 1 messages published while it was away are held
// by Mosquitto, and reach it when it reconnects through a restarted gateway.
func TestTransparentPersistentAcrossGatewayRestart(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{
		Users: map[string]string{"mqttgw": "gw-secret", "reader": "reader-secret", "dev": "dev-secret"},
		ACL:   transparentACL,
	})
	cfg := upstreamTOML(b) + transparentListener("")
	first := startGateway(t, cfg)
	c := dialSN(t, first.ListenerAddr("sn").String(), mqttsn.ClientOptions{ClientID: "p1", CleanSession: false})
	if _, _, err := c.Subscribe(snCtx(t), "cmd/p1", 1); err != nil {
		t.Fatal(err)
	}
	c.Close()
	first.stop(t) // a clean stop: DISCONNECT, the broker keeps the session
	for i := range 3 {
		b.Publish(t, mosquittotest.PubOptions{Username: "mqttgw", Password: "gw-secret", Topic: "cmd/p1", Payload: []byte(fmt.Sprint("held-", i)), QoS: 1})
	}

	second := startGateway(t, cfg)
	in := newSNInbox()
	c2 := dialSN(t, second.ListenerAddr("sn").String(), mqttsn.ClientOptions{ClientID: "p1", CleanSession: false, OnMessage: in.on})
	// MQTT-SN has no session-present flag: a device that finds a new gateway
	// subscribes again, and then gets what the broker held.
	if _, _, err := c2.Subscribe(snCtx(t), "cmd/p1", 1); err != nil {
		t.Fatal(err)
	}
	got := in.wait(t, 3)
	for i, m := range got {
		if want := fmt.Sprint("held-", i); m.payload != want || m.topic != "cmd/p1" {
			t.Errorf("message %d: %s %q, want cmd/p1 %q", i, m.topic, m.payload, want)
		}
	}
}

// TestTransparentRefusals: a device the broker refuses (wrong password) and a
// device beyond max_connections get CONNACK refusals, not a session.
func TestTransparentRefusals(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{
		Users: map[string]string{"mqttgw": "gw-secret", "reader": "reader-secret", "dev": "dev-secret"},
		ACL:   transparentACL,
	})
	bad := strings.Replace(transparentListener("max_connections = 1"), `password = "dev-secret"`, `password = "wrong"`, 1)
	g := startGateway(t, upstreamTOML(b)+bad)
	c, err := mqttsn.Dial(snCtx(t), g.ListenerAddr("sn").String(), mqttsn.ClientOptions{ClientID: "r1", RetryInterval: 300 * time.Millisecond, MaxRetries: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Connect(snCtx(t)); !errors.Is(err, mqttsn.NotSupported) {
		t.Fatalf("connect with credentials the broker refuses: %v, want rejected: not supported", err)
	}

	_, _, addr := startTransparent(t, "max_connections = 1")
	dialSN(t, addr, mqttsn.ClientOptions{ClientID: "m1"})
	c2, err := mqttsn.Dial(snCtx(t), addr, mqttsn.ClientOptions{ClientID: "m2", RetryInterval: 300 * time.Millisecond, MaxRetries: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.Connect(snCtx(t)); !errors.Is(err, mqttsn.Congestion) {
		t.Fatalf("connect beyond max_connections: %v, want rejected: congestion", err)
	}
}
