package config

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestTransparentModeProblems(t *testing.T) {
	base := "[[listener]]\nname = \"a\"\nbind = \"127.0.0.1:0\"\n"
	tests := []struct{ name, toml, want string }{
		{"unknown mode", base + "type = \"mqttsn\"\nmode = \"relay\"\n", `t.toml:5: listener[0].mode: unknown mode "relay": want "aggregate" or "transparent"`},
		{"not on udp", base + "type = \"udp\"\nmode = \"transparent\"\n", `t.toml:5: listener[0].mode: "transparent" works on listeners of type mqttsn, mqttsns, coap or coaps, not on type "udp"`},
		{"prefix without mode", base + "type = \"mqttsn\"\nclient_id_prefix = \"sn-\"\n", `t.toml:5: warning: listener[0].client_id_prefix: ignored: mode is not "transparent"`},
		{"password without user", base + "type = \"mqttsn\"\nmode = \"transparent\"\n[listener.transparent]\npassword = \"x\"\n", `t.toml:6: listener[0].transparent.username: missing: transparent.password is set`},
		{"negative max", base + "type = \"mqttsn\"\nmode = \"transparent\"\ntransparent.max_connections = -1\n", `t.toml:6: listener[0].transparent.max_connections: -1: want a positive number (0: the default, 10000)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ps := Parse("t.toml", []byte(tt.toml))
			var got []string
			for _, p := range ps {
				if p.Error() == tt.want {
					return
				}
				got = append(got, p.Error())
			}
			t.Fatalf("want problem\n  %s\ngot\n  %s", tt.want, strings.Join(got, "\n  "))
		})
	}
	for _, typ := range []string{"mqttsn", "coap"} {
		cfg, ps := Parse("t.toml", []byte(base+"type = \""+typ+"\"\nmode = \"transparent\"\nclient_id_prefix = \"gw-\"\n"))
		if len(ps) > 0 {
			t.Fatalf("type %s: %v", typ, ps)
		}
		if l := cfg.Listeners[0]; !l.IsTransparent() || l.Transparent.MaxConnections != DefaultMaxConnections || l.ClientIDPrefix != "gw-" {
			t.Errorf("type %s: listener %+v", typ, l)
		}
	}
	// coaps: the PSK identity is the device's user name, transparent.password
	// its password.
	psk := filepath.Join(t.TempDir(), "psk")
	if err := os.WriteFile(psk, []byte("sensor-1:00112233445566778899aabbccddeeff\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	text := base + "type = \"coaps\"\nmode = \"transparent\"\n[listener.transparent]\nusername = \"anon\"\npassword = \"x\"\n[auth]\npsk_file = " + strconv.Quote(psk) + "\n"
	if _, ps := Parse("t.toml", []byte(text)); len(ps) > 0 {
		t.Errorf("coaps: %v", ps)
	}
}
