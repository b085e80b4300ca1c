package config

import (
	"strings"
	"testing"
)

func TestMetricsBasicAuthProblems(t *testing.T) {
	tests := []struct{ name, toml, want string }{
		{"password without user", "[metrics]\nlisten = \"127.0.0.1:0\"\npassword = \"$7$101$a$b\"\n", `t.toml:1: metrics.username: missing: metrics.password is set`},
		{"user without password", "[metrics]\nusername = \"ops\"\n", `t.toml:1: metrics.password: missing: metrics.username is set`},
		{"plain password", "[metrics]\nusername = \"ops\"\npassword = \"hunter2\"\n", "t.toml:3: metrics.password: want a password hash ($7$... made by `mqttgw passwd -b FILE USER PASSWORD` or mosquitto_passwd), not the password itself"},
		{"colon in user", "[metrics]\nusername = \"a:b\"\npassword = \"$7$101$a$b\"\n", `t.toml:2: metrics.username: "a:b" must not contain ':'`},
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
	if _, ps := Parse("t.toml", []byte("[metrics]\nusername = \"ops\"\npassword = \"$7$101$a$b\"\n")); len(ps.Errors()) > 0 {
		t.Errorf("a hash: %v", ps)
	}
}
