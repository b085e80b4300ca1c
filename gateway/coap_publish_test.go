package gateway

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCoAPPublish drives libcoap's coap-client against the gateway: PUT and POST,
// Confirmable and Non-confirmable, QoS and retain in the query, each seen by a
// real mosquitto_sub.
func TestCoAPPublish(t *testing.T) {
	env := startCoAP(t, coapOpts{})
	sub := env.reader(t, "coap/#")
	tests := []struct {
		name    string
		args    []string
		path    string
		payload string
		qos     int
		retain  bool
	}{
		{"PUT CON defaults to QoS 1", []string{"-m", "put"}, "/ps/coap/put-con", "21.5", 1, false},
		{"POST NON defaults to QoS 0", []string{"-m", "post", "-N"}, "/ps/coap/post-non", "hello", 0, false},
		{"NON with qos=1", []string{"-m", "put", "-N"}, "/ps/coap/non-q1?qos=1", "q1", 1, false},
		{"CON with qos=0 and retain", []string{"-m", "post"}, "/ps/coap/retained?qos=0&retain=true", "kept", 0, true},
		{"multi-level topic and client id", []string{"-m", "put"}, "/ps/coap/a/b/c?c=dev-1&qos=2", "deep", 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := coapClient(t, append(tt.args, "-e", tt.payload, env.url(tt.path))...)
			if strings.TrimSpace(out) != "" {
				t.Fatalf("coap-client printed %q, want nothing (2.04 has no payload)", out)
			}
			topic := strings.TrimPrefix(strings.SplitN(tt.path, "?", 2)[0], "/ps/")
			m := sub.Expect(t, 5*time.Second, topic, tt.payload)
			if m.QoS != tt.qos {
				t.Errorf("delivered with QoS %d, want %d (subscriber QoS 1 caps the publish QoS)", m.QoS, tt.qos)
			}
		})
	}
	if got := env.metric("mqttgw_coap_requests_total", "listener", "coap", "method", "PUT", "code", "2.04"); got != 3 {
		t.Errorf("PUT 2.04 counted %v, want 3", got)
	}
	// The retained publish stays on the broker: a new subscriber gets it.
	late := env.reader(t, "coap/retained")
	if m := late.Expect(t, 5*time.Second, "coap/retained", "kept"); !m.Retain {
		t.Errorf("coap/retained not retained: %v", m)
	}
}

// TestCoAPGetRetained reads the broker's retained value with a plain GET, and
// gets 4.04 for a topic without one.
func TestCoAPGetRetained(t *testing.T) {
	env := startCoAP(t, coapOpts{})
	env.mqttPub(t, "state/lamp", "on", true)
	if out := coapClient(t, "-m", "get", env.url("/ps/state/lamp")); strings.TrimSpace(out) != "on" {
		t.Fatalf("GET retained: %q, want \"on\"", out)
	}
	if out := coapClient(t, "-m", "get", env.url("/ps/state/nothing")); strings.TrimSpace(out) != "4.04" {
		t.Fatalf("GET without a value: %q, want 4.04", out)
	}
	// A value published through the gateway is read back from its last-value cache.
	coapClient(t, "-m", "put", "-e", "42", env.url("/ps/state/counter"))
	if out := coapClient(t, "-m", "get", env.url("/ps/state/counter")); strings.TrimSpace(out) != "42" {
		t.Fatalf("GET last value: %q, want 42", out)
	}
}

// TestCoAPBlockwiseUpload sends a 4 KiB payload with Block1 (RFC 7959) in 256-byte
// blocks; the broker gets it whole. Reading it back uses Block2.
func TestCoAPBlockwiseUpload(t *testing.T) {
	env := startCoAP(t, coapOpts{})
	sub := env.reader(t, "blocks/#")
	payload := strings.Repeat("0123456789abcdef", 256) // 4096 bytes
	file := filepath.Join(t.TempDir(), "payload")
	writeFile(t, file, payload)
	out := coapClient(t, "-m", "put", "-b", "256", "-f", file, env.url("/ps/blocks/big?retain=1"))
	if strings.TrimSpace(out) != "" {
		t.Fatalf("coap-client: %q", out)
	}
	sub.Expect(t, 5*time.Second, "blocks/big", payload)
	if out := coapClient(t, "-m", "get", "-b", "512", env.url("/ps/blocks/big")); out != payload && strings.TrimSuffix(out, "\n") != payload {
		t.Fatalf("GET block-wise: %d bytes, want %d", len(out), len(payload))
	}
}
