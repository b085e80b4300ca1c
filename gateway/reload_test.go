package gateway

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

// TestReloadRulesAndDownlinks: Reload swaps the rules table and the downlink
// subscriptions of a running gateway without ending the device's session: the
// next datagram follows the new rule, a renamed downlink delivers and the old
// one no longer does; a config whose rules do not compile changes nothing.
func TestReloadRulesAndDownlinks(t *testing.T) {
	b := startMosquitto(t, false)
	downlink := `
[[downlink]]
name = "valve"
listener = "sensors"
filter = "cmd/{device}/valve"
payload = "template"
template = "OLD {payload}"
deliver = "now"
`
	text := downlinkConfig(b, downlink)
	g := startGateway(t, text)
	sub := b.Subscribe(t, reader("json/#", "moved/#"))
	dev := newUDPDevice(t, g.Gateway, "sensors")
	dev.send(`{"id":"k1","temp":1}`)
	sub.Expect(t, 5*time.Second, "json/k1/temp", "1")

	reload := func(text string) error {
		cfg, ps := config.Parse("reloaded.toml", []byte(text))
		if errs := ps.Errors(); len(errs) > 0 {
			t.Fatal(errs)
		}
		return g.Reload(context.Background(), cfg)
	}
	next := replaceOnce(t, text, `topic = "json/{device}/temp"`, `topic = "moved/{device}/temp"`)
	next = replaceOnce(t, next, downlink, strings.NewReplacer(`"valve"`, `"valve2"`, "cmd/{device}/valve", "cmd2/{device}/valve", "OLD", "NEW").Replace(downlink))
	if err := reload(next); err != nil {
		t.Fatal(err)
	}
	dev.send(`{"id":"k1","temp":2}`)
	sub.Expect(t, 5*time.Second, "moved/k1/temp", "2")
	if n := liveSessions(g.Gateway); n != 1 {
		t.Errorf("live sessions after reload %d, want 1 (the same)", n)
	}
	b.Publish(t, mosquittotest.PubOptions{Username: "reader", Password: "reader-secret", Topic: "cmd/k1/valve", Payload: []byte("a"), QoS: 1})
	b.Publish(t, mosquittotest.PubOptions{Username: "reader", Password: "reader-secret", Topic: "cmd2/k1/valve", Payload: []byte("b"), QoS: 1})
	if p, _ := dev.recv(5 * time.Second); p != "NEW b" {
		t.Fatalf("downlink after reload %q, want %q (the old downlink must be gone)", p, "NEW b")
	}
	dev.none(300 * time.Millisecond)

	broken := replaceOnce(t, next, `template = "{temp}"`, `template = "{nosuchfield}"`)
	if err := reload(broken); err == nil || !strings.Contains(err.Error(), "reloaded.toml:") {
		t.Fatalf("reload of a broken rule: %v, want an error naming FILE:LINE", err)
	}
	dev.send(`{"id":"k1","temp":3}`)
	sub.Expect(t, 5*time.Second, "moved/k1/temp", "3")
}
