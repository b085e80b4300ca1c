package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/gateway"
	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

// startSNGateway runs Mosquitto and a gateway with an MQTT-SN listener; it
// returns the broker and the listener's address.
func startSNGateway(t *testing.T) (*mosquittotest.Broker, *gateway.Gateway, string) {
	t.Helper()
	b := mosquittotest.Start(t, mosquittotest.Options{Users: map[string]string{"mqttgw": "gw-secret", "reader": "reader-secret"}})
	g := runGateway(t, fmt.Sprintf(`
[upstream]
url = %q
username = "mqttgw"
password = "gw-secret"
[[mqttsn.predefined]]
id = 5
topic = "cli/pre"
[[listener]]
name = "sn"
type = "mqttsn"
bind = "127.0.0.1:0"
[listener.mqttsn]
retry_interval = "300ms"
`, b.URL))
	return b, g, g.ListenerAddr("sn").String()
}

// TestMQTTSNPubSub runs `mqttgw sub` and `mqttgw pub` against a gateway: QoS 1
// and 2 by name, QoS -1 by predefined id from no connection, and a will
// published when a client sent to sleep with --sleep never wakes.
func TestMQTTSNPubSub(t *testing.T) {
	_, g, addr := startSNGateway(t)
	var out, serr syncBuffer
	subDone := make(chan int, 1)
	go func() {
		subDone <- run([]string{"sub", "--mqttsn", addr, "-t", "cli/#", "-q", "1", "-v", "-C", "4", "-W", "30", "--retry", "300ms", "-i", "cli-sub"}, &out, &serr)
	}()
	waitCond(t, "the sub's SUBACK", func() bool {
		return g.Metrics().Get("mqttgw_mqttsn_messages_total", "listener", "sn", "direction", "out", "type", "SUBACK") == 1
	})
	pub := func(args ...string) {
		t.Helper()
		var o, e bytes.Buffer
		args = append([]string{"pub", "--mqttsn", addr, "--retry", "300ms"}, args...)
		if rc := run(args, &o, &e); rc != 0 {
			t.Fatalf("mqttgw %s: exit %d: %s", strings.Join(args, " "), rc, e.String())
		}
	}
	pub("-t", "cli/a", "-m", "hello", "-q", "1")
	pub("-t", "cli/b", "-m", "exactly once", "-q", "2", "-r")
	pub("--predefined", "5", "-m", "minus one", "-q", "-1")
	pub("-t", "cli/c", "-m", "asleep", "-q", "0", "-k", "1s", "--sleep", "1s", "--will-topic", "cli/will", "--will-message", "overslept", "-i", "sleeper")
	select {
	case rc := <-subDone:
		if rc != 0 {
			t.Fatalf("sub: exit %d: %s", rc, serr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("sub did not exit after -C 4")
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{"cli/a hello", "cli/b exactly once", "cli/pre minus one", "cli/c asleep"}
	// The will comes 1.5 s after the sleep began, after "asleep": -C 4 stops before it.
	if len(lines) != 4 {
		t.Fatalf("sub printed %q, want %q", lines, want)
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("line %d = %q, want %q", i, lines[i], want[i])
		}
	}
	// The will of the client that never woke, seen by a new subscriber.
	var out2, e2 syncBuffer
	if rc := run([]string{"sub", "--mqttsn", addr, "-t", "cli/will", "-C", "1", "-W", "10", "--retry", "300ms"}, &out2, &e2); rc != 0 {
		t.Fatalf("sub cli/will: exit %d: %s", rc, e2.String())
	}
	if got := strings.TrimSpace(out2.String()); got != "overslept" {
		t.Fatalf("will: %q", got)
	}
}

func TestMQTTSNUsage(t *testing.T) {
	for _, args := range [][]string{
		{"pub", "--mqttsn", "127.0.0.1:1", "-t", "a/b", "-m", "x", "-q", "-1"},          // QoS -1 needs a predefined or short id
		{"pub", "--mqttsn", "127.0.0.1:1", "-t", "a/b"},                                 // no message
		{"pub", "--mqttsn", "127.0.0.1:1", "--short", "abc", "-m", "x"},                 // not two characters
		{"pub", "--mqttsn", "127.0.0.1:1", "-t", "a", "-m", "x", "--will-message", "m"}, // will message without topic
		{"sub", "--mqttsn", "127.0.0.1:1", "-t", "a", "-q", "3"},
		{"sub", "--mqttsn", "127.0.0.1:1"},
		{"bench", "--mqttsn", "10.1.2.3:1884", "--mqtt", "tcp://127.0.0.1:1883"}, // loopback only
		{"bench", "--clients", "0"},
	} {
		var o, e bytes.Buffer
		if rc := run(args, &o, &e); rc != 2 {
			t.Errorf("mqttgw %s: exit %d, want 2 (usage); stderr %s", strings.Join(args, " "), rc, e.String())
		}
	}
}

// TestMQTTSNBench runs the load tool on a small load, both phases.
func TestMQTTSNBench(t *testing.T) {
	b, _, addr := startSNGateway(t)
	var o, e bytes.Buffer
	rc := run([]string{"bench", "--mqttsn", addr, "--mqtt", b.URL, "-u", "reader", "-P", "reader-secret",
		"--clients", "5", "--messages", "4", "--qos", "1", "--duration-limit", "30s"}, &o, &e)
	if rc != 0 {
		t.Fatalf("bench: exit %d\n%s\n%s", rc, o.String(), e.String())
	}
	for _, want := range []string{"gateway (MQTT-SN)", "direct (MQTT)", "20/20", "messages/s", "latency p99"} {
		if !strings.Contains(o.String(), want) {
			t.Errorf("bench output lacks %q:\n%s", want, o.String())
		}
	}
}

// TestMQTTSNSPubSub runs `mqttgw sub` and `mqttgw pub` over DTLS against an
// mqttsns listener: the PSK identity and the key in hex, as the psk_file has
// it (identity:hexkey); the identity is the client id. A wrong key fails the
// handshake (exit 1); a key that is not hex, or mqttsns:// without a key, is
// bad usage (exit 2).
func TestMQTTSNSPubSub(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{Users: map[string]string{"mqttgw": "gw-secret", "reader": "reader-secret"}})
	psk := filepath.Join(t.TempDir(), "psk")
	// 73656e736f722d6b6579 is "sensor-key"; 6f746865722d6b6579 is "other-key".
	if err := os.WriteFile(psk, []byte("node7:73656e736f722d6b6579\nnode8:6f746865722d6b6579\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g := runGateway(t, fmt.Sprintf(`
[upstream]
url = %q
username = "mqttgw"
password = "gw-secret"
[auth]
psk_file = %q
[[listener]]
name = "sns"
type = "mqttsns"
bind = "127.0.0.1:0"
[listener.mqttsn]
retry_interval = "300ms"
handshake_timeout = "1s"
`, b.URL, psk))
	url := "mqttsns://" + g.ListenerAddr("sns").String()
	reader := b.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1, Topics: []string{"cli/#"}})

	var out, serr syncBuffer
	subDone := make(chan int, 1)
	go func() {
		subDone <- run([]string{"sub", "--mqttsn", url, "--psk-identity", "node8", "--psk-key", "6f746865722d6b6579",
			"-t", "cli/#", "-q", "1", "-v", "-C", "1", "-W", "30", "--retry", "300ms"}, &out, &serr)
	}()
	waitCond(t, "the sub's SUBACK", func() bool {
		return g.Metrics().Get("mqttgw_mqttsn_messages_total", "listener", "sns", "direction", "out", "type", "SUBACK") == 1
	})
	var o, e bytes.Buffer
	if rc := run([]string{"pub", "--mqttsn", url, "--psk-identity", "node7", "--psk-key", "73656e736f722d6b6579",
		"-t", "cli/sealed", "-m", "over dtls", "-q", "1", "--retry", "300ms"}, &o, &e); rc != 0 {
		t.Fatalf("pub: exit %d: %s", rc, e.String())
	}
	reader.Expect(t, 5*time.Second, "cli/sealed", "over dtls")
	select {
	case rc := <-subDone:
		if rc != 0 {
			t.Fatalf("sub: exit %d: %s", rc, serr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("sub did not exit after -C 1")
	}
	if got := strings.TrimSpace(out.String()); got != "cli/sealed over dtls" {
		t.Errorf("sub printed %q", got)
	}

	o.Reset()
	e.Reset()
	if rc := run([]string{"pub", "--mqttsn", url, "--psk-identity", "node7", "--psk-key", "77726f6e67",
		"-t", "cli/sealed", "-m", "forged", "-q", "1", "--retry", "300ms"}, &o, &e); rc != 1 || !strings.Contains(e.String(), "DTLS handshake") {
		t.Errorf("pub with a wrong key: exit %d, stderr %q; want 1 and the failed handshake", rc, e.String())
	}
	for _, args := range [][]string{
		{"pub", "--mqttsn", url, "-t", "a", "-m", "x"},                                                       // no PSK
		{"pub", "--mqttsn", url, "--psk-identity", "node7", "--psk-key", "sensor-key", "-t", "a", "-m", "x"}, // not hex
		{"sub", "--mqttsn", "127.0.0.1:1", "--psk-identity", "node7", "--psk-key", "00", "-t", "a"},          // PSK without mqttsns://
		{"pub", "--mqttsn", "tcp://127.0.0.1:1", "-t", "a", "-m", "x"},                                       // unknown scheme
	} {
		var o, e bytes.Buffer
		if rc := run(args, &o, &e); rc != 2 {
			t.Errorf("mqttgw %s: exit %d, want 2 (usage); stderr %s", strings.Join(args, " "), rc, e.String())
		}
	}
	reader.None(t, 300*time.Millisecond)
}

// TestMQTTSNSubPersistentGetsQoS0WhileAway: `mqttgw sub -c` (CleanSession
// false) exits; a QoS 0 message published while it is away is buffered by the
// gateway; the next `sub -c` with the same client id is a new process that
// knows none of the old topic ids: the gateway REGISTERs the topic again
// before the PUBLISH, so the message is printed, not rejected as "invalid
// topic ID" (issue 12, point 11).
func TestMQTTSNSubPersistentGetsQoS0WhileAway(t *testing.T) {
	b, g, addr := startSNGateway(t)
	sub := func(count string) (int, string) {
		var out, serr syncBuffer
		rc := run([]string{"sub", "--mqttsn", addr, "-c", "-i", "away-sub", "-t", "away/#", "-q", "0", "-v", "-C", count, "-W", "10", "--retry", "300ms"}, &out, &serr)
		return rc, out.String() + serr.String()
	}
	first := make(chan int, 1)
	go func() { rc, _ := sub("1"); first <- rc }()
	waitCond(t, "the first sub's SUBACK", func() bool {
		return g.Metrics().Get("mqttgw_mqttsn_messages_total", "listener", "sn", "direction", "out", "type", "SUBACK") == 1
	})
	b.Publish(t, mosquittotest.PubOptions{Username: "mqttgw", Password: "gw-secret", Topic: "away/first", Payload: []byte("1"), QoS: 0})
	if rc := <-first; rc != 0 {
		t.Fatalf("first sub: exit %d", rc)
	}
	// The same topic: the gateway registered its id with the first process.
	b.Publish(t, mosquittotest.PubOptions{Username: "mqttgw", Password: "gw-secret", Topic: "away/first", Payload: []byte("while away"), QoS: 0})
	waitCond(t, "the message buffered for the sub", func() bool {
		return g.Metrics().Get("mqttgw_mqttsn_buffered_messages", "listener", "sn") >= 1
	})
	rc, out := sub("1")
	if rc != 0 || !strings.Contains(out, "away/first while away") {
		t.Fatalf("second sub: exit %d, output %q: want the message published while it was away", rc, out)
	}
}
