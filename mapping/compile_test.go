package mapping

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/mqttgw/mqttgw/config"
)

// problem is an expected problem: key path and a substring of the message.
type problem struct {
	key, msg string
	warning  bool
}

func checkProblems(t *testing.T, got config.Problems, want []problem) {
	t.Helper()
	var g, w []string
	for _, p := range got {
		g = append(g, fmt.Sprintf("%v %s: %s", p.Warning, p.Key, p.Msg))
	}
	for _, p := range want {
		w = append(w, fmt.Sprintf("%v %s: %s", p.warning, p.key, p.msg))
	}
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = got[i].Key == want[i].key && got[i].Warning == want[i].warning && strings.Contains(got[i].Msg, want[i].msg)
	}
	if !ok {
		t.Errorf("problems:\n got %s\nwant %s", strings.Join(g, "\n     "), strings.Join(w, "\n     "))
	}
}

func TestCompileProblems(t *testing.T) {
	type edit func(r *config.Rule)
	cases := []struct {
		name string
		base func() config.Rule
		edit edit
		want []problem
	}{
		{"unknown listener", binRule, func(r *config.Rule) { r.Listener = "x" },
			[]problem{{key: "rule[0].listener", msg: `unknown listener "x" (listeners: udp, lora)`}}},
		{"no listener", binRule, func(r *config.Rule) { r.Listener = "" },
			[]problem{{key: "rule[0].listener", msg: `missing: name the listener this rule maps`}}},
		{"no name", binRule, func(r *config.Rule) { r.Name = "" },
			[]problem{{key: "rule[0].name", msg: "name is empty"}}},
		{"bad hex", binRule, func(r *config.Rule) { r.Match.HexPrefix = "a5z1" },
			[]problem{{key: "rule[0].match.hex_prefix", msg: `invalid hex "a5z1": invalid byte: U+007A 'z'`}}},
		{"odd hex", binRule, func(r *config.Rule) { r.Match.HexPrefix = "a50" },
			[]problem{{key: "rule[0].match.hex_prefix", msg: `invalid hex "a50": odd length hex string`}}},
		{"bad regex", textRule, func(r *config.Rule) { r.Match.Regex = `(?P<dev>x` },
			[]problem{{key: "rule[0].match.regex", msg: "error parsing regexp: missing closing )"}}},
		{"min > max", binRule, func(r *config.Rule) { r.Match.MinLen = 40 },
			[]problem{{key: "rule[0].match.min_len", msg: "min_len 40 is greater than max_len 32"}}},
		{"negative len", binRule, func(r *config.Rule) { r.Match.MinLen = -1 },
			[]problem{{key: "rule[0].match.min_len", msg: "min_len -1 is negative"}}},
		{"prefix longer than max", binRule, func(r *config.Rule) {
			r.Match.MaxLen = 1
			r.Match.MinLen = 0
			r.Fields = nil
			r.Device = config.Extract{}
			r.Publish = r.Publish[:1]
		},
			[]problem{{key: "rule[0].match.hex_prefix", msg: "hex_prefix is 2 bytes, longer than max_len 1"}}},
		{"device two sources", binRule, func(r *config.Rule) { r.Device.JSON = "/id" },
			[]problem{{key: "rule[0].device", msg: "more than one source set (json, offset)"}}},
		{"device unknown group", textRule, func(r *config.Rule) { r.Device.Group = "id" },
			[]problem{{key: "rule[0].device.group", msg: `unknown group "id" in match.regex (groups: dev, h, t)`}}},
		{"device group without regex", binRule, func(r *config.Rule) { r.Device = config.Extract{Group: "id"} },
			[]problem{{key: "rule[0].device.group", msg: `group "id" needs match.regex`}}},
		{"device bad pointer", jsonRule, func(r *config.Rule) { r.Device.JSON = "id" },
			[]problem{{key: "rule[0].device.json", msg: `JSON pointer "id" must start with '/'`}}},
		{"device bad pointer escape", jsonRule, func(r *config.Rule) { r.Device.JSON = "/a~2" },
			[]problem{{key: "rule[0].device.json", msg: `'~' must be followed by 0 or 1`}}},
		{"device zero length", binRule, func(r *config.Rule) { r.Device.Length = 0 },
			[]problem{{key: "rule[0].device.length", msg: "length must be at least 1, not 0"}}},
		{"device negative offset", binRule, func(r *config.Rule) { r.Device.Offset = intp(-1) },
			[]problem{{key: "rule[0].device.offset", msg: "offset -1 is negative"}}},
		{"device beyond max_len", binRule, func(r *config.Rule) { r.Device.Offset = intp(30) },
			[]problem{{key: "rule[0].device.offset", msg: "bytes 30..35 lie beyond the longest datagram this rule accepts (32 bytes)"}}},
		{"device bad as", binRule, func(r *config.Rule) { r.Device.As = "base64" },
			[]problem{{key: "rule[0].device.as", msg: `unknown as "base64" (want hex or ascii)`}}},
		{"device as without offset", jsonRule, func(r *config.Rule) { r.Device.As = "ascii"; r.Device.Length = 2 },
			[]problem{{key: "rule[0].device.length", msg: "length needs offset"}, {key: "rule[0].device.as", msg: "as needs offset"}}},
		{"device bad source", binRule, func(r *config.Rule) { r.Device = config.Extract{Source: "mac"} },
			[]problem{{key: "rule[0].device.source", msg: `unknown source "mac" (want addr or ip)`}}},
		{"field bad name", binRule, func(r *config.Rule) { r.Fields["1x"] = r.Fields["temp"] },
			[]problem{{key: "rule[0].fields.1x", msg: `field name "1x" is not an identifier`}}},
		{"field reserved name", binRule, func(r *config.Rule) { r.Fields["gateway"] = r.Fields["temp"] },
			[]problem{{key: "rule[0].fields.gateway", msg: `field name "gateway" is reserved (reserved: device, gateway, listener)`}}},
		{"field unknown type", binRule, func(r *config.Rule) { f := r.Fields["temp"]; f.Type = "int24"; r.Fields["temp"] = f },
			[]problem{{key: "rule[0].fields.temp.type", msg: `unknown type "int24" (want int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, float64, hex, ascii)`}}},
		{"field beyond max_len", binRule, func(r *config.Rule) { f := r.Fields["temp"]; f.Offset = intp(31); r.Fields["temp"] = f },
			[]problem{{key: "rule[0].fields.temp.offset", msg: "bytes 31..32 lie beyond the longest datagram this rule accepts (32 bytes)"}}},
		{"field no source", binRule, func(r *config.Rule) { r.Fields["temp"] = config.Field{Type: "int8"} },
			[]problem{{key: "rule[0].fields.temp", msg: "no source: set one of json, group, offset"}}},
		{"field two sources", jsonRule, func(r *config.Rule) { r.Fields["temp"] = config.Field{JSON: "/t", Offset: intp(0), Type: "int8"} },
			[]problem{{key: "rule[0].fields.temp", msg: "more than one source set (json, offset)"}}},
		{"field offset no type", binRule, func(r *config.Rule) { r.Fields["temp"] = config.Field{Offset: intp(8)} },
			[]problem{{key: "rule[0].fields.temp.type", msg: "offset needs type"}}},
		{"field hex no length", binRule, func(r *config.Rule) { r.Fields["temp"] = config.Field{Offset: intp(8), Type: "hex"} },
			[]problem{{key: "rule[0].fields.temp.length", msg: "length must be at least 1, not 0"}}},
		{"field length contradicts type", binRule, func(r *config.Rule) { f := r.Fields["temp"]; f.Length = 4; r.Fields["temp"] = f },
			[]problem{{key: "rule[0].fields.temp.length", msg: "length 4 contradicts type int16 (2 bytes)"}}},
		{"field bad endian", binRule, func(r *config.Rule) { f := r.Fields["temp"]; f.Endian = "middle"; r.Fields["temp"] = f },
			[]problem{{key: "rule[0].fields.temp.endian", msg: `unknown endian "middle" (want big or little)`}}},
		{"field endian on json", jsonRule, func(r *config.Rule) { r.Fields["temp"] = config.Field{JSON: "/t", Endian: "little"} },
			[]problem{{key: "rule[0].fields.temp.endian", msg: "endian applies to a binary number"}}},
		{"field type on json", jsonRule, func(r *config.Rule) { r.Fields["temp"] = config.Field{JSON: "/t", Type: "int8"} },
			[]problem{{key: "rule[0].fields.temp.type", msg: "type applies to offset and group fields"}}},
		{"field hex type on group", textRule, func(r *config.Rule) { r.Fields["temp"] = config.Field{Group: "t", Type: "hex"} },
			[]problem{{key: "rule[0].fields.temp.type", msg: `type "hex" applies to offset fields`}}},
		{"field scale on hex", binRule, func(r *config.Rule) {
			r.Fields["temp"] = config.Field{Offset: intp(8), Type: "hex", Length: 2, Scale: 2}
		},
			[]problem{{key: "rule[0].fields.temp", msg: `scale and add apply to numbers, not to type "hex"`}}},
		{"field scale NaN", binRule, func(r *config.Rule) { f := r.Fields["temp"]; f.Scale = math.NaN(); r.Fields["temp"] = f },
			[]problem{{key: "rule[0].fields.temp.scale", msg: "scale must be a finite number"}}},
		{"field unknown group", textRule, func(r *config.Rule) { r.Fields["temp"] = config.Field{Group: "x"} },
			[]problem{{key: "rule[0].fields.temp.group", msg: `unknown group "x" in match.regex (groups: dev, h, t)`}}},
		{"no publish", binRule, func(r *config.Rule) { r.Publish = nil },
			[]problem{{key: "rule[0].publish", msg: "no publish"}}},
		{"empty topic", binRule, func(r *config.Rule) { r.Publish[1].Topic = "" },
			[]problem{{key: "rule[0].publish[1].topic", msg: "topic is empty"}}},
		{"wildcard +", binRule, func(r *config.Rule) { r.Publish[1].Topic = "a/+/{device}" },
			[]problem{{key: "rule[0].publish[1].topic", msg: `topic "a/+/{device}" contains '+'`}}},
		{"wildcard #", binRule, func(r *config.Rule) { r.Publish[0].Topic = "a/#" },
			[]problem{{key: "rule[0].publish[0].topic", msg: `topic "a/#" contains '#'`}}},
		{"unknown placeholder", binRule, func(r *config.Rule) { r.Publish[1].Topic = "x/{tmp}/{dev}/{tmp}" },
			[]problem{{key: "rule[0].publish[1].topic", msg: `unknown placeholder {tmp}, {dev} in topic "x/{tmp}/{dev}/{tmp}" (known: device, gateway, listener, batt, hum, temp)`}}},
		{"unknown placeholder lists groups", textRule, func(r *config.Rule) { r.Publish[1].Topic = "{x}" },
			[]problem{{key: "rule[0].publish[1].topic", msg: `(known: device, gateway, listener, hum, temp, dev, h, t)`}}},
		{"unclosed brace", binRule, func(r *config.Rule) { r.Publish[0].Topic = "a/{device" },
			[]problem{{key: "rule[0].publish[0].topic", msg: `topic "a/{device": unclosed '{' at offset 2`}}},
		{"single close brace", binRule, func(r *config.Rule) { r.Publish[0].Topic = "a}" },
			[]problem{{key: "rule[0].publish[0].topic", msg: `single '}' at offset 1 (write '}}' for a literal brace)`}}},
		{"bad placeholder name", binRule, func(r *config.Rule) { r.Publish[0].Topic = "{a b}" },
			[]problem{{key: "rule[0].publish[0].topic", msg: `bad placeholder {a b} at offset 0`}}},
		{"unknown payload", binRule, func(r *config.Rule) { r.Publish[0].Payload = "cbor" },
			[]problem{{key: "rule[0].publish[0].payload", msg: `unknown payload "cbor" (want json, raw or template)`}}},
		{"template with json payload", binRule, func(r *config.Rule) { r.Publish[1].Payload = "json" },
			[]problem{{key: "rule[0].publish[1].template", msg: `template is set but payload is "json"`}}},
		{"template unknown name", binRule, func(r *config.Rule) { r.Publish[1].Template = "{temp} {tmp}" },
			[]problem{{key: "rule[0].publish[1].template", msg: `unknown placeholder {tmp} in template (known: device, gateway, listener, batt, hum, temp)`}}},
		{"template syntax", binRule, func(r *config.Rule) { r.Publish[1].Template = `{"t":{temp}}` },
			[]problem{{key: "rule[0].publish[1].template", msg: `template: unclosed '{' at offset 0 (write '{{' for a literal brace)`}}},
		{"qos 3", binRule, func(r *config.Rule) { r.Publish[0].QoS = 3 },
			[]problem{{key: "rule[0].publish[0].qos", msg: "qos 3 is not 0, 1 or 2"}}},
		{"test hex and text", binRule, func(r *config.Rule) {
			r.Tests = []config.RuleTest{{Hex: "00", Text: "x", NoMatch: true}}
		}, []problem{{key: "rule[0].tests[0]", msg: "set one of hex and text, not both"}}},
		{"test no datagram", binRule, func(r *config.Rule) { r.Tests = []config.RuleTest{{NoMatch: true}} },
			[]problem{{key: "rule[0].tests[0]", msg: "set hex or text"}}},
		{"test bad hex and from", binRule, func(r *config.Rule) {
			r.Tests = []config.RuleTest{{Text: "x", NoMatch: true}, {Hex: "0g", From: "localhost:1", NoMatch: true}}
		}, []problem{{key: "rule[0].tests[1].hex", msg: `invalid hex "0g"`}, {key: "rule[0].tests[1].from", msg: `from "localhost:1" is not ip:port`}}},
		{"test expect and no_match", binRule, func(r *config.Rule) {
			r.Tests = []config.RuleTest{{Text: "x", NoMatch: true, Expect: map[string]string{"a": "b"}}}
		}, []problem{{key: "rule[0].tests[0]", msg: "no_match and expect are both set"}}},
		{"test expects nothing", binRule, func(r *config.Rule) { r.Tests = []config.RuleTest{{Text: "x"}} },
			[]problem{{key: "rule[0].tests[0]", msg: "set expect (topic = payload) or no_match = true"}}},
		{"dollar topic warns", binRule, func(r *config.Rule) { r.Listener = "lora"; r.Publish[0].Topic = "$aws/{device}" },
			[]problem{{key: "rule[0].publish[0].topic", msg: `topic "$aws/{device}" starts with '$'`, warning: true}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.base()
			tc.edit(&r)
			tab, ps := Compile("gw1", testListeners, []config.Rule{r})
			checkProblems(t, ps, tc.want)
			if hasErr := len(ps.Errors()) > 0; hasErr != (tab == nil) {
				t.Errorf("errors %v but table %v", ps.Errors(), tab)
			}
		})
	}
}

