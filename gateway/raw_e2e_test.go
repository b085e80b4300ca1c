package gateway

import (
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

// rawConfig is a gateway with one plain-datagram listener and one rule per payload
// kind, pointed at broker b (with TLS when caFile is set).
func rawConfig(b *mosquittotest.Broker, extra string) string {
	return upstreamTOML(b) + fmt.Sprintf(`
[[listener]]
name = "sensors"
type = "udp"
bind = "127.0.0.1:0"
dead_letter_topic = "dead/sensors"
%s
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
retain = true

[[rule]]
name = "text"
listener = "sensors"
match = { regex = '^(?P<id>[a-z0-9]+) t=(?P<t>[-0-9.]+)$' }
device = { group = "id" }
fields.t = { group = "t" }
[[rule.publish]]
topic = "text/{device}"
template = "{t}"
qos = 0

[[rule]]
name = "binary"
listener = "sensors"
match = { hex_prefix = "a1", min_len = 5, max_len = 5 }
device = { offset = 1, length = 2 }
fields.temp = { offset = 3, type = "int16", scale = 0.1 }
[[rule.publish]]
topic = "bin/{device}"
qos = 2
retain = true
[[rule.publish]]
topic = "bin/{device}/raw"
payload = "raw"
qos = 1
`, extra)
}

func reader(topics ...string) mosquittotest.SubOptions {
	return mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 2, Topics: topics}
}

// TestRawDatagramsReachMosquitto: JSON, text and binary datagrams arrive on their
// mapped topics with the configured QoS and retain flag, as mosquitto_sub sees them;
// a malformed datagram is counted and dead-lettered and the next good one arrives.
func TestRawDatagramsReachMosquitto(t *testing.T) {
	b := startMosquitto(t, false)
	g := startGateway(t, rawConfig(b, ""))
	sub := b.Subscribe(t, reader("json/#", "text/#", "bin/#", "dead/#"))

	sendUDP(t, g.Gateway, "sensors", []byte(`{"id":"k1","temp":21.5}`))
	m := sub.Expect(t, 5*time.Second, "json/k1/temp", "21.5")
	if m.QoS != 1 || m.Retain {
		t.Errorf("json: qos %d retain %v; want qos 1, retain not set on a live delivery", m.QoS, m.Retain)
	}

	sendUDP(t, g.Gateway, "sensors", []byte("dev7 t=-3.5"))
	if m := sub.Expect(t, 5*time.Second, "text/dev7", "-3.5"); m.QoS != 0 {
		t.Errorf("text: qos %d, want 0", m.QoS)
	}

	bin, _ := hex.DecodeString("a1beef00d7")
	sendUDP(t, g.Gateway, "sensors", bin)
	// A QoS 2 and a QoS 1 publish: MQTT orders flows of one QoS only (MQTT 3.1.1
	// §4.6), and Mosquitto forwards QoS 2 at PUBREL, so either may come first.
	binMsgs := map[string]mosquittotest.Message{}
	for range 2 {
		m := sub.Next(t, 5*time.Second)
		binMsgs[m.Topic] = m
	}
	if m := binMsgs["bin/beef"]; string(m.Payload) != `{"device":"beef","temp":21.5}` || m.QoS != 2 {
		t.Errorf("binary json: got %v, want qos 2", m)
	}
	if m := binMsgs["bin/beef/raw"]; string(m.Payload) != string(bin) || m.QoS != 1 {
		t.Errorf("binary raw: got %v, want qos 1", m)
	}

	// Malformed: matches no rule, counted, dead-lettered; the listener goes on.
	sendUDP(t, g.Gateway, "sensors", []byte{0xa1, 0x00})
	sub.Expect(t, 5*time.Second, "dead/sensors", "\xa1\x00")
	sendUDP(t, g.Gateway, "sensors", []byte(`{"id":"k1","temp":22}`))
	sub.Expect(t, 5*time.Second, "json/k1/temp", "22")
	if n := g.Metrics().Get("mqttgw_datagrams_total", "listener", "sensors", "outcome", "no_match"); n != 1 {
		t.Errorf("no_match counted %v times, want 1", n)
	}
	if n := g.Metrics().Get("mqttgw_datagrams_total", "listener", "sensors", "outcome", "mapped"); n != 4 {
		t.Errorf("mapped counted %v times, want 4", n)
	}

	// A subscriber that connects afterwards gets the retained values.
	late := b.Subscribe(t, reader("json/k1/temp", "bin/beef"))
	got := map[string]string{}
	for range 2 {
		m := late.Next(t, 5*time.Second)
		if !m.Retain {
			t.Errorf("late subscriber: %v is not retained", m)
		}
		got[m.Topic] = string(m.Payload)
	}
	if got["json/k1/temp"] != "22" || got["bin/beef"] != `{"device":"beef","temp":21.5}` {
		t.Errorf("retained values: %v", got)
	}
	// The gateway announced itself.
	status := b.Subscribe(t, reader("mqttgw/gwtest/status"))
	status.Expect(t, 5*time.Second, "mqttgw/gwtest/status", "online")
}

