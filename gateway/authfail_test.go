package gateway

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mqttgw/mqttgw/auth"
	"github.com/mqttgw/mqttgw/metrics"
)

// TestCoAPAuthFailuresLimitedAndCounted: a CoAP device (libcoap's client)
// guessing passwords gets 4.01 each time; after authFailBurst failures its
// address is refused without a check, even with the right password, and every
// refusal is counted with its reason.
func TestCoAPAuthFailuresLimitedAndCounted(t *testing.T) {
	env := startCoAP(t, coapOpts{auth: "allow_anonymous = false", users: map[string]string{"dev": "dev-secret"}})
	if out := coapClient(t, "-m", "put", "-e", "1", env.url("/ps/a/t?c=d1")); !strings.Contains(out, "4.01") {
		t.Fatalf("anonymous PUT: %q, want 4.01", out)
	}
	if out := coapClient(t, "-m", "put", "-e", "1", env.url("/ps/a/t?c=d1&u=dev&p=dev-secret")); strings.Contains(out, "4.01") {
		t.Fatalf("the right password: %q", out)
	}
	for range authFailBurst {
		if out := coapClient(t, "-m", "put", "-e", "1", env.url("/ps/a/t?c=d1&u=dev&p=guess")); !strings.Contains(out, "4.01") {
			t.Fatalf("a wrong password: %q, want 4.01", out)
		}
	}
	if out := coapClient(t, "-m", "put", "-e", "1", env.url("/ps/a/t?c=d1&u=dev&p=dev-secret")); !strings.Contains(out, "4.01") {
		t.Fatalf("the right password after %d failures: %q, want 4.01 (limited)", authFailBurst, out)
	}
	m := env.g.metrics
	for reason, want := range map[string]float64{
		"no credentials and allow_anonymous is false":       1,
		"bad user name or password":                         authFailBurst,
		"too many failed authentications from this address": 1,
	} {
		if got := m.Get("mqttgw_auth_failures_total", "listener", "coap", "reason", reason); got != want {
			t.Errorf("auth failures %q = %v, want %v", reason, got, want)
		}
	}
}

// TestAuthGuardLogsOncePerSecond: refusals are logged at info with the source
// and the reason, at most one line a second, the next one saying how many
// were held back.
func TestAuthGuardLogsOncePerSecond(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	pw, err := auth.ParsePasswords("pw", strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	g := &Gateway{log: zap.New(core), metrics: metrics.New()}
	g.authFiles.Store(&authFiles{passwords: pw})
	a := newAuthGuard(g)
	from := netip.MustParseAddr("192.0.2.7")
	for range 3 {
		if err := a.checkPassword(from, "mallory", "x"); err != errBadPassword {
			t.Fatalf("an unknown user: %v", err)
		}
		a.refused("coap", netip.AddrPortFrom(from, 5683), "mallory", "bad user name or password")
	}
	entries := logs.FilterMessage("device authentication refused").All()
	if len(entries) != 1 {
		t.Fatalf("%d log lines for 3 refusals within a second, want 1", len(entries))
	}
	f := entries[0].ContextMap()
	if f["from"] != "192.0.2.7:5683" || f["reason"] != "bad user name or password" || f["listener"] != "coap" {
		t.Errorf("log fields %v", f)
	}
	a.log.next = time.Now().Add(-time.Millisecond) // the second has passed
	a.refused("coap", netip.AddrPortFrom(from, 5683), "mallory", "bad user name or password")
	entries = logs.FilterMessage("device authentication refused").All()
	if len(entries) != 2 || entries[1].ContextMap()["suppressed_before"] != int64(2) {
		t.Errorf("second line %v, want suppressed_before 2", entries[len(entries)-1].ContextMap())
	}
}
