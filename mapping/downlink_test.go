package mapping

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

// downlinksTOML: one downlink per payload kind.
//
//	valve  fields on "sensors" (mountpoint site1/): uint16 big, int16 little, float32
//	say    template on "lora", two captures, + and #, queued
//	raw    raw on "lora"
//	any    a filter that starts with a capture, for the '$' rule
const downlinksTOML = `
[[downlink]]
name = "valve"
listener = "sensors"
filter = "cmd/{device}/valve"
payload = "fields"
fields = [
  { value = "/open", type = "uint16" },
  { value = "/level", type = "int16", endian = "little" },
  { value = "/t", type = "float32", endian = "big" },
]
tests = [ { message = { topic = "site1/cmd/dev7/valve", payload = '{"open":1,"level":-2,"t":1.5}' }, hex = "0001 feff 3fc00000", device = "dev7" } ]

[[downlink]]
name = "say"
listener = "lora"
filter = "say/{site}/{device}/+/#"
template = "SET {device}@{site} {payload} via {listener}/{gateway} on {topic}"
deliver = "on_uplink"
ttl = "1m"
max_queued = 2
tests = [ { message = { topic = "say/n/d9/x", payload = "42" }, text = "SET d9@n 42 via lora/gw1 on say/n/d9/x" } ]

[[downlink]]
name = "raw"
listener = "lora"
filter = "raw/{device}"

[[downlink]]
name = "any"
listener = "lora"
filter = "{device}/any"
`