// TestUnsafeTopicValueIsRejected: a device id carrying '/' or '+' cannot add topic
// levels or wildcards; the datagram is counted and dead-lettered, nothing else sent.
func TestUnsafeTopicValueIsRejected(t *testing.T) {
	b := startMosquitto(t, false)
	g := startGateway(t, rawConfig(b, ""))
	sub := b.Subscribe(t, reader("#"))
	sub.Expect(t, 5*time.Second, "mqttgw/gwtest/status", "online") // retained, on subscribe
	sendUDP(t, g.Gateway, "sensors", []byte(`{"id":"a/b","temp":1}`))
	sub.Expect(t, 5*time.Second, "dead/sensors", `{"id":"a/b","temp":1}`)
	sendUDP(t, g.Gateway, "sensors", []byte(`{"id":"+","temp":1}`))
	sub.Expect(t, 5*time.Second, "dead/sensors", `{"id":"+","temp":1}`)
	sub.None(t, 300*time.Millisecond)
	if n := g.Metrics().Get("mqttgw_datagrams_total", "listener", "sensors", "outcome", "unsafe_topic"); n != 2 {
		t.Errorf("unsafe_topic counted %v, want 2", n)
	}
}

// TestTLSUpstream: the gateway reaches a TLS-only Mosquitto over ssl:// with the CA
// file generated by the test.
func TestTLSUpstream(t *testing.T) {
	b := startMosquitto(t, true)
	g := startGateway(t, rawConfig(b, ""))
	sub := b.Subscribe(t, reader("json/#"))
	sendUDP(t, g.Gateway, "sensors", []byte(`{"id":"tls","temp":5}`))
	sub.Expect(t, 5*time.Second, "json/tls/temp", "5")
}

// TestTLSUpstreamWrongCA: a CA that did not sign the broker's certificate keeps the
// gateway disconnected (and it says so) rather than falling back to plain text.
func TestTLSUpstreamWrongCA(t *testing.T) {
	b := startMosquitto(t, true)
	other := startMosquitto(t, true) // its CA did not sign b's certificate
	b.CAFile = other.CAFile
	g := newGateway(t, rawConfig(b, ""))
	g.start(t)
	time.Sleep(time.Second)
	if g.Proxy().Connected() {
		t.Fatal("connected to a broker whose certificate the configured CA did not sign")
	}
}

