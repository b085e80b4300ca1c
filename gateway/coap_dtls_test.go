package gateway

import (
	"strings"
	"testing"
	"time"
)

func coapsClient(t *testing.T, args ...string) string {
	t.Helper()
	return libcoap(t, 30*time.Second, "coap-client-openssl", args...)
}

// TestCoAPDTLSPSK publishes over DTLS 1.2 with a PSK from the psk_file, with
// coap-client-openssl: the right key publishes (the device is named by its PSK
// identity); a wrong key fails the handshake, publishes nothing, and is counted.
func TestCoAPDTLSPSK(t *testing.T) {
	env := startCoAP(t, coapOpts{dtls: true, auth: "allow_anonymous = false"})
	sub := env.reader(t, "secure/#")

	out := coapsClient(t, "-u", coapPSKIdentity, "-k", coapPSKKey, "-m", "put", "-e", "sealed", env.surl("/ps/secure/t"))
	if strings.TrimSpace(out) != "" {
		t.Fatalf("coap-client-openssl: %q", out)
	}
	sub.Expect(t, 5*time.Second, "secure/t", "sealed")
	if n := env.g.sessions.Len(); n != 1 {
		t.Fatalf("sessions = %d, want 1", n)
	}

	out = coapsClient(t, "-u", coapPSKIdentity, "-k", "wrong-key", "-B", "5", "-m", "put", "-e", "forged", env.surl("/ps/secure/t"))
	waitFor(t, 10*time.Second, "handshake failure counted", func() bool {
		return env.metric("mqttgw_coap_dtls_handshake_failures_total", "listener", "coaps") >= 1
	})
	sub.None(t, 500*time.Millisecond)
	t.Logf("wrong key: coap-client-openssl printed %q", out)

	// An unknown identity fails the same way.
	coapsClient(t, "-u", "intruder", "-k", coapPSKKey, "-B", "5", "-m", "put", "-e", "forged", env.surl("/ps/secure/t"))
	waitFor(t, 10*time.Second, "second handshake failure", func() bool {
		return env.metric("mqttgw_coap_dtls_handshake_failures_total", "listener", "coaps") >= 2
	})
	sub.None(t, 500*time.Millisecond)
	// Both are refused authentications, counted (and logged at info) with why.
	waitFor(t, 5*time.Second, "the unknown identity among the auth failures", func() bool {
		return env.metric("mqttgw_auth_failures_total", "listener", "coaps", "reason", "DTLS: unknown PSK identity") >= 1
	})

	// The session still works for the right key afterwards.
	coapsClient(t, "-u", coapPSKIdentity, "-k", coapPSKKey, "-m", "post", "-e", "again", env.surl("/ps/secure/t"))
	sub.Expect(t, 5*time.Second, "secure/t", "again")
}

// TestCoAPDTLSObserve observes over DTLS: notifications reach the device through
// its DTLS session.
func TestCoAPDTLSObserve(t *testing.T) {
	env := startCoAP(t, coapOpts{dtls: true})
	env.mqttPub(t, "secure/state", "r;", true)
	out := coapsClient(t, "-u", coapPSKIdentity, "-k", coapPSKKey, "-m", "get", "-s", "3", env.surl("/ps/secure/state"))
	if !strings.Contains(out, "r;") {
		t.Fatalf("observe over DTLS: %q, want the retained r;", out)
	}
}