func TestDownlinkTable(t *testing.T) {
	tab := mustLoadTOML(t, downlinksTOML)
	var names []string
	for _, d := range tab.Downlinks() {
		names = append(names, d.Name+" "+d.Listener+" "+d.Filter)
	}
	want := []string{"valve sensors site1/cmd/+/valve", "say lora say/+/+/+/#", "raw lora raw/+", "any lora +/any"}
	if strings.Join(names, "\n") != strings.Join(want, "\n") {
		t.Errorf("Downlinks:\n%s\nwant\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
	}
	say := tab.Downlink("say")
	if say == nil || !say.OnUplink || say.TTL != time.Minute || say.MaxQueued != 2 {
		t.Errorf("say: %+v", say)
	}
	// The defaults come from config.
	if raw := tab.Downlink("raw"); raw.OnUplink || raw.TTL != 10*time.Minute || raw.MaxQueued != 8 {
		t.Errorf("raw: %+v", raw)
	}
	if tab.Downlink("nope") != nil {
		t.Error("Downlink(nope) is not nil")
	}
	var nilTable *Table
	if nilTable.Downlinks() != nil || nilTable.Downlink("raw") != nil {
		t.Error("nil table has downlinks")
	}
	if ps := tab.RunTests(); len(ps) > 0 {
		t.Errorf("inline tests: %v", ps)
	}
}

func TestDownlinkEncode(t *testing.T) {
	tab := mustLoadTOML(t, downlinksTOML)
	for _, tc := range []struct {
		name, downlink, topic, payload string
		device                         string // "" with noMatch or err
		hex                            string // the datagram
		noMatch                        bool
		err                            string // substring of an ErrDecode error
	}{
		{name: "fields", downlink: "valve", topic: "site1/cmd/dev7/valve", payload: `{"t":1.5,"level":-2,"open":1}`, device: "dev7", hex: "0001feff3fc00000"},
		{name: "fields extremes", downlink: "valve", topic: "site1/cmd/d/valve", payload: `{"open":65535,"level":-32768,"t":-0}`, device: "d", hex: "ffff008080000000"},
		{name: "integer written with exponent", downlink: "valve", topic: "site1/cmd/d/valve", payload: `{"open":1e2,"level":2.0,"t":0}`, device: "d", hex: "0064020000000000"},
		{name: "not JSON", downlink: "valve", topic: "site1/cmd/d/valve", payload: `open`, err: `mapping: downlink "valve": decode: payload is not a JSON object: "open"`},
		{name: "JSON not an object", downlink: "valve", topic: "site1/cmd/d/valve", payload: `[1]`, err: `payload is not a JSON object`},
		{name: "pointer misses", downlink: "valve", topic: "site1/cmd/d/valve", payload: `{"open":1,"t":1}`, err: `fields[1]: JSON pointer "/level" matches nothing`},
		{name: "string for number", downlink: "valve", topic: "site1/cmd/d/valve", payload: `{"open":"1","level":1,"t":1}`, err: `fields[0]: "/open" is "\"1\"", not a number`},
		{name: "bool for number", downlink: "valve", topic: "site1/cmd/d/valve", payload: `{"open":true,"level":1,"t":1}`, err: `fields[0]: "/open" is "true", not a number`},
		{name: "uint16 overflow", downlink: "valve", topic: "site1/cmd/d/valve", payload: `{"open":65536,"level":1,"t":1}`, err: `fields[0]: "/open" is 65536, out of range for uint16`},
		{name: "negative for uint", downlink: "valve", topic: "site1/cmd/d/valve", payload: `{"open":-1,"level":1,"t":1}`, err: `"/open" is -1, out of range for uint16`},
		{name: "int16 underflow", downlink: "valve", topic: "site1/cmd/d/valve", payload: `{"open":1,"level":-32769,"t":1}`, err: `"/level" is -32769, out of range for int16`},
		{name: "fraction for integer", downlink: "valve", topic: "site1/cmd/d/valve", payload: `{"open":1.5,"level":1,"t":1}`, err: `"/open" is 1.5, not an integer (type uint16)`},
		{name: "float32 overflow", downlink: "valve", topic: "site1/cmd/d/valve", payload: `{"open":1,"level":1,"t":1e39}`, err: `"/t" is 1e39, out of range for float32`},
		{name: "no mountpoint", downlink: "valve", topic: "cmd/dev7/valve", noMatch: true},
		{name: "too long", downlink: "valve", topic: "site1/cmd/dev7/valve/x", noMatch: true},
		{name: "too short", downlink: "valve", topic: "site1/cmd/dev7", noMatch: true},
		{name: "other literal", downlink: "valve", topic: "site1/cmd/dev7/valves", noMatch: true},
		{name: "wildcard topic", downlink: "valve", topic: "site1/cmd/+/valve", noMatch: true},
		{name: "template", downlink: "say", topic: "say/north/dev9/x/y/z", payload: "on", device: "dev9", hex: hex.EncodeToString([]byte("SET dev9@north on via lora/gw1 on say/north/dev9/x/y/z"))},
		{name: "# takes the parent level", downlink: "say", topic: "say/n/d/x", payload: "", device: "d", hex: hex.EncodeToString([]byte("SET d@n  via lora/gw1 on say/n/d/x"))},
		{name: "+ needs its level", downlink: "say", topic: "say/n/d", noMatch: true},
		{name: "raw", downlink: "raw", topic: "raw/d1", payload: "\x00\x01binary", device: "d1", hex: "000162696e617279"},
		{name: "raw empty", downlink: "raw", topic: "raw/d1", payload: "", device: "d1", hex: ""},
		{name: "empty device", downlink: "raw", topic: "raw/", err: `mapping: downlink "raw": decode: the {device} level is empty`},
		{name: "capture first", downlink: "any", topic: "d/any", device: "d", hex: ""},
		{name: "no wildcard match of $ topics", downlink: "any", topic: "$SYS/any", noMatch: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload := []byte(tc.payload)
			device, b, ok, err := tab.Downlink(tc.downlink).Encode(tc.topic, payload)
			switch {
			case tc.noMatch:
				if ok || err != nil || device != "" || b != nil {
					t.Fatalf("want no match, got %q %x %v %v", device, b, ok, err)
				}
			case tc.err != "":
				if !ok || !errors.Is(err, ErrDecode) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("want ErrDecode with %q, got ok %v, %v", tc.err, ok, err)
				}
			default:
				if !ok || err != nil || device != tc.device || hex.EncodeToString(b) != tc.hex {
					t.Fatalf("got %q %x %v %v, want %q %s", device, b, ok, err, tc.device, tc.hex)
				}
				if b == nil {
					t.Fatal("datagram is nil: an empty datagram is still one")
				}
				// The datagram is the caller's: it does not share the payload.
				for i := range payload {
					payload[i] = '!'
				}
				if hex.EncodeToString(b) != tc.hex {
					t.Fatalf("datagram changed with the payload: %x", b)
				}
			}
		})
	}
}

