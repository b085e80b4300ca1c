package config

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestProblemsHaveLineAndKey(t *testing.T) {
	tests := []struct {
		name, toml string
		want       string // one expected problem, as printed
	}{
		{"unknown top-level key", "[gatway]\nid = \"x\"\n", `t.toml:1: gatway: unknown key "gatway" (did you mean "gateway"?)`},
		{"unknown nested key", "[upstream]\nurl = \"embedded\"\nkeep_alive = \"3s\"\n", `t.toml:3: upstream.keep_alive: unknown key "keep_alive" (did you mean "keepalive"?)`},
		{"wrong type", "[metrics]\nlisten = 9100\n", `t.toml:2: metrics.listen: want a string, got integer 9100`},
		{"bad duration", "[upstream]\n\nkeepalive = \"soon\"\n", `t.toml:3: upstream.keepalive: bad duration "soon": want a positive Go duration like "500ms", "30s" or "1m30s"`},
		{"negative duration", "[gateway]\ndrain_timeout = \"-1s\"\n", `t.toml:2: gateway.drain_timeout: bad duration "-1s": want a positive Go duration like "500ms", "30s" or "1m30s"`},
		{"bad qos in array of tables", "[[listener]]\nname=\"a\"\ntype=\"udp\"\nbind=\"127.0.0.1:1\"\n[[rule]]\nname=\"r\"\n[[rule.publish]]\ntopic=\"x\"\n[[rule.publish]]\ntopic=\"y\"\nqos = 7\n", `t.toml:11: rule[0].publish[1].qos: qos must be 0, 1 or 2, got integer 7`},
		{"unknown key in inline table", "[[rule]]\nname = \"r\"\nfields = { t = { jsn = \"/t\" } }\n", `t.toml:3: rule[0].fields.t.jsn: unknown key "jsn" (did you mean "json"?)`},
		{"unknown key in array element", "[[rule]]\nname = \"r\"\ntests = [\n  { hex = \"00\" },\n  { txt = \"a\" },\n]\n", `t.toml:5: rule[0].tests[1].txt: unknown key "txt" (did you mean "text"?)`},
		{"dotted key", "[[rule]]\nname = \"r\"\nfields.t.offst = 1\n", `t.toml:3: rule[0].fields.t.offst: unknown key "offst" (did you mean "offset"?)`},
		{"duplicate listener", "[[listener]]\nname=\"a\"\ntype=\"udp\"\nbind=\"127.0.0.1:1\"\n[[listener]]\nname=\"a\"\ntype=\"udp\"\nbind=\"127.0.0.1:2\"\n", `t.toml:6: listener[1].name: duplicate listener name "a" (also listener[0], line 2)`},
		{"unknown listener type", "[[listener]]\nname=\"a\"\ntype=\"tcp\"\nbind=\"127.0.0.1:1\"\n", `t.toml:3: listener[0].type: unknown listener type "tcp": want one of udp, mqttsn, coap, coaps`},
		{"missing bind", "[[listener]]\nname=\"a\"\ntype=\"udp\"\n", `t.toml:1: listener[0].bind: missing: want HOST:PORT such as "127.0.0.1:1885" or ":1885"`},
		{"bad url scheme", "[upstream]\nurl = \"http://x:1\"\n", `t.toml:2: upstream.url: unsupported scheme "http": want tcp, ssl, ws, wss or "embedded"`},
		{"missing tls file", "[upstream]\nurl = \"ssl://127.0.0.1:8883\"\n[upstream.tls]\nca_file = \"/nonexistent/ca.pem\"\n", `t.toml:4: upstream.tls.ca_file: cannot read "/nonexistent/ca.pem": no such file or directory`},
		{"wildcard status topic", "[gateway]\nstatus_topic = \"a/#\"\n", `t.toml:2: gateway.status_topic: topic "a/#" contains a wildcard ('+' or '#'): publish topics cannot`},
		{"syntax error", "[gateway]\nid = \"a\"\nlisten = @\n", `t.toml:3: gateway.listen: syntax: expected value but found '@' instead`},
		{"quoted map key", "[[rule]]\nname = \"r\"\ntests = [ { hex = \"00\", expect = { \"a/b\" = 1 } } ]\n", `t.toml:3: rule[0].tests[0].expect."a/b": want a string, got integer 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ps := Parse("t.toml", []byte(tt.toml))
			var got []string
			for _, p := range ps {
				got = append(got, p.Error())
				if p.Error() == tt.want {
					return
				}
			}
			t.Fatalf("want problem\n  %s\ngot\n  %s", tt.want, strings.Join(got, "\n  "))
		})
	}
}

func TestSyntaxErrorLine(t *testing.T) {
	_, ps := Parse("t.toml", []byte("[gateway]\nid = \"a\"\nid = \"b\"\n"))
	if len(ps) != 1 || ps[0].Line != 3 {
		t.Fatalf("want one problem on line 3, got %v", ps)
	}
}

// TestManyErrorsGolden checks that one file with many mistakes reports all of them,
// in line order, each with its key path.
func TestManyErrorsGolden(t *testing.T) {
	_, ps := Load("testdata/many_errors.toml")
	got := ps.Error() + "\n"
	golden := "testdata/many_errors.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("problems differ from %s (go test ./config -update rewrites it)\ngot:\n%s\nwant:\n%s", golden, got, want)
	}
}

func TestDefaults(t *testing.T) {
	c, ps := Parse("t.toml", []byte("[[listener]]\nname=\"s\"\ntype=\"udp\"\nbind=\"127.0.0.1:1885\"\n"))
	if len(ps) != 0 {
		t.Fatalf("unexpected problems: %v", ps)
	}
	if c.Upstream.URL != "embedded" || c.Upstream.Embedded.Listen != "127.0.0.1:1883" {
		t.Errorf("upstream defaults: %+v", c.Upstream)
	}
	if c.Gateway.ID != "mqttgw" || c.Gateway.StatusTopic != "mqttgw/mqttgw/status" {
		t.Errorf("gateway defaults: %+v", c.Gateway)
	}
	if c.Upstream.Keepalive.D() != 30*time.Second || c.Listeners[0].MaxPacket != MaxDatagram {
		t.Errorf("keepalive %v max_packet %d", c.Upstream.Keepalive.D(), c.Listeners[0].MaxPacket)
	}
}

func TestPathIsRelativeToConfigFile(t *testing.T) {
	c := &Config{File: filepath.Join("etc", "mqttgw", "config.toml")}
	if got := c.Path("ca.pem"); got != "etc/mqttgw/ca.pem" {
		t.Fatalf("Path = %q", got)
	}
	if got := c.Path("/abs/ca.pem"); got != "/abs/ca.pem" {
		t.Fatalf("Path = %q", got)
	}
}

func TestPositionsScanner(t *testing.T) {
	text := `a = 1
[t]
b = """multi
line"""
c = [ 1,
  2 ]
[[arr]]
x = 1
[[arr]]
x = 2
[arr.sub]
y = { z = 3 }
"q.k" = 1
`
	pos := keyPositions(text)
	want := map[string]int{"a": 1, "t": 2, "t.b": 3, "t.c": 5, "t.c[1]": 6, "arr[0].x": 8, "arr[1].x": 10, "arr[1].sub": 11, "arr[1].sub.y.z": 12, `arr[1].sub."q.k"`: 13}
	for k, l := range want {
		if pos[k] != l {
			t.Errorf("%s: line %d, want %d", k, pos[k], l)
		}
	}
}

func TestPortZeroMayRepeat(t *testing.T) {
	_, ps := Parse("t.toml", []byte("[[listener]]\nname=\"a\"\ntype=\"udp\"\nbind=\"127.0.0.1:0\"\n[[listener]]\nname=\"b\"\ntype=\"udp\"\nbind=\"127.0.0.1:0\"\n"))
	if len(ps) != 0 {
		t.Fatalf("two listeners on port 0: %v", ps)
	}
}

func TestAuthFiles(t *testing.T) {
	_, ps := Parse("t.toml", []byte("[auth]\npassword_file = \"/nonexistent/passwd\"\nacl_file = \"acl\"\n"))
	want := []string{
		`t.toml:2: auth.password_file: cannot read "/nonexistent/passwd": no such file or directory`,
		`t.toml:3: auth.acl_file: device ACLs are not enforced by this version of mqttgw`,
	}
	got := ps.Error()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("want %q in\n%s", w, got)
		}
	}
}
