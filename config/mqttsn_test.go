package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const snListener = "[[listener]]\nname = \"sn\"\ntype = \"mqttsn\"\nbind = \"127.0.0.1:1884\"\n[listener.mqttsn]\n"

const snsListener = "[[listener]]\nname = \"sns\"\ntype = \"mqttsns\"\nbind = \"127.0.0.1:8884\"\n[listener.mqttsn]\n"

func TestMQTTSNDefaults(t *testing.T) {
	c, ps := Parse("t.toml", []byte("[[listener]]\nname = \"sn\"\ntype = \"mqttsn\"\n"))
	if errs := ps.Errors(); len(errs) > 0 {
		t.Fatal(errs)
	}
	l := c.Listeners[0]
	if l.Bind != "127.0.0.1:1884" {
		t.Errorf("bind = %q, want the MQTT-SN default port 1884", l.Bind)
	}
	m := l.MQTTSN
	want := MQTTSN{GatewayID: 1, RetryInterval: Duration(10 * time.Second), MaxRetries: 3, MaxClients: 100000,
		MaxTopics: 1000, MaxBuffered: 100, SessionExpiry: Duration(time.Hour),
		HandshakeTimeout: Duration(10 * time.Second), MaxHandshakes: 128}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("defaults\n got %+v\nwant %+v", m, want)
	}
}

