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
		{"unknown listener type", "[[listener]]\nname=\"a\"\ntype=\"tcp\"\nbind=\"127.0.0.1:1\"\n", `t.toml:3: listener[0].type: unknown listener type "tcp": want one of udp, mqttsn, mqttsns, coap, coaps`},
		{"missing bind", "[[listener]]\nname=\"a\"\ntype=\"udp\"\n", `t.toml:1: listener[0].bind: missing: want HOST:PORT such as "127.0.0.1:1885" or ":1885"`},
		{"bad url scheme", "[upstream]\nurl = \"http://x:1\"\n", `t.toml:2: upstream.url: unsupported scheme "http": want tcp (or mqtt), ssl (or mqtts, tls), ws, wss or "embedded"`},
		{"missing tls file", "[upstream]\nurl = \"ssl://127.0.0.1:8883\"\n[upstream.tls]\nca_file = \"/nonexistent/ca.pem\"\n", `t.toml:4: upstream.tls.ca_file: cannot read "/nonexistent/ca.pem": no such file or directory`},
		{"wildcard status topic", "[gateway]\nstatus_topic = \"a/#\"\n", `t.toml:2: gateway.status_topic: topic "a/#" contains a wildcard ('+' or '#'): publish topics cannot`},
		{"syntax error", "[gateway]\nid = \"a\"\nlisten = @\n", `t.toml:3: gateway.listen: syntax: expected value but found '@' instead`},
		{"quoted map key", "[[rule]]\nname = \"r\"\ntests = [ { hex = \"00\", expect = { \"a/b\" = 1 } } ]\n", `t.toml:3: rule[0].tests[0].expect."a/b": want a string, got integer 1`},
		{"class keepalive too short", "[[class]]\nname = \"c\"\nkeepalive = \"100ms\"\n", `t.toml:3: class[0].keepalive: 100ms: want 0 (the listener's own) or at least 1s`},
		{"class keepalive too long", "[[class]]\nname = \"c\"\nkeepalive = \"9000h\"\n", `t.toml:3: class[0].keepalive: 9000h0m0s: want at most 8760h0m0s`},
		{"class keepalive not a duration", "[[class]]\nname = \"c\"\nkeepalive = 300\n", `t.toml:3: class[0].keepalive: want a duration like "30s", got integer 300`},
		{"class will qos", "[[class]]\nname = \"c\"\nwill = { topic = \"t\",\n  qos = 3 }\n", `t.toml:4: class[0].will.qos: qos must be 0, 1 or 2, got integer 3`},
		{"class listeners not an array", "[[class]]\nname = \"c\"\nlisteners = \"a\"\n", `t.toml:3: class[0].listeners: want an array, got string "a"`},
		{"class unknown key", "[[class]]\nname = \"c\"\n[class.brith]\ntopic = \"t\"\n", `t.toml:3: class[0].brith: unknown key "brith" (did you mean "birth"?)`},
		{"downlink ttl zero", "[[downlink]]\nname = \"d\"\ndeliver = \"on_uplink\"\nttl = \"0s\"\n", `t.toml:4: downlink[0].ttl: 0s: want more than 0 (leave ttl out for 10m0s)`},
		{"downlink max_queued zero", "[[downlink]]\nname = \"d\"\ndeliver = \"on_uplink\"\nmax_queued = 0\n", `t.toml:4: downlink[0].max_queued: 0 is out of range 1..10000`},
		{"downlink max_queued too large", "[[downlink]]\nname = \"d\"\ndeliver = \"on_uplink\"\nmax_queued = 100000\n", `t.toml:4: downlink[0].max_queued: 100000 is out of range 1..10000`},
		{"downlink queue settings ignored", "[[downlink]]\nname = \"d\"\nmax_queued = 4\n", `t.toml:3: warning: downlink[0].max_queued: ignored: deliver is "now"; max_queued applies to deliver = "on_uplink"`},
		{"downlink unknown key", "[[downlink]]\nname = \"d\"\nfiltre = \"c/{device}\"\n", `t.toml:3: downlink[0].filtre: unknown key "filtre" (did you mean "filter"?)`},
		{"downlink field unknown key", "[[downlink]]\nname = \"d\"\nfields = [ { value = \"/a\", typ = \"int8\" } ]\n", `t.toml:3: downlink[0].fields[0].typ: unknown key "typ" (did you mean "type"?)`},
		{"downlink test message unknown key", "[[downlink]]\nname = \"d\"\ntests = [ { message = { topik = \"a\" }, hex = \"00\" } ]\n", `t.toml:3: downlink[0].tests[0].message.topik: unknown key "topik" (did you mean "topic"?)`},
		{"ack window zero", "[[rule]]\nname = \"r\"\n[rule.ack]\nhex = \"06\"\ndedup = \"{device}\"\nwindow = \"0s\"\n", `t.toml:6: rule[0].ack.window: 0s: want more than 0 (leave window out for 5m0s)`},
		{"ack window without dedup", "[[rule]]\nname = \"r\"\nack = { hex = \"06\", window = \"1m\" }\n", `t.toml:3: warning: rule[0].ack.window: ignored: window applies with dedup`},
		{"ack unknown key", "[[rule]]\nname = \"r\"\n[rule.ack]\ntemplte = \"A\"\n", `t.toml:4: rule[0].ack.templte: unknown key "templte" (did you mean "template"?)`},
		{"queue bytes below one datagram", "[upstream]\nqueue_bytes = 1000\n", `t.toml:2: upstream.queue_bytes: 1000: want at least 65507 bytes, one largest datagram (0: the default, 64 MiB)`},
		{"negative QoS 2 window", "[upstream]\nmax_inflight_qos2 = -1\n", `t.toml:2: upstream.max_inflight_qos2: -1: want 1 to 65535, at most the broker's max_inflight_messages (0: the default, 20)`},
		{"negative queue messages", "[upstream]\nqueue_messages = -1\n", `t.toml:2: upstream.queue_messages: -1: want a positive number of messages (0: the default, 10000)`},
		{"rule test ack unknown key", "[[rule]]\nname = \"r\"\ntests = [ { text = \"a\", ack_text = \"A\" } ]\n", `t.toml:3: rule[0].tests[0].ack_text: unknown key "ack_text" (did you mean "ack_hex"?)`},
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

