package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/gateway"
	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

func TestParseCoAPURL(t *testing.T) {
	tests := []struct {
		in     string
		host   string
		path   string
		query  []string
		secure bool
		bad    bool
	}{
		{in: "coap://127.0.0.1/ps/a/b", host: "127.0.0.1:5683", path: "/ps/a/b"},
		{in: "coaps://127.0.0.1/ps/a", host: "127.0.0.1:5684", path: "/ps/a", secure: true},
		{in: "coap://[::1]:6000/ps/x?c=dev&qos=1", host: "[::1]:6000", path: "/ps/x", query: []string{"c=dev", "qos=1"}},
		{in: "coap://h/ps/%23?c=a%26b", host: "h:5683", path: "/ps/#", query: []string{"c=a&b"}},
		{in: "http://h/ps/x", bad: true},
		{in: "coap:///ps/x", bad: true},
	}
	for _, tt := range tests {
		got, err := parseCoAPURL(tt.in)
		if tt.bad {
			if err == nil {
				t.Errorf("%s: accepted", tt.in)
			}
			continue
		}
		if err != nil || got.host != tt.host || got.path != tt.path || got.secure != tt.secure || strings.Join(got.query, "&") != strings.Join(tt.query, "&") {
			t.Errorf("%s: %+v, %v", tt.in, got, err)
		}
	}
}

// startCoAPGateway runs Mosquitto and a gateway with a coap and a coaps
// listener; it returns the broker and the two addresses.
func startCoAPGateway(t *testing.T) (b *mosquittotest.Broker, g *gateway.Gateway, plain, secure string) {
	t.Helper()
	b = mosquittotest.Start(t, mosquittotest.Options{Users: map[string]string{"mqttgw": "gw-secret", "reader": "reader-secret"}})
	psk := filepath.Join(t.TempDir(), "psk")
	if err := os.WriteFile(psk, []byte(fmt.Sprintf("cli-dev:%x\n", "cli-key")), 0o600); err != nil {
		t.Fatal(err)
	}
	g = runGateway(t, fmt.Sprintf(`
[upstream]
url = %q
username = "mqttgw"
password = "gw-secret"
publish_timeout = "2s"
[auth]
psk_file = %q
[[listener]]
name = "coap"
type = "coap"
bind = "127.0.0.1:0"
[[listener]]
name = "coaps"
type = "coaps"
bind = "127.0.0.2:0"
`, b.URL, psk))
	return b, g, g.ListenerAddr("coap").String(), g.ListenerAddr("coaps").String()
}