// TestBrokerRestart: Mosquitto (with persistence, as deployed) stops and starts on
// the same port; the gateway's will turns its status offline, the gateway
// reconnects by itself, says online again, and datagrams flow again — including
// the QoS 1 ones that arrived while the broker was away.
func TestBrokerRestart(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{Users: brokerUser,
		Extra: "persistence true\npersistence_location " + t.TempDir() + "/"})
	g := startGateway(t, rawConfig(b, ""))
	watch := reader("mqttgw/gwtest/status", "json/#")
	watch.ClientID, watch.CleanSession = "watcher", false // a persistent session: it sees what happened while away
	sub := b.Subscribe(t, watch)
	sub.Expect(t, 5*time.Second, "mqttgw/gwtest/status", "online")
	sendUDP(t, g.Gateway, "sensors", []byte(`{"id":"r","temp":1}`))
	sub.Expect(t, 5*time.Second, "json/r/temp", "1")
	sub.Close()

	b.Stop()
	waitFor(t, 5*time.Second, "the gateway to notice the broker is gone", func() bool { return !g.Proxy().Connected() })
	// Sent while the broker is down: held in the store-and-forward queue.
	sendUDP(t, g.Gateway, "sensors", []byte(`{"id":"r","temp":2}`))
	waitFor(t, 5*time.Second, "the datagram to be queued", func() bool {
		return g.Metrics().Get("mqttgw_upstream_queue_length") == 1
	})
	b.Restart()

	sub = b.Subscribe(t, watch)
	// Mosquitto published the gateway's will when it shut down (the watcher gets it
	// queued, and again as the retained value); then the gateway reconnected and
	// said online; then the queued message went out.
	offline := 0
	for {
		m := sub.Next(t, 10*time.Second)
		if m.Topic == "json/r/temp" && m.Retain && string(m.Payload) == "1" {
			continue // the retained value from before the restart, resent on subscribe
		}
		if m.Topic != "mqttgw/gwtest/status" {
			t.Fatalf("got %v before the status went online", m)
		}
		if string(m.Payload) == "online" {
			break
		}
		offline++
	}
	if offline == 0 {
		t.Fatal("status went online again without going offline first")
	}
	sub.Expect(t, 10*time.Second, "json/r/temp", "2")
	sendUDP(t, g.Gateway, "sensors", []byte(`{"id":"r","temp":3}`))
	sub.Expect(t, 5*time.Second, "json/r/temp", "3")
}

// TestShutdownDrainsAndSaysOffline: stopping the gateway delivers what it accepted
// and leaves its status retained offline.
func TestShutdownDrainsAndSaysOffline(t *testing.T) {
	b := startMosquitto(t, false)
	g := startGateway(t, rawConfig(b, ""))
	sub := b.Subscribe(t, reader("json/#"))
	for i := range 50 {
		sendUDP(t, g.Gateway, "sensors", []byte(fmt.Sprintf(`{"id":"d","temp":%d}`, i)))
	}
	waitFor(t, 5*time.Second, "all 50 datagrams read", func() bool {
		return g.Metrics().Get("mqttgw_datagrams_total", "listener", "sensors", "outcome", "mapped") == 50
	})
	g.stop(t)
	for i := range 50 {
		sub.Expect(t, 5*time.Second, "json/d/temp", fmt.Sprint(i))
	}
	status := b.Subscribe(t, reader("mqttgw/gwtest/status"))
	status.Expect(t, 5*time.Second, "mqttgw/gwtest/status", "offline")
}

// TestWrongBrokerPassword: Mosquitto refuses the gateway; it stays disconnected
// and keeps datagrams queued instead of losing them.
func TestWrongBrokerPassword(t *testing.T) {
	b := startMosquitto(t, false)
	cfg := rawConfig(b, "")
	g := newGateway(t, replaceOnce(t, cfg, `password = "gw-secret"`, `password = "wrong"`))
	g.start(t)
	sendUDP(t, g, "sensors", []byte(`{"id":"x","temp":1}`))
	waitFor(t, 5*time.Second, "the datagram to be queued", func() bool {
		return g.Metrics().Get("mqttgw_upstream_queue_length") == 1
	})
	if g.Proxy().Connected() {
		t.Fatal("connected with a wrong password")
	}
}
