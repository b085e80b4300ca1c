package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/gateway"
	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

// TestDevicesTable: `mqttgw devices` prints a running gateway's sessions, with
// the state filter passed through.
func TestDevicesTable(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{Users: map[string]string{"mqttgw": "gw-secret"}})
	g := runGateway(t, fmt.Sprintf(`
[upstream]
url = %q
username = "mqttgw"
password = "gw-secret"
[metrics]
listen = "127.0.0.1:0"
[[listener]]
name = "sensors"
type = "udp"
bind = "127.0.0.1:0"
[[rule]]
name = "json"
listener = "sensors"
match = { json = true }
device = { json = "/id" }
[[rule.publish]]
topic = "t/{device}"
[[class]]
name = "meters"
match = "meter-*"
keepalive = "1h"
`, b.URL))
	c, err := net.Dial("udp", g.ListenerAddr("sensors").String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(`{"id":"meter-7"}`))
	c.Write([]byte(`{"id":"other"}`))
	metrics := g.MetricsAddr().String()
	var out, errb bytes.Buffer
	waitCond(t, "two devices listed", func() bool {
		out.Reset()
		errb.Reset()
		return run([]string{"devices", "--metrics", metrics}, &out, &errb) == 0 && strings.Contains(out.String(), "2 devices")
	})
	lines := strings.Split(out.String(), "\n")
	if !strings.HasPrefix(lines[0], "LISTENER") || !strings.Contains(out.String(), "meter-7") {
		t.Fatalf("table:\n%s", out.String())
	}
	for _, l := range lines {
		if strings.Contains(l, "meter-7") && !(strings.Contains(l, "meters") && strings.Contains(l, "active") && strings.Contains(l, c.LocalAddr().String())) {
			t.Errorf("meter-7 row: %q", l)
		}
	}
	out.Reset()
	if rc := run([]string{"devices", "--metrics", metrics, "--state", "lost"}, &out, &errb); rc != 0 || !strings.Contains(out.String(), "0 devices") {
		t.Errorf("--state lost: exit %d:\n%s%s", rc, out.String(), errb.String())
	}
	out.Reset()
	if rc := run([]string{"devices", "--metrics", metrics, "--state", "sleepy"}, &out, &errb); rc != 1 || !strings.Contains(errb.String(), "400") {
		t.Errorf("--state sleepy: exit %d, stderr %q; want 1 and the gateway's 400", rc, errb.String())
	}
}

// TestDevicesOwners: a fleet's answer (a gateway with [cluster], here as its
// JSON) gets an OWNER column, "-" for what only the owner instance knows
// and "(dead)" for an owner whose live key is gone; --owner and --local
// become the gateway's filters; its warning that the fleet's owners could
// not be read goes to stderr. A gateway test (gateway/fleetview_test.go)
// checks the answer itself against a real fleet.
func TestDevicesOwners(t *testing.T) {
	yes, no := true, false
	seen := time.Now().Add(-90 * time.Second).UTC()
	devs := []gateway.Device{
		{Listener: "sn", Protocol: "mqttsn", Device: "here-1", Addr: "10.0.0.7:5000", FirstSeen: seen, LastSeen: seen, State: "active", Owner: "gwA", OwnerAlive: &yes},
		{Listener: "sn", Protocol: "mqttsn", Device: "there-2", State: "remote", Owner: "gwB", OwnerAlive: &yes},
		{Listener: "sn", Protocol: "mqttsn", Device: "orphan-3", State: "remote", Owner: "gwC", OwnerAlive: &no},
	}
	queries := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		queries <- r.URL.RawQuery
		if r.URL.Query().Get("scope") == "local" {
			w.Header().Set("Mqttgw-Fleet-Error", "gateway: fleet view: nats: timeout")
		}
		json.NewEncoder(w).Encode(devs)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	var out, errb bytes.Buffer
	if rc := run([]string{"devices", "--metrics", addr}, &out, &errb); rc != 0 {
		t.Fatalf("exit %d: %s", rc, errb.String())
	}
	if q := <-queries; q != "" {
		t.Errorf("query %q, want none", q)
	}
	rows := map[string][]string{}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if h := strings.Fields(lines[0]); h[len(h)-1] != "OWNER" {
		t.Errorf("header %q: no OWNER column last", lines[0])
	}
	for _, l := range lines[1:] {
		if f := strings.Fields(l); len(f) > 2 {
			rows[f[2]] = f
		}
	}
	for dev, want := range map[string]string{
		"here-1":   "sn mqttsn here-1 - 10.0.0.7:5000 active 1m30s ago 1m30s ago 0 gwA",
		"there-2":  "sn mqttsn there-2 - - remote - - 0 gwB",
		"orphan-3": "sn mqttsn orphan-3 - - remote - - 0 gwC (dead)",
	} {
		if got := strings.Join(rows[dev], " "); got != want {
			t.Errorf("%s row %q, want %q", dev, got, want)
		}
	}
	if !strings.Contains(out.String(), "3 devices") || errb.Len() > 0 {
		t.Errorf("table:\n%s\nstderr %q", out.String(), errb.String())
	}

	out.Reset()
	errb.Reset()
	if rc := run([]string{"devices", "--metrics", addr, "--owner", "gwB", "--local"}, &out, &errb); rc != 0 {
		t.Fatalf("exit %d: %s", rc, errb.String())
	}
	if q := <-queries; q != "owner=gwB&scope=local" {
		t.Errorf("query %q, want owner=gwB&scope=local", q)
	}
	if !strings.Contains(errb.String(), "warning: this instance's devices only: gateway: fleet view: nats: timeout") {
		t.Errorf("stderr %q: no warning", errb.String())
	}
}