// TestCoAPPubSubTools runs `mqttgw pub --coap` and `mqttgw sub --coap` against
// a gateway and a real Mosquitto, over coap:// and coaps://.
func TestCoAPPubSubTools(t *testing.T) {
	b, _, plain, secure := startCoAPGateway(t)
	reader := b.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1, Topics: []string{"cli/#"}})

	var out, errs syncBuffer
	if code := run([]string{"pub", "--coap", "coap://" + plain + "/ps/cli/t", "-m", "hello", "-r"}, &out, &errs); code != 0 {
		t.Fatalf("pub: exit %d: %s", code, errs.String())
	}
	reader.Expect(t, 5*time.Second, "cli/t", "hello")
	// The key in hex, as the psk_file has it (636c692d6b6579 is "cli-key"),
	// and as the README's coaps example gives it.
	if code := run([]string{"pub", "--coap", "coaps://" + secure + "/ps/cli/s", "-m", "sealed", "--non", "-q", "1",
		"--psk-identity", "cli-dev", "--psk-key", "636c692d6b6579"}, &out, &errs); code != 0 {
		t.Fatalf("pub coaps: exit %d: %s", code, errs.String())
	}
	reader.Expect(t, 5*time.Second, "cli/s", "sealed")
	// The same with -h and -p: the PSK flags choose coaps.
	host, port, _ := net.SplitHostPort(secure)
	if code := run([]string{"pub", "--coap", "-h", host, "-p", port, "-t", "cli/s2", "-m", "sealed too",
		"--psk-identity", "cli-dev", "--psk-key", "636c692d6b6579"}, &out, &errs); code != 0 {
		t.Fatalf("pub coaps with -h/-p: exit %d: %s", code, errs.String())
	}
	reader.Expect(t, 5*time.Second, "cli/s2", "sealed too")
	// The key as text, as --psk-key took it before, is bad usage now: the
	// README's hex key used to be taken as text, and the handshake hung.
	var e2 syncBuffer
	if code := run([]string{"pub", "--coap", "coaps://" + secure + "/ps/cli/s", "-m", "x",
		"--psk-identity", "cli-dev", "--psk-key", "cli-key"}, &out, &e2); code != 2 || !strings.Contains(e2.String(), "want the key in hex") {
		t.Fatalf("pub coaps with a text key: exit %d, stderr %q; want 2 and the hex hint", code, e2.String())
	}
	if code := run([]string{"pub", "--coap", "coap://" + plain + "/elsewhere", "-m", "x"}, &out, &errs); code != 1 || !strings.Contains(errs.String(), "4.04") {
		t.Fatalf("pub to an unknown path: exit %d, stderr %q", code, errs.String())
	}

	// sub: the retained value first, then two more, then exit after -C 3.
	var subOut, subErr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"sub", "--coap", "coap://" + plain + "/ps/cli/t", "-i", "cli-sub", "-C", "3", "-W", "20"}, &subOut, &subErr)
	}()
	if poll(10*time.Second, func() (bool, error) { return strings.Contains(subOut.String(), "hello\n"), nil }) != nil {
		t.Fatalf("sub printed %q, %q", subOut.String(), subErr.String())
	}
	b.Publish(t, mosquittotest.PubOptions{Username: "reader", Password: "reader-secret", Topic: "cli/t", Payload: []byte("two"), QoS: 1})
	b.Publish(t, mosquittotest.PubOptions{Username: "reader", Password: "reader-secret", Topic: "cli/t", Payload: []byte("three"), QoS: 1})
	select {
	case code := <-done:
		if code != 0 || subOut.String() != "hello\ntwo\nthree\n" {
			t.Fatalf("sub: exit %d, printed %q, stderr %q", code, subOut.String(), subErr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("sub did not exit after -C 3")
	}
}

// TestCoAPBenchSmall runs the load tool once with a tiny load: it must finish,
// see every message and exit 0.
func TestCoAPBenchSmall(t *testing.T) {
	b, _, plain, _ := startCoAPGateway(t)
	var out, errs syncBuffer
	code := run([]string{"bench", "--coap", "coap://" + plain, "--mqtt", b.URL, "-u", "reader", "-P", "reader-secret",
		"--devices", "5", "--requests", "50", "--observers", "3", "--notifications", "5", "--duration-limit", "20s"}, &out, &errs)
	if code != 0 {
		t.Fatalf("bench: exit %d\n%s\n%s", code, out.String(), errs.String())
	}
	for _, want := range []string{"gateway CoAP CON", "direct MQTT QoS 1", "gateway CoAP NON", "direct MQTT QoS 0", "gateway CoAP observers", "50/50", "15/15"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if code := run([]string{"bench", "--coap", "coap://192.0.2.1:5683", "--mqtt", b.URL}, &out, &errs); code != 2 {
		t.Errorf("a non-loopback target: exit %d, want 2", code)
	}
}

// TestCoAPBenchDeviceCredentials: against a listener that checks passwords,
// the load tool without device credentials stops with the gateway's 4.01 (it
// used to panic), and with --device-user/--device-pass it runs.
func TestCoAPBenchDeviceCredentials(t *testing.T) {
	mosquittotest.RequireTools(t, "mosquitto_passwd")
	b := mosquittotest.Start(t, mosquittotest.Options{Users: map[string]string{"mqttgw": "gw-secret", "reader": "reader-secret"}})
	pw := filepath.Join(t.TempDir(), "pw")
	if out, err := exec.Command("mosquitto_passwd", "-c", "-b", pw, "dev", "dev-secret").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v: %s", err, out)
	}
	g := runGateway(t, fmt.Sprintf(`
[upstream]
url = %q
username = "mqttgw"
password = "gw-secret"
[auth]
password_file = %q
allow_anonymous = false
[[listener]]
name = "coap"
type = "coap"
bind = "127.0.0.1:0"
`, b.URL, pw))
	args := []string{"bench", "--coap", "coap://" + g.ListenerAddr("coap").String(), "--mqtt", b.URL, "-u", "reader", "-P", "reader-secret",
		"--devices", "2", "--requests", "10", "--observers", "2", "--notifications", "3", "--duration-limit", "20s"}
	var out, errs syncBuffer
	if code := run(args, &out, &errs); code != 1 || !strings.Contains(errs.String(), "4.01") || !strings.Contains(errs.String(), "--device-user") {
		t.Fatalf("without device credentials: exit %d, stderr %q", code, errs.String())
	}
	var out2, errs2 syncBuffer
	if code := run(append(args, "--device-user", "dev", "--device-pass", "dev-secret"), &out2, &errs2); code != 0 {
		t.Fatalf("with device credentials: exit %d\n%s\n%s", code, out2.String(), errs2.String())
	}
	if !strings.Contains(out2.String(), "6/6") {
		t.Errorf("observers did not get every message:\n%s", out2.String())
	}
}