func TestCompileTableProblems(t *testing.T) {
	t.Run("duplicate names", func(t *testing.T) {
		_, ps := Compile("gw1", testListeners, []config.Rule{binRule(), jsonRule(), binRule()})
		checkProblems(t, ps, []problem{{key: "rule[2].name", msg: `duplicate rule name "bin" (also rule[0])`}})
	})
	t.Run("rule on a listener of another type", func(t *testing.T) {
		ls := []config.Listener{{Name: "udp", Type: "udp"}, {Name: "sn", Type: "mqttsn"}}
		r := binRule()
		r.Listener = "sn"
		_, ps := Compile("gw1", ls, []config.Rule{r})
		checkProblems(t, ps, []problem{
			{key: "rule[0].match.topic", msg: `missing: a rule of a mqttsn listener matches a topic pattern`},
			{key: "rule[0].match", msg: `a rule of a mqttsn listener matches by topic only`},
			{key: "rule[0]", msg: `device, fields and tests belong to rules of udp listeners`},
			{key: "rule[0].publish", msg: `a topic rule has exactly one [[rule.publish]] with the new topic, not 2`},
		})
	})
	t.Run("bad gateway id", func(t *testing.T) {
		r := binRule()
		r.Publish[0].Topic = "gw/{gateway}/{device}"
		_, ps := Compile("a/b", testListeners, []config.Rule{r, jsonRule()})
		checkProblems(t, ps, []problem{{key: "rule[0].publish[0].topic", msg: `{gateway} is "a/b", which cannot be a topic level: it contains '/'`}})
	})
	t.Run("max_packet bounds fields", func(t *testing.T) {
		ls := []config.Listener{{Name: "udp", MaxPacket: 12}}
		_, ps := Compile("gw1", ls, []config.Rule{binRule()})
		checkProblems(t, ps, []problem{
			{key: "rule[0].fields.batt.offset", msg: "bytes 12..13 lie beyond the longest datagram this rule accepts (12 bytes)"},
		})
	})
	t.Run("unreachable", func(t *testing.T) {
		any := mkRule("any", config.Match{}, config.Extract{}, nil)
		tab, ps := Compile("gw1", testListeners, []config.Rule{binRule(), any, jsonRule(), textRule()})
		checkProblems(t, ps, []problem{
			{key: "rule[2]", msg: `unreachable: rule[1] "any" before it has an empty match and takes every datagram of listener "udp"`, warning: true},
			{key: "rule[3]", msg: `unreachable: rule[1] "any"`, warning: true},
		})
		if tab == nil {
			t.Error("warnings only, but no table")
		}
	})
}

