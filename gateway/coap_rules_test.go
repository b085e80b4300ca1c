package gateway

import (
	"strings"
	"testing"
	"time"
)

// TestCoAPTopicRules: a [[rule]] on the coap listener makes a path outside /ps/
// publishable and rewrites it; /ps/ topics that fit the pattern are rewritten too;
// a path neither under /ps/ nor matched by a rule is 4.04.
func TestCoAPTopicRules(t *testing.T) {
	env := startCoAP(t, coapOpts{extra: `
[[rule]]
name = "per-device"
listener = "coap"
match = { topic = "d/{device}/{kind}" }
[[rule.publish]]
topic = "devices/{device}/{kind}"
`})
	sub := env.reader(t, "devices/#", "d/#", "other/#")
	if out := coapClient(t, "-m", "put", "-e", "21.5", env.url("/d/n1/temp")); strings.TrimSpace(out) != "" {
		t.Fatalf("PUT /d/n1/temp: coap-client printed %q, want nothing (2.04)", out)
	}
	sub.Expect(t, 5*time.Second, "devices/n1/temp", "21.5")
	coapClient(t, "-m", "put", "-e", "7", env.url("/ps/d/n2/hum"))
	sub.Expect(t, 5*time.Second, "devices/n2/hum", "7")
	coapClient(t, "-m", "put", "-e", "as is", env.url("/ps/other/x"))
	sub.Expect(t, 5*time.Second, "other/x", "as is")
	if out := coapClient(t, "-m", "put", "-e", "x", env.url("/nowhere/x")); strings.TrimSpace(out) != "4.04" {
		t.Fatalf("PUT /nowhere/x: %q, want 4.04", out)
	}
	sub.None(t, 300*time.Millisecond)
}