// TestClassDownlinkAckDefaults: one place for each default; a value left out takes
// it, a value written stays.
func TestClassDownlinkAckDefaults(t *testing.T) {
	c, ps := Parse("t.toml", []byte(`
[[class]]
name = "c"
[[downlink]]
name = "d"
[[downlink]]
name = "q"
deliver = "on_uplink"
ttl = "1m"
max_queued = 2
[[rule]]
name = "r"
ack = { hex = "06", dedup = "{device}" }
[[rule]]
name = "s"
ack = { hex = "06" }
`))
	if errs := ps.Errors(); len(errs) > 0 {
		t.Fatal(errs)
	}
	if m := c.Classes[0].Match; m != "*" {
		t.Errorf("class match %q, want *", m)
	}
	if d := c.Downlinks[0]; d.TTL.D() != 10*time.Minute || d.MaxQueued != 8 {
		t.Errorf("downlink defaults: ttl %v max_queued %d", d.TTL.D(), d.MaxQueued)
	}
	if d := c.Downlinks[1]; d.TTL.D() != time.Minute || d.MaxQueued != 2 {
		t.Errorf("downlink set: ttl %v max_queued %d", d.TTL.D(), d.MaxQueued)
	}
	if w := c.Rules[0].Ack.Window.D(); w != 5*time.Minute {
		t.Errorf("ack window with dedup %v, want 5m", w)
	}
	if w := c.Rules[1].Ack.Window.D(); w != 0 {
		t.Errorf("ack window without dedup %v, want 0", w)
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
		`t.toml:3: auth.acl_file: cannot read "acl": no such file or directory`,
	}
	got := ps.Error()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("want %q in\n%s", w, got)
		}
	}
}