// manyMistakes is one file with a mistake in nearly every setting; Compile must
// report them all, in file order.
const manyMistakes = `
[[listener]]
name = "udp"

[[rule]]
name = "a"
listener = "nope"
match = { hex_prefix = "xyz", regex = "(", min_len = 9, max_len = 3 }
device = { json = "id", offset = 1 }
fields.temp = { offset = 1, type = "int24" }
fields.device = { json = "/d" }
[[rule.publish]]
topic = "a/#/{nope}"
qos = 7
payload = "xml"
[[rule.tests]]
hex = "0"

[[rule]]
name = "a"
listener = "udp"
match.regex = '(?P<id>\w+)'
device.group = "ID"
[[rule.publish]]
topic = "t/{id}"
template = "{oops"
`

func TestCompileManyMistakes(t *testing.T) {
	var c config.Config
	if _, err := toml.Decode(manyMistakes, &c); err != nil {
		t.Fatal(err)
	}
	tab, ps := Compile("gw1", c.Listeners, c.Rules)
	if tab != nil {
		t.Error("got a table")
	}
	checkProblems(t, ps, []problem{
		{key: "rule[0].listener", msg: `unknown listener "nope" (listeners: udp)`},
		{key: "rule[0].match.hex_prefix", msg: `invalid hex "xyz"`},
		{key: "rule[0].match.regex", msg: "missing closing )"},
		{key: "rule[0].match.min_len", msg: "min_len 9 is greater than max_len 3"},
		{key: "rule[0].device", msg: "more than one source set (json, offset)"},
		{key: "rule[0].fields.device", msg: `field name "device" is reserved`},
		{key: "rule[0].fields.temp.type", msg: `unknown type "int24"`},
		{key: "rule[0].publish[0].qos", msg: "qos 7 is not 0, 1 or 2"},
		{key: "rule[0].publish[0].topic", msg: `topic "a/#/{nope}" contains '#'`},
		{key: "rule[0].publish[0].payload", msg: `unknown payload "xml"`},
		{key: "rule[0].tests[0].hex", msg: `invalid hex "0"`},
		{key: "rule[0].tests[0]", msg: "set expect (topic = payload) or no_match = true"},
		{key: "rule[1].name", msg: `duplicate rule name "a" (also rule[0])`},
		{key: "rule[1].device.group", msg: `unknown group "ID" in match.regex (groups: id)`},
		{key: "rule[1].publish[0].template", msg: "unclosed '{' at offset 0"},
	})
}

