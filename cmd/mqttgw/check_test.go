package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// exposureLines are the lines of check's output that exposureWarnings wrote.
func exposureLines(out string) []string {
	var got []string
	for line := range strings.Lines(out) {
		if strings.Contains(line, "warning: ") &&
			(strings.Contains(line, "the embedded broker listens on") || strings.Contains(line, "auth.allow_anonymous = false does not protect")) {
			got = append(got, strings.TrimSuffix(line, "\n"))
		}
	}
	return got
}

// TestCheckWarnsOfExposure: check warns, with the key and its line, when the
// embedded broker listens beyond loopback without the password or ACL file,
// and names each listener that allow_anonymous = false leaves open (plain UDP,
// MQTT-SN without require_known_client); a loopback broker and protected
// listeners give no warning. The config stays valid: exit 0.
func TestCheckWarnsOfExposure(t *testing.T) {
	dir := t.TempDir()
	for name, text := range map[string]string{
		"passwd": "",
		"acl":    "topic read public/#\n",
		"psk":    "node1:000102030405060708090a0b0c0d0e0f\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const coap = `
[[listener]]
name = "c"
type = "coap"
bind = "127.0.0.1:0"
`
	embedded := func(listen, auth string) string {
		return "[upstream]\nurl = \"embedded\"\n[upstream.embedded]\nlisten = \"" + listen + "\"\n" + auth + coap
	}
	for _, c := range []struct {
		name, text string
		want       []string // each a substring of one warning line, in order
	}{
		{
			name: "embedded on every interface, no auth files",
			text: embedded("0.0.0.0:1883", ""),
			want: []string{`c.toml:4: warning: upstream.embedded.listen: the embedded broker listens on "0.0.0.0:1883", beyond this machine, with neither auth.password_file nor auth.acl_file`},
		},
		{
			name: "embedded on an empty host, password file only",
			text: embedded(":1883", "[auth]\npassword_file = \"passwd\"\n"),
			want: []string{`c.toml:4: warning: upstream.embedded.listen: the embedded broker listens on ":1883", beyond this machine, without auth.acl_file: every client, anonymous ones too`},
		},
		{
			name: "embedded on a LAN address, password file only, no anonymous",
			text: embedded("192.168.7.1:1883", "[auth]\npassword_file = \"passwd\"\nallow_anonymous = false\n"),
			want: []string{`c.toml:4: warning: upstream.embedded.listen: the embedded broker listens on "192.168.7.1:1883", beyond this machine, without auth.acl_file: every client that logs in may`},
		},
		{
			name: "embedded on IPv6 any, ACL file only",
			text: embedded("[::]:1883", "[auth]\nacl_file = \"acl\"\n"),
			want: []string{`c.toml:4: warning: upstream.embedded.listen: the embedded broker listens on "[::]:1883", beyond this machine, without auth.password_file`},
		},
		{
			name: "embedded beyond loopback with both files",
			text: embedded("0.0.0.0:1883", "[auth]\npassword_file = \"passwd\"\nacl_file = \"acl\"\n"),
		},
		{name: "embedded on 127.0.0.1", text: embedded("127.0.0.1:1883", "")},
		{name: "embedded on 127.0.0.2", text: embedded("127.0.0.2:1883", "")},
		{name: "embedded on localhost", text: embedded("localhost:1883", "")},
		{name: "embedded on ::1", text: embedded("[::1]:1883", "")},
		{name: "embedded by default", text: coap},
		{
			name: "another broker: the embedded listen is not used",
			text: "[upstream]\nurl = \"tcp://127.0.0.1:1883\"\n[upstream.embedded]\nlisten = \"0.0.0.0:1883\"\n" + coap,
		},
		{
			name: "allow_anonymous = false with open and protected listeners",
			text: `[auth]
password_file = "passwd"
psk_file = "psk"
allow_anonymous = false
[[listener]]
name = "raw"
type = "udp"
bind = "127.0.0.1:0"
[[listener]]
name = "sn-open"
type = "mqttsn"
bind = "127.0.0.1:0"
[[listener]]
name = "sn-known"
type = "mqttsn"
bind = "127.0.0.1:0"
[listener.mqttsn]
require_known_client = true
[[listener]]
name = "sn-dtls"
type = "mqttsns"
bind = "127.0.0.1:0"
[[listener]]
name = "c"
type = "coap"
bind = "127.0.0.1:0"
[[listener]]
name = "cs"
type = "coaps"
bind = "127.0.0.1:0"
`,
			want: []string{
				`c.toml:7: warning: listener[0].type: auth.allow_anonymous = false does not protect listener "raw": plain datagrams carry no credentials`,
				`c.toml:11: warning: listener[1].type: auth.allow_anonymous = false does not protect listener "sn-open": MQTT-SN carries no credentials`,
			},
		},
		{
			name: "allow_anonymous true (default): nothing promised",
			text: "[[listener]]\nname = \"raw\"\ntype = \"udp\"\nbind = \"127.0.0.1:0\"\n[[listener]]\nname = \"sn\"\ntype = \"mqttsn\"\nbind = \"127.0.0.1:0\"\n",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			file := filepath.Join(dir, "c.toml")
			if err := os.WriteFile(file, []byte(c.text), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out, errOut := runCLI("check", file)
			if code != 0 {
				t.Fatalf("check exit %d, want 0 (warnings do not fail):\n%s%s", code, out, errOut)
			}
			got := exposureLines(out)
			ok := len(got) == len(c.want)
			for i := 0; ok && i < len(got); i++ {
				ok = strings.Contains(got[i], c.want[i])
			}
			if !ok {
				t.Errorf("warnings:\n%s\nwant lines containing:\n%s\nwhole output:\n%s",
					strings.Join(got, "\n"), strings.Join(c.want, "\n"), out)
			}
			if slices.ContainsFunc(got, func(l string) bool { return !strings.HasPrefix(l, file+":") }) {
				t.Errorf("a warning without FILE:LINE:\n%s", strings.Join(got, "\n"))
			}
		})
	}
}
