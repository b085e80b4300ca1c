package main

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"

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
