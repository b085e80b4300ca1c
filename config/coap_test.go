package config

import (
	"strings"
	"testing"
	"time"
)

const coapListener = "[[listener]]\nname = \"c\"\ntype = \"coap\"\nbind = \"127.0.0.1:5683\"\n[listener.coap]\n"

func TestCoAPDefaults(t *testing.T) {
	c, ps := Parse("t.toml", []byte("[[listener]]\nname = \"c\"\ntype = \"coap\"\n[[listener]]\nname = \"s\"\ntype = \"coaps\"\n"))
	if errs := ps.Errors(); len(errs) > 0 {
		t.Fatal(errs)
	}
	if c.Listeners[0].Bind != "127.0.0.1:5683" || c.Listeners[1].Bind != "127.0.0.1:5684" {
		t.Errorf("binds %q %q, want the CoAP ports 5683 and 5684 (RFC 7252 §6.1, §6.2)", c.Listeners[0].Bind, c.Listeners[1].Bind)
	}
	want := CoAP{Notify: "non", MaxObserversPerTopic: 1000, MaxObserversPerDevice: 16, ObserverQueue: 16, MaxPayload: 64 << 10,
		Keepalive: Duration(24 * time.Hour), RetryAfter: Duration(5 * time.Second), HandshakeTimeout: Duration(10 * time.Second)}
	if got := c.Listeners[0].CoAP; got != want {
		t.Errorf("defaults\n got %+v\nwant %+v", got, want)
	}
}

func TestCoAPProblems(t *testing.T) {
	tests := []struct {
		name, toml string
		want       string
	}{
		{"notify", coapListener + "notify = \"confirmable\"\n", `t.toml:6: listener[0].coap.notify: unknown notification type "confirmable": want "non" or "con"`},
		{"observers per topic", coapListener + "max_observers_per_topic = -1\n", `t.toml:6: listener[0].coap.max_observers_per_topic: -1: want at least 1`},
		{"observers per device", coapListener + "max_observers_per_device = -3\n", `t.toml:6: listener[0].coap.max_observers_per_device: -3: want at least 1`},
		{"observer queue", coapListener + "observer_queue = 20000\n", `t.toml:6: listener[0].coap.observer_queue: 20000 is out of range 1..10000`},
		{"max payload", coapListener + "max_payload = 20000000\n", `t.toml:6: listener[0].coap.max_payload: 20000000 is out of range 1..16777216`},
		{"keepalive short", coapListener + "keepalive = \"10ms\"\n", `t.toml:6: listener[0].coap.keepalive: 10ms: want at least 1s`},
		{"keepalive long", coapListener + "keepalive = \"10000h\"\n", `t.toml:6: listener[0].coap.keepalive: 10000h0m0s: want at most 8760h0m0s`},
		{"retry after", coapListener + "retry_after = \"500ms\"\n", `t.toml:6: listener[0].coap.retry_after: 500ms: want 1s to 24h (Max-Age counts whole seconds)`},
		{"handshake timeout", coapListener + "handshake_timeout = \"1h\"\n", `t.toml:6: listener[0].coap.handshake_timeout: 1h0m0s: want 100ms to 5m`},
		{"cert without key", coapListener + "cert_file = \"c.pem\"\n", `listener[0].coap: cert_file and key_file go together: set both or neither`},
		{"wildcards type", coapListener + "allow_wildcards = \"yes\"\n", `t.toml:6: listener[0].coap.allow_wildcards: want true or false, got string "yes"`},
		{"unknown key", coapListener + "max_observer = 5\n", `t.toml:6: listener[0].coap.max_observer: unknown key "max_observer"`},
		{"coap table on udp listener", "[[listener]]\nname = \"u\"\ntype = \"udp\"\nbind = \"127.0.0.1:1\"\n[listener.coap]\nnotify = \"con\"\n", `listener[0].coap: ignored: the listener's type is "udp"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ps := Parse("t.toml", []byte(tt.toml))
			var got []string
			for _, p := range ps {
				got = append(got, p.Error())
				if strings.HasPrefix(p.Error(), tt.want) || strings.Contains(p.Error(), tt.want) {
					return
				}
			}
			t.Fatalf("want problem\n  %s\ngot\n  %s", tt.want, strings.Join(got, "\n  "))
		})
	}
}

func TestCoAPValidConfig(t *testing.T) {
	text := coapListener + "notify = \"con\"\nallow_wildcards = true\nobserver_queue = 64\nkeepalive = \"1h\"\nretry_after = \"30s\"\n"
	c, ps := Parse("t.toml", []byte(text))
	if len(ps) > 0 {
		t.Fatalf("problems: %v", ps)
	}
	got := c.Listeners[0].CoAP
	if got.Notify != "con" || !got.AllowWildcards || got.ObserverQueue != 64 || got.Keepalive.D() != time.Hour || got.RetryAfter.D() != 30*time.Second {
		t.Fatalf("parsed %+v", got)
	}
}