func TestDownlinkExplainTopic(t *testing.T) {
	tab := mustLoadTOML(t, downlinksTOML)
	valve, say, anyD := tab.Downlink("valve"), tab.Downlink("say"), tab.Downlink("any")
	for _, tc := range []struct {
		d           *Downlink
		topic, want string
	}{
		{valve, "site1/cmd/dev7/valve", ""},
		{valve, "cmd/dev7/valve", `topic "cmd/dev7/valve" does not start with the mountpoint "site1/" of listener "sensors"`},
		{valve, "site1/cmd/dev7/valves", `topic "site1/cmd/dev7/valves" has "valves" where level 3 of filter "cmd/{device}/valve" is "valve"`},
		{valve, "site1/cmd/dev7", `topic "site1/cmd/dev7" ends before level 3 of filter "cmd/{device}/valve"`},
		{valve, "site1/cmd/dev7/valve/x", `topic "site1/cmd/dev7/valve/x" has more levels than filter "cmd/{device}/valve"`},
		{valve, "site1/cmd/#", `"site1/cmd/#" is not a topic name: empty, or with '+', '#' or NUL`},
		{say, "say/n/d/x/y", ""},
		{anyD, "$SYS/any", `topic "$SYS/any" starts with '$', which a filter starting with a wildcard does not match (MQTT 3.1.1 §4.7.2)`},
	} {
		if got := tc.d.ExplainTopic(tc.topic); got != tc.want {
			t.Errorf("%s on %q:\n got %s\nwant %s", tc.d.Name, tc.topic, got, tc.want)
		}
		_, _, ok, _ := tc.d.Encode(tc.topic, []byte(`{"open":1,"level":1,"t":1}`))
		if ok != (tc.want == "") {
			t.Errorf("%s on %q: Encode ok %v but ExplainTopic %q", tc.d.Name, tc.topic, ok, tc.want)
		}
	}
}

func TestDownlinkRunTests(t *testing.T) {
	tab := mustLoadTOML(t, `
[[downlink]]
name = "valve"
listener = "lora"
filter = "cmd/{device}/valve"
fields = [ { value = "/open", type = "uint8" } ]
tests = [
  { message = { topic = "cmd/d1/valve", payload = '{"open":1}' }, hex = "01" },
  { message = { topic = "cmd/d1/valve", payload = '{"open":2}' }, hex = "01" },
  { message = { topic = "cmd/d1/valve", payload = '{"open":1}' }, hex = "01", device = "d2" },
  { message = { topic = "cmd/d1/tap", payload = '{"open":1}' }, hex = "01" },
  { message = { topic = "cmd/d1/valve", payload = '{"open":300}' }, text = "x" },
]
`)
	checkProblems(t, tab.RunTests(), []problem{
		{key: "downlink[0].tests[1]", msg: `expected datagram 01, got 02`},
		{key: "downlink[0].tests[2]", msg: `expected device "d2", got "d1"`},
		{key: "downlink[0].tests[3]", msg: `the message does not match: topic "cmd/d1/tap" has "tap" where level 3 of filter "cmd/{device}/valve" is "valve"`},
		{key: "downlink[0].tests[4]", msg: `expected datagram "x", got error: mapping: downlink "valve": decode: fields[0]: "/open" is 300, out of range for uint8`},
	})
}