// goodTOML is a working rules file in the documented syntax.
const goodTOML = `
[gateway]
id = "gw1"

[[listener]]
name = "udp"
mountpoint = "site1/"

[[rule]]
name = "bin"
listener = "udp"
match = { hex_prefix = "a5 01", min_len = 14 }
device = { offset = 2, length = 6 }
fields.temp = { offset = 8, type = "int16", scale = 0.1 }
fields.hum  = { offset = 10, type = "uint16", scale = 0.1 }
fields.batt = { offset = 12, type = "uint16", scale = 0.001 }
[[rule.publish]]
topic = "sensors/{device}/state"
[[rule.publish]]
topic = "sensors/{device}/temp"
template = "{temp}"
qos = 1
retain = true
[[rule.tests]]
hex = "a501 001122334455 00d7 0190 0ce4"
expect = { "site1/sensors/001122334455/state" = '{"batt":3.3,"device":"001122334455","hum":40,"temp":21.5}', "site1/sensors/001122334455/temp" = "21.5" }
[[rule.tests]]
hex = "a501"
no_match = true

[[rule]]
name = "json"
listener = "udp"
match.json = true
device.json = "/id"
fields.t = { json = "/t" }
[[rule.publish]]
topic = "{gateway}/{listener}/{device}"
payload = "raw"
[[rule.tests]]
text = '{"id":"x","t":1}'
from = "192.0.2.1:1"
expect = { "site1/gw1/udp/x" = '{"id":"x","t":1}' }

[[rule]]
name = "hello"
listener = "udp"
match.regex = '^hello (?P<who>\w+)$'
[[rule.publish]]
topic = "hello/{device}"
template = "hi {who}"
[[rule.tests]]
text = "hello bob"
expect = { "site1/hello/127.0.0.1" = "hi bob" }
[[rule.tests]]
text = "hello bob"
from = "10.1.2.3"
expect = { "site1/hello/10.1.2.3" = "hi bob" }
`

func TestCompileTOML(t *testing.T) {
	var c config.Config
	if _, err := toml.Decode(goodTOML, &c); err != nil {
		t.Fatal(err)
	}
	tab, ps := Compile(c.Gateway.ID, c.Listeners, c.Rules)
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	if ps := tab.RunTests(); len(ps) > 0 {
		t.Fatal(ps)
	}
}