func TestMQTTSNProblems(t *testing.T) {
	tests := []struct {
		name, toml string
		want       string
	}{
		{"gateway id", snListener + "gateway_id = 256\n", `t.toml:6: listener[0].mqttsn.gateway_id: 256 is out of range 1..255 (GwId is one octet)`},
		{"advertise without addr", snListener + "advertise_interval = \"15m\"\n", `listener[0].mqttsn.advertise_addr: missing: advertise_interval is set`},
		{"advertise too long", snListener + "advertise_interval = \"24h\"\nadvertise_addr = \"255.255.255.255:1884\"\n", `t.toml:6: listener[0].mqttsn.advertise_interval: 24h0m0s is out of range 1s..65535s`},
		{"bad advertise addr", snListener + "advertise_addr = \"everyone\"\n", `t.toml:6: listener[0].mqttsn.advertise_addr: "everyone" is not HOST:PORT`},
		{"retry too short", snListener + "retry_interval = \"1ms\"\n", `t.toml:6: listener[0].mqttsn.retry_interval: 1ms is too short: want at least 10ms`},
		{"negative retries", snListener + "max_retries = -1\n", `t.toml:6: listener[0].mqttsn.max_retries: -1: want at least 1`},
		{"max clients", snListener + "max_clients = -5\n", `t.toml:6: listener[0].mqttsn.max_clients: -5: want at least 1`},
		{"max topics", snListener + "max_topics = 70000\n", `t.toml:6: listener[0].mqttsn.max_topics: 70000: topic ids are 16 bits, so at most 65534`},
		{"max keepalive", snListener + "max_keepalive = \"100000s\"\n", `t.toml:6: listener[0].mqttsn.max_keepalive: must be at most 65535s`},
		{"max keepalive unit", snListener + "max_keepalive = \"500ms\"\n", `t.toml:6: listener[0].mqttsn.max_keepalive: 500ms is shorter than 1s`},
		{"bad allowed source", snListener + "allowed_sources = [\"10.0.0.0/8\", \"lan\"]\n", `t.toml:6: listener[0].mqttsn.allowed_sources[1]: "lan" is neither a CIDR network like "192.168.7.0/24" nor an address`},
		{"known client without passwords", snListener + "require_known_client = true\n", `t.toml:6: listener[0].mqttsn.require_known_client: needs auth.password_file`},
		{"unknown key", snListener + "max_client = 5\n", `t.toml:6: listener[0].mqttsn.max_client: unknown key "max_client" (did you mean "max_clients"?)`},
		{"predefined id", "[[mqttsn.predefined]]\nid = 0\ntopic = \"a\"\n", `t.toml:2: mqttsn.predefined[0].id: 0 is out of range 1..65534`},
		{"predefined wildcard", "[[mqttsn.predefined]]\nid = 1\ntopic = \"a/#\"\n", `t.toml:3: mqttsn.predefined[0].topic: topic "a/#" contains a wildcard`},
		{"predefined duplicate", "[[mqttsn.predefined]]\nid = 1\ntopic = \"a\"\n[[mqttsn.predefined]]\nid = 1\ntopic = \"b\"\n", `t.toml:5: mqttsn.predefined[1].id: predefined id 1 is already mqttsn.predefined[0]`},
		{"predefined client id", "[[mqttsn.predefined]]\nid = 1\ntopic = \"a\"\nclient_id = \"" + strings.Repeat("x", 24) + "\"\n", `t.toml:4: mqttsn.predefined[0].client_id: "xxxxxxxxxxxxxxxxxxxxxxxx" is longer than 23 octets`},
		{"handshake timeout", snListener + "handshake_timeout = \"10m\"\n", `t.toml:6: listener[0].mqttsn.handshake_timeout: 10m0s: want 100ms to 5m`},
		{"max handshakes", snListener + "max_handshakes = -1\n", `t.toml:6: listener[0].mqttsn.max_handshakes: -1 is out of range 1..100000`},
		{"handshake keys on plain mqttsn", snListener + "max_handshakes = 10\n", `t.toml:6: warning: listener[0].mqttsn.max_handshakes: ignored: the listener's type is "mqttsn", not "mqttsns" (DTLS)`},
		{"mqttsns without psk_file", snsListener, `t.toml:3: listener[0].type: "mqttsns" needs auth.psk_file: its devices prove their client id with a DTLS pre-shared key`},
		{"mqttsns advertise", snsListener + "advertise_interval = \"15m\"\nadvertise_addr = \"255.255.255.255:1884\"\n", `t.toml:6: listener[0].mqttsn.advertise_interval: "mqttsns" cannot send ADVERTISE: it is a broadcast`},
		{"mqttsn table on udp listener", "[[listener]]\nname = \"u\"\ntype = \"udp\"\nbind = \"127.0.0.1:1\"\n[listener.mqttsn]\nmax_clients = 3\n", `listener[0].mqttsn: ignored: the listener's type is "udp"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ps := Parse("t.toml", []byte(tt.toml))
			var got []string
			for _, p := range ps {
				got = append(got, p.Error())
				if strings.Contains(p.Error(), tt.want) {
					return
				}
			}
			t.Fatalf("want a problem containing\n  %s\ngot\n  %s", tt.want, strings.Join(got, "\n  "))
		})
	}
}

func TestMQTTSNSamePredefinedIDPerClient(t *testing.T) {
	_, ps := Parse("t.toml", []byte("[[mqttsn.predefined]]\nid = 1\ntopic = \"a\"\n[[mqttsn.predefined]]\nid = 1\ntopic = \"b\"\nclient_id = \"dev1\"\n"))
	if errs := ps.Errors(); len(errs) > 0 {
		t.Fatalf("a per-client id may shadow a global one: %v", errs)
	}
}

// TestMQTTSNSListener: an mqttsns listener with a psk_file is valid, binds
// 127.0.0.1:8884 by default, and takes the DTLS defaults.
func TestMQTTSNSListener(t *testing.T) {
	psk := filepath.Join(t.TempDir(), "psk")
	if err := os.WriteFile(psk, []byte("node7:73656372657431\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, ps := Parse("t.toml", []byte(fmt.Sprintf("[auth]\npsk_file = %q\n[[listener]]\nname = \"sns\"\ntype = \"mqttsns\"\n", psk)))
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	l := c.Listeners[0]
	if l.Bind != "127.0.0.1:8884" || !l.Kind().DTLS || l.Kind().Options != "mqttsn" || l.SessionKeepalive() != 0 {
		t.Errorf("bind %q, kind %+v", l.Bind, l.Kind())
	}
	if l.MQTTSN.HandshakeTimeout.D() != 10*time.Second || l.MQTTSN.MaxHandshakes != 128 {
		t.Errorf("DTLS defaults: %+v", l.MQTTSN)
	}
}
