package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

// TestBenchUDP runs bench --udp against the two plain-UDP listeners the
// matrix generates (rawBenchRules): QoS 0 fire and forget, and QoS 1 on the
// rule's ack at a fixed rate. Every datagram must arrive; no timing is checked.
func TestBenchUDP(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{Users: map[string]string{"mqttgw": "gw-secret", "reader": "reader-secret"}})
	g := runGateway(t, fmt.Sprintf(`
[upstream]
url = %q
username = "mqttgw"
password = "gw-secret"
[[listener]]
name = "udp0"
type = "udp"
bind = "127.0.0.1:0"
[[listener]]
name = "udp1"
type = "udp"
bind = "127.0.0.1:0"
%s`, b.URL, rawBenchRules("udp0", "udp1", "mqttgw-bench")))
	for _, tc := range []struct {
		listener string
		extra    []string
		want     []string
	}{
		{"udp0", []string{"--qos", "0"}, []string{"gateway (plain UDP)", "direct (MQTT)", "15/15", "kernel drops"}},
		{"udp1", []string{"--qos", "1", "--rate", "300"}, []string{"gateway (plain UDP)", "15/15", "acknowledged", "latency p99.9"}},
	} {
		var o, e syncBuffer
		args := append([]string{"bench", "--udp", g.ListenerAddr(tc.listener).String(), "--mqtt", b.URL, "-u", "reader", "-P", "reader-secret",
			"--clients", "3", "--messages", "5", "--duration-limit", "20s"}, tc.extra...)
		if rc := run(args, &o, &e); rc != 0 {
			t.Fatalf("%s: exit %d\n%s\n%s", strings.Join(args, " "), rc, o.String(), e.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(o.String(), w) {
				t.Errorf("%s: report lacks %q:\n%s", tc.listener, w, o.String())
			}
		}
		if !strings.Contains(o.String(), "lost") {
			t.Errorf("%s: report lacks the lost row:\n%s", tc.listener, o.String())
		}
	}
}

// TestBenchUsage: the flags of one load are refused with another.
func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--udp", "127.0.0.1:1885", "--coap"},
		{"bench", "--udp", "127.0.0.1:1885", "--qos", "2"},
		{"bench", "--udp", "10.1.2.3:1885"},
		{"bench", "--scale", "0.1"},
		{"bench", "--matrix", "--clients", "3"},
		{"bench", "--matrix", "--scale", "0"},
		{"bench", "--rate", "-1"},
	} {
		var o, e syncBuffer
		if rc := run(args, &o, &e); rc != 2 {
			t.Errorf("mqttgw %s: exit %d, want 2 (usage); stderr %s", strings.Join(args, " "), rc, e.String())
		}
	}
}

// TestBenchMatrixSmall runs the whole matrix, as make bench does, on a tiny
// load: its own Mosquitto and the built gateway, every row present, nothing
// lost, the table written to --out. No timing is checked.
func TestBenchMatrixSmall(t *testing.T) {
	mosquittotest.RequireTools(t, "mosquitto")
	bin := buildBinary(t)
	out := filepath.Join(t.TempDir(), "bench.md")
	var o, e syncBuffer
	rc := run([]string{"bench", "--matrix", "--gateway-bin", bin, "--scale", "0.01", "--max-clients", "3", "--pin=false",
		"--duration-limit", "30s", "--out", out}, &o, &e)
	if rc != 0 {
		t.Fatalf("bench --matrix: exit %d\n%s\n%s", rc, o.String(), e.String())
	}
	table, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if string(table) != o.String() {
		t.Errorf("--out differs from standard output:\n%s\n---\n%s", table, o.String())
	}
	for _, path := range []string{
		"MQTT-SN QoS 0, 3 clients", "MQTT-SN QoS 1, 3 clients", "plain UDP QoS 0", "plain UDP QoS 1 (acked)",
		"CoAP NON", "CoAP CON", "CoAP 3 observers", "MQTT-SN QoS 1 at 1000 msgs/s",
	} {
		var line string
		for _, l := range strings.Split(string(table), "\n") {
			if strings.HasPrefix(l, "| "+path) {
				line = l
				break
			}
		}
		switch {
		case line == "":
			t.Errorf("no row %q:\n%s", path, table)
		case !strings.Contains(line, "| 0/0 |"):
			t.Errorf("row %q lost messages: %s", path, line)
		}
	}
	if n := strings.Count(string(table), "\n| MQTT-SN QoS"); n != 5 {
		t.Errorf("%d MQTT-SN rows, want 5 (QoS 0/1 × 20/200 clients, the fixed rate):\n%s", n, table)
	}
	for _, w := range []string{"| path | direct msgs/s | gateway msgs/s | ratio | goal |", "Gateway RSS after the matrix"} {
		if !strings.Contains(string(table), w) {
			t.Errorf("table lacks %q:\n%s", w, table)
		}
	}
	if !strings.Contains(e.String(), "bench: row 10/10") {
		t.Errorf("no progress on standard error:\n%s", e.String())
	}
}

// TestBenchUDPRulesInREADME: the README shows the plain-UDP rules the load
// tool needs as the matrix generates them.
func TestBenchUDPRulesInREADME(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if want := rawBenchRules("bench0", "bench1", "mqttgw-bench"); !strings.Contains(string(readme), want) {
		t.Errorf("README.md lacks the bench's plain-UDP rules, as rawBenchRules has them:\n%s", want)
	}
}