func TestDownlinkProblems(t *testing.T) {
	dl := func(lines ...string) string {
		return "[[downlink]]\n" + strings.Join(lines, "\n") + "\n"
	}
	valve := []string{`name = "v"`, `listener = "lora"`, `filter = "cmd/{device}"`} // lines 2-4
	with := func(extra ...string) string { return dl(append(append([]string(nil), valve...), extra...)...) }
	runTOMLCases(t, []tomlCase{
		{"no name", dl(`listener = "lora"`, `filter = "c/{device}"`), 1, `downlink[0].name: name is empty`},
		{"duplicate name", with() + with(), 6, `downlink[1].name: duplicate downlink name "v" (also downlink[0])`},
		{"no listener", dl(`name = "v"`, `filter = "c/{device}"`), 1, `downlink[0].listener: missing: name the udp listener whose socket sends the datagrams (udp listeners: sensors, lora)`},
		{"unknown listener", dl(`name = "v"`, `listener = "x"`, `filter = "c/{device}"`), 3, `downlink[0].listener: unknown listener "x" (listeners: sensors, lora, sn)`},
		{"listener not udp", dl(`name = "v"`, `listener = "sn"`, `filter = "c/{device}"`), 3, `downlink[0].listener: listener "sn" is of type "mqttsn": downlinks go to plain-UDP devices, on a listener of type "udp" (mqttsn and coap devices subscribe or observe themselves; udp listeners: sensors, lora)`},
		{"no filter", dl(`name = "v"`, `listener = "lora"`), 1, `downlink[0].filter: missing: an MQTT filter with a {device} level, such as "cmd/{device}/valve"`},
		{"no device", dl(`name = "v"`, `listener = "lora"`, `filter = "cmd/{id}/+"`), 4, `downlink[0].filter: filter "cmd/{id}/+" has no {device} level: it names the device the datagram goes to`},
		{"partial level", dl(`name = "v"`, `listener = "lora"`, `filter = "cmd/dev-{device}"`), 4, `downlink[0].filter: filter "cmd/dev-{device}" has no {device} level: it names the device the datagram goes to`},
		{"partial level mixes", dl(`name = "v"`, `listener = "lora"`, `filter = "cmd/dev-{device}/{device}"`), 4, `downlink[0].filter: filter "cmd/dev-{device}/{device}": level "dev-{device}" mixes text with a wildcard or capture: a level is literal text, +, # (last) or {name}, whole`},
		{"hash not last", dl(`name = "v"`, `listener = "lora"`, `filter = "#/{device}"`), 4, `downlink[0].filter: filter "#/{device}": '#' must be the last level (MQTT 3.1.1 §4.7.1.2)`},
		{"capture twice", dl(`name = "v"`, `listener = "lora"`, `filter = "{device}/{device}"`), 4, `downlink[0].filter: filter "{device}/{device}": capture {device} appears twice`},
		{"builtin capture", dl(`name = "v"`, `listener = "lora"`, `filter = "{topic}/{device}"`), 4, `downlink[0].filter: filter "{topic}/{device}": {topic} is a built-in name (gateway, listener, topic, payload); name the capture otherwise`},
		{"bad capture", dl(`name = "v"`, `listener = "lora"`, `filter = "{1x}/{device}"`), 4, `downlink[0].filter: filter "{1x}/{device}": bad capture {1x}: want {name} with name a letter or '_' followed by letters, digits or '_'`},
		{"mountpoint without slash", "[[listener]]\nname = \"m\"\ntype = \"udp\"\nbind = \"127.0.0.1:0\"\nmountpoint = \"site\"\n" + dl(`name = "v"`, `listener = "m"`, `filter = "{device}"`), 9, `downlink[0].filter: filter "{device}" starts with a wildcard or capture, but the mountpoint "site" of listener "m" does not end in '/'`},
		{"unknown payload", with(`payload = "cbor"`), 5, `downlink[0].payload: unknown payload "cbor" (want raw, template or fields)`},
		{"template missing", with(`payload = "template"`), 1, `downlink[0].template: missing: payload is "template", so give the template`},
		{"fields missing", with(`payload = "fields"`), 1, `downlink[0].fields: missing: payload is "fields", so list the numbers to pack, such as [ { value = "/open", type = "uint8" } ]`},
		{"template with raw", with(`payload = "raw"`, `template = "x"`), 6, `downlink[0].template: template is set but payload is "raw"; set payload = "template" or drop template`},
		{"fields with template", with(`payload = "template"`, `template = "x"`, `fields = [ { value = "/a", type = "int8" } ]`), 7, `downlink[0].fields: fields are set but payload is "template"; set payload = "fields" or drop fields`},
		{"template and fields", with(`template = "x"`, `fields = [ { value = "/a", type = "int8" } ]`), 1, `downlink[0]: template and fields are both set: set payload = "template" or "fields" and drop the other`},
		{"template unknown name", with(`template = "{device} {site} {payload}"`), 5, `downlink[0].template: unknown placeholder {site} in template (known: device, gateway, listener, topic, payload)`},
		{"template syntax", with(`template = "{device"`), 5, `downlink[0].template: template: unclosed '{' at offset 0 (write '{{' for a literal brace)`},
		{"unknown deliver", with(`deliver = "later"`), 5, `downlink[0].deliver: unknown deliver "later" (want now or on_uplink)`},
		{"field unknown type", with(`fields = [ { value = "/a", type = "int24" } ]`), 5, `downlink[0].fields[0].type: unknown type "int24" (want int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, float64)`},
		{"field no type", with(`fields = [`, `  { value = "/a", type = "int8" },`, `  { value = "/b" },`, `]`), 7, `downlink[0].fields[1].type: missing: want one of int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, float64`},
		{"field bad pointer", with(`fields = [ { value = "a", type = "int8" } ]`), 5, `downlink[0].fields[0].value: JSON pointer "a" must start with '/' (RFC 6901)`},
		{"field no pointer", with(`fields = [ { type = "int8" } ]`), 5, `downlink[0].fields[0].value: missing: a JSON pointer into the MQTT payload, such as "/open"`},
		{"field bad endian", with(`fields = [ { value = "/a", type = "int8", endian = "middle" } ]`), 5, `downlink[0].fields[0].endian: unknown endian "middle" (want big or little)`},
		{"field unknown key", with(`fields = [ { valeu = "/a", type = "int8" } ]`), 5, `downlink[0].fields[0].valeu: unknown key "valeu" (did you mean "value"?)`},
		{"ttl zero", with(`deliver = "on_uplink"`, `ttl = "0s"`), 6, `downlink[0].ttl: 0s: want more than 0 (leave ttl out for 10m0s)`},
		{"max_queued zero", with(`deliver = "on_uplink"`, `max_queued = 0`), 6, `downlink[0].max_queued: 0 is out of range 1..10000`},
		{"ttl ignored", with(`ttl = "1m"`), 5, `warning: downlink[0].ttl: ignored: deliver is "now"; ttl applies to deliver = "on_uplink"`},
		{"test hex and text", with(`tests = [ { message = { topic = "cmd/d" }, hex = "00", text = "x" } ]`), 5, `downlink[0].tests[0]: set one of hex and text, not both`},
		{"test nothing expected", with(`tests = [ { message = { topic = "cmd/d" } } ]`), 5, `downlink[0].tests[0]: set hex or text: the datagram the message must encode to`},
		{"test bad hex", with(`tests = [ { message = { topic = "cmd/d" }, hex = "0g" } ]`), 5, `downlink[0].tests[0].hex: invalid hex "0g": invalid byte: U+0067 'g'`},
		{"test no topic", with(`tests = [ { message = { payload = "x" }, hex = "00" } ]`), 5, `downlink[0].tests[0].message.topic: missing: the topic of the test message, as the broker has it (mountpoint included)`},
		{"test unknown key", with(`tests = [ { mesage = { topic = "x" }, hex = "00" } ]`), 5, `downlink[0].tests[0].mesage: unknown key "mesage" (did you mean "message"?)`},
	})
}
