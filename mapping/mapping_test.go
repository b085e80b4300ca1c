package mapping

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"testing"

	"github.com/mqttgw/mqttgw/config"
)

// pub is an expected publish: "topic = payload".
func pubs(ms []Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Topic + " = " + string(m.Payload)
	}
	return out
}

func fields(fs []Field) string {
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = fmt.Sprintf("%s=%s(%s)", f.Name, f.Value, f.Kind)
	}
	return strings.Join(parts, " ")
}

type mapCase struct {
	name     string
	rules    []config.Rule
	listener string // default "udp"
	from     string // default testFrom
	payload  []byte
	want     []string // "topic = payload", in order
	device   string   // checked when set
	fields   string   // checked when set
	rule     string   // checked when set
	err      error    // sentinel expected
	errText  string   // substring of the error
}

func runMapCases(t *testing.T, cases []mapCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tab := mustCompile(t, tc.rules...)
			d := Datagram{Listener: "udp", From: testFrom, Payload: tc.payload}
			if tc.listener != "" {
				d.Listener = tc.listener
			}
			if tc.from != "" {
				d.From = netip.MustParseAddrPort(tc.from)
			}
			var r Result
			err := tab.Map(d, &r)
			if tc.err != nil || err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("Map error = %v, want %v", err, tc.err)
				}
				if tc.errText != "" && !strings.Contains(err.Error(), tc.errText) {
					t.Errorf("Map error = %q, want it to contain %q", err, tc.errText)
				}
				if len(r.Publishes) != 0 {
					t.Errorf("failed Map published %q", pubs(r.Publishes))
				}
				if tc.rule != "" && r.Rule != tc.rule {
					t.Errorf("Rule = %q, want %q", r.Rule, tc.rule)
				}
				return
			}
			if got := pubs(r.Publishes); tc.want != nil && strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("publishes:\n got %q\nwant %q", got, tc.want)
			}
			if tc.device != "" && r.Device != tc.device {
				t.Errorf("Device = %q, want %q", r.Device, tc.device)
			}
			if tc.fields != "" && fields(r.Fields) != tc.fields {
				t.Errorf("Fields = %s, want %s", fields(r.Fields), tc.fields)
			}
			if tc.rule != "" && r.Rule != tc.rule {
				t.Errorf("Rule = %q, want %q", r.Rule, tc.rule)
			}
		})
	}
}

// mkRule builds a small rule on "udp" with one json publish to "t/{device}".
func mkRule(name string, m config.Match, dev config.Extract, fs map[string]config.Field, ps ...config.Publish) config.Rule {
	if len(ps) == 0 {
		ps = []config.Publish{{Topic: "t/{device}"}}
	}
	return config.Rule{Name: name, Listener: "udp", Match: m, Device: dev, Fields: fs, Publish: ps}
}

func TestMapFixtures(t *testing.T) {
	runMapCases(t, []mapCase{
		{
			name:    "binary",
			rules:   []config.Rule{binRule()},
			payload: binFrame,
			want: []string{
				`site1/sensors/001122334455/state = {"batt":3.3,"device":"001122334455","hum":40,"temp":21.5}`,
				`site1/sensors/001122334455/temp = 21.5`,
			},
			device: "001122334455",
			fields: "batt=3.3(number) hum=40(number) temp=21.5(number)",
			rule:   "bin",
		},
		{
			name:    "json",
			rules:   []config.Rule{jsonRule()},
			payload: jsonDoc,
			want: []string{
				`site1/sensors/dev-7/env = {"device":"dev-7","kind":"env","meta":{"fw":"1.2"},"temp":21.5}`,
			},
			fields: `kind=env(string) meta={"fw":"1.2"}(json) temp=21.5(number)`,
		},
		{
			name:    "text",
			rules:   []config.Rule{textRule()},
			payload: textLine,
			want: []string{
				`site1/text/dev42 = 21.5;40`,
				`site1/text/dev42/json = {"device":"dev42","hum":40,"temp":21.5}`,
			},
		},
	})
}

func TestMapQoSRetain(t *testing.T) {
	tab := mustCompile(t, binRule())
	var r Result
	if err := tab.Map(Datagram{Listener: "udp", From: testFrom, Payload: binFrame}, &r); err != nil {
		t.Fatal(err)
	}
	if m := r.Publishes[0]; m.QoS != 0 || m.Retain {
		t.Errorf("publish 0: qos %d retain %v, want 0 false", m.QoS, m.Retain)
	}
	if m := r.Publishes[1]; m.QoS != 1 || !m.Retain {
		t.Errorf("publish 1: qos %d retain %v, want 1 true", m.QoS, m.Retain)
	}
}

func TestMapBinaryNumbers(t *testing.T) {
	// frame: 8 bytes from 0x80 down, then a float32 and a float64.
	frame := []byte{
		0xff, 0xfe, // 0: int16 BE -2; as LE 0xfeff = -257
		0x80,                   // 2: int8 -128, uint8 128
		0xff, 0xff, 0xff, 0xff, // 3: int32 -1, uint32 4294967295
		0x41, 0xac, 0x00, 0x00, // 7: float32 BE 21.5
		0x40, 0x35, 0x80, 0, 0, 0, 0, 0, // 11: float64 BE 21.5
		0x7f, 0xc0, 0x00, 0x00, // 19: float32 NaN
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // 23: uint64 max, int64 -1
		0x00, 0x00, 0xb0, 0x41, // 31: float32 LE 22
	}
	f := func(off int, typ, endian string, scale, add float64) map[string]config.Field {
		return map[string]config.Field{"v": {Offset: intp(off), Type: typ, Endian: endian, Scale: scale, Add: add}}
	}
	tp := []config.Publish{{Topic: "t", Template: "{v}"}}
	cases := []struct {
		name string
		fs   map[string]config.Field
		want string
	}{
		{"int16 big", f(0, "int16", "", 0, 0), "-2"},
		{"int16 little", f(0, "int16", "little", 0, 0), "-257"},
		{"uint16 big", f(0, "uint16", "big", 0, 0), "65534"},
		{"int8", f(2, "int8", "", 0, 0), "-128"},
		{"uint8", f(2, "uint8", "", 0, 0), "128"},
		{"int32", f(3, "int32", "", 0, 0), "-1"},
		{"uint32", f(3, "uint32", "", 0, 0), "4294967295"},
		{"float32", f(7, "float32", "", 0, 0), "21.5"},
		{"float64", f(11, "float64", "", 0, 0), "21.5"},
		{"float32 NaN is null", f(19, "float32", "", 0, 0), "null"},
		{"uint64 max", f(23, "uint64", "", 0, 0), "18446744073709551615"},
		{"int64", f(23, "int64", "", 0, 0), "-1"},
		{"float32 little", f(31, "float32", "little", 0, 0), "22"},
		{"scale 1 keeps integer", f(0, "int16", "", 1, 0), "-2"},
		{"add only", f(2, "uint8", "", 0, -100), "28"},
		{"scale and add", f(2, "uint8", "", 0.5, 0.25), "64.25"},
		{"scale noise rounded", f(0, "uint16", "", 0.1, 0), "6553.4"},
		{"float scaled", f(7, "float32", "", 2, 0), "43"},
		{"NaN scaled is null", f(19, "float32", "", 2, 0), "null"},
		{"decimal scale negative", f(0, "int16", "", 0.001, 0), "-0.002"},
		{"decimal scale int64", f(23, "int64", "", 0.01, 0), "-0.01"},
		{"decimal scale uint64", f(23, "uint64", "", 1e-9, 0), "18446744073.709551615"},
		{"decimal scale with add uses float", f(2, "uint8", "", 0.1, 1), "13.8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tab := mustCompile(t, mkRule("r", config.Match{}, config.Extract{}, tc.fs, tp...))
			var r Result
			if err := tab.Map(Datagram{Listener: "udp", From: testFrom, Payload: frame}, &r); err != nil {
				t.Fatal(err)
			}
			if got := string(r.Publishes[0].Payload); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestScaledFormat(t *testing.T) {
	cases := []struct {
		v    float64
		want string
	}{
		{215 * 0.1, "21.5"},
		{0.1 + 0.2, "0.3"},
		{100, "100"},
		{-0.5, "-0.5"},
		{123456789012345, "123456789012345"},
		{1e21, "1e+21"},
		{0.00001, "1e-05"},
		{math.Inf(1), "null"},
	}
	for _, tc := range cases {
		var r Result
		v := r.scaled(&extractor{scale: 1}, tc.v)
		if got := string(r.text[v.t0:v.t1]); got != tc.want {
			t.Errorf("scaled(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
}

func TestMapDevice(t *testing.T) {
	tp := config.Publish{Topic: "t", Template: "{device}"}
	dev := func(e config.Extract) []config.Rule {
		return []config.Rule{mkRule("r", config.Match{}, e, nil, tp)}
	}
	runMapCases(t, []mapCase{
		{name: "default is sender ip", rules: dev(config.Extract{}), payload: []byte("x"), want: []string{"site1/t = 10.0.0.7"}},
		{name: "ip", rules: dev(config.Extract{Source: "ip"}), payload: []byte("x"), want: []string{"site1/t = 10.0.0.7"}},
		{name: "addr", rules: dev(config.Extract{Source: "addr"}), payload: []byte("x"), want: []string{"site1/t = 10.0.0.7:40001"}},
		{name: "mapped v4 is unmapped", rules: dev(config.Extract{Source: "addr"}), from: "[::ffff:10.0.0.8]:5", payload: []byte("x"), want: []string{"site1/t = 10.0.0.8:5"}},
		{name: "ipv6", rules: dev(config.Extract{}), from: "[2001:db8::1]:5", payload: []byte("x"), want: []string{"site1/t = 2001:db8::1"}},
		{name: "hex bytes", rules: dev(config.Extract{Offset: intp(1), Length: 2}), payload: []byte{0, 0xab, 0xcd, 0}, want: []string{"site1/t = abcd"}},
		{name: "ascii bytes trim NUL", rules: dev(config.Extract{Offset: intp(0), Length: 6, As: "ascii"}), payload: []byte("ab12\x00\x00rest"), want: []string{"site1/t = ab12"}},
		{name: "bytes beyond end", rules: dev(config.Extract{Offset: intp(2), Length: 4}), payload: []byte("abc"), err: ErrDecode, errText: `rule "r": decode: device: bytes 2..5 are beyond the end of the 3-byte datagram`, rule: "r"},
		{name: "ascii all NUL is empty", rules: dev(config.Extract{Offset: intp(0), Length: 2, As: "ascii"}), payload: []byte{0, 0}, err: ErrDecode, errText: "device id is empty"},
		{name: "json string", rules: dev(config.Extract{JSON: "/id"}), payload: []byte(`{"id":"a\u00e9"}`), want: []string{"site1/t = aé"}},
		{name: "json number", rules: dev(config.Extract{JSON: "/id"}), payload: []byte(`{"id":42}`), want: []string{"site1/t = 42"}},
		{name: "json object", rules: dev(config.Extract{JSON: "/id"}), payload: []byte(`{"id":{}}`), err: ErrDecode, errText: "not a string or number"},
		{name: "json missing", rules: dev(config.Extract{JSON: "/id"}), payload: []byte(`{"ID":1}`), err: ErrDecode, errText: `JSON pointer "/id" matches nothing`},
		{name: "json empty string", rules: dev(config.Extract{JSON: "/id"}), payload: []byte(`{"id":""}`), err: ErrDecode, errText: "device id is empty"},
		{name: "not json", rules: dev(config.Extract{JSON: "/id"}), payload: []byte(`{"id":`), err: ErrDecode, errText: "payload: not valid JSON"},
		{
			name:    "group",
			rules:   []config.Rule{mkRule("r", config.Match{Regex: `^id=(?P<id>\w+)`}, config.Extract{Group: "id"}, nil, tp)},
			payload: []byte("id=abc;x"), want: []string{"site1/t = abc"},
		},
		{
			name:    "group not in match",
			rules:   []config.Rule{mkRule("r", config.Match{Regex: `^(id=(?P<id>\w+))?`}, config.Extract{Group: "id"}, nil, tp)},
			payload: []byte("x"), err: ErrDecode, errText: `group "id" did not take part in the match`,
		},
		{name: "json device in json payload is a string", rules: []config.Rule{mkRule("r", config.Match{}, config.Extract{JSON: "/id"}, nil)}, payload: []byte(`{"id":7}`), want: []string{`site1/t/7 = {"device":"7"}`}},
	})
}

func TestMapMatch(t *testing.T) {
	m := func(name string, m config.Match) config.Rule {
		return mkRule(name, m, config.Extract{}, nil, config.Publish{Topic: name, Template: "x"})
	}
	all := []config.Rule{
		m("hex", config.Match{HexPrefix: "ca fe"}),
		m("text", config.Match{TextPrefix: "hello"}),
		m("short", config.Match{MaxLen: 3}),
		m("json", config.Match{JSON: true}),
		m("regex", config.Match{Regex: `^[0-9]+$`}),
		m("both", config.Match{TextPrefix: "AB", MinLen: 5}),
	}
	lora := m("lora", config.Match{})
	lora.Listener = "lora"
	all = append(all, lora)
	runMapCases(t, []mapCase{
		{name: "hex prefix", rules: all, payload: []byte{0xca, 0xfe, 1, 2, 3, 4}, rule: "hex", want: []string{"site1/hex = x"}},
		{name: "text prefix", rules: all, payload: []byte("hello world"), rule: "text"},
		{name: "max_len", rules: all, payload: []byte("abc"), rule: "short"},
		{name: "json object", rules: all, payload: []byte(` {"a":[1]} `), rule: "json"},
		{name: "json array is not an object", rules: all, payload: []byte(`[1,2,3,4]`), err: ErrNoMatch},
		{name: "regex", rules: all, payload: []byte("12345"), rule: "regex"},
		{name: "all conditions", rules: all, payload: []byte("ABCDE"), rule: "both"},
		{name: "min_len fails", rules: all, payload: []byte("ABCD"), err: ErrNoMatch},
		{name: "first match wins", rules: all, payload: []byte("hel"), rule: "short"},
		{name: "other listener", rules: all, listener: "lora", payload: []byte("hello"), rule: "lora", want: []string{"lora = x"}},
		{name: "unknown listener", rules: all, listener: "nope", payload: []byte("hello"), err: ErrNoMatch},
		{name: "empty match takes all", rules: []config.Rule{m("any", config.Match{})}, payload: nil, rule: "any"},
	})
}

func TestMapFields(t *testing.T) {
	tp := func(tmpl string) config.Publish { return config.Publish{Topic: "t", Template: tmpl} }
	doc := []byte(`{"a/b":1,"m~n":2,"arr":[10,{"x":"y"},30],"s":"q\"\u00e9\n","b":true,"z":null,"dup":1,"dup":2,"e":"\u0041"}`)
	js := func(ptr string) map[string]config.Field { return map[string]config.Field{"v": {JSON: ptr}} }
	runMapCases(t, []mapCase{
		{name: "pointer ~1", rules: []config.Rule{mkRule("r", config.Match{}, config.Extract{}, js("/a~1b"), tp("{v}"))}, payload: doc, want: []string{"site1/t = 1"}},
		{name: "pointer ~0", rules: []config.Rule{mkRule("r", config.Match{}, config.Extract{}, js("/m~0n"), tp("{v}"))}, payload: doc, want: []string{"site1/t = 2"}},
		{name: "array index", rules: []config.Rule{mkRule("r", config.Match{}, config.Extract{}, js("/arr/2"), tp("{v}"))}, payload: doc, want: []string{"site1/t = 30"}},
		{name: "nested", rules: []config.Rule{mkRule("r", config.Match{}, config.Extract{}, js("/arr/1/x"), tp("{v}"))}, payload: doc, want: []string{"site1/t = y"}},
		{name: "index past end", rules: []config.Rule{mkRule("r", config.Match{}, config.Extract{}, js("/arr/3"), tp("{v}"))}, payload: doc, err: ErrDecode},
		{name: "string unescaped in template", rules: []config.Rule{mkRule("r", config.Match{}, config.Extract{}, js("/s"), tp("<{v}>"))}, payload: doc, want: []string{"site1/t = <q\"é\n>"}},
		{name: "string raw in json", rules: []config.Rule{mkRule("r", config.Match{}, config.Extract{}, js("/s"))}, payload: doc, want: []string{`site1/t/10.0.0.7 = {"device":"10.0.0.7","v":"q\"\u00e9\n"}`}},
		{name: "bool", rules: []config.Rule{mkRule("r", config.Match{}, config.Extract{}, js("/b"))}, payload: doc, want: []string{`site1/t/10.0.0.7 = {"device":"10.0.0.7","v":true}`}},
		{name: "null", rules: []config.Rule{mkRule("r", config.Match{}, config.Extract{}, js("/z"), tp("{v}"))}, payload: doc, want: []string{"site1/t = null"}},
		{name: "first duplicate key wins", rules: []config.Rule{mkRule("r", config.Match{}, config.Extract{}, js("/dup"), tp("{v}"))}, payload: doc, want: []string{"site1/t = 1"}},
		{name: "escaped key", rules: []config.Rule{mkRule("r", config.Match{}, config.Extract{}, js("/e"), tp("{v}"))}, payload: []byte(`{"\u0065":"found"}`), want: []string{"site1/t = found"}},
		{name: "scale json number", rules: []config.Rule{mkRule("r", config.Match{}, config.Extract{}, map[string]config.Field{"v": {JSON: "/arr/0", Scale: 0.1}}, tp("{v}"))}, payload: doc, want: []string{"site1/t = 1"}},
		{name: "scale json string", rules: []config.Rule{mkRule("r", config.Match{}, config.Extract{}, map[string]config.Field{"v": {JSON: "/s", Scale: 2}}, tp("{v}"))}, payload: doc, err: ErrDecode, errText: `field "v": scale/add need a number`},
		{name: "json number kept as written", rules: []config.Rule{mkRule("r", config.Match{}, config.Extract{}, js("/n"))}, payload: []byte(`{"n":2.50e0}`), want: []string{`site1/t/10.0.0.7 = {"device":"10.0.0.7","v":2.50e0}`}, fields: "v=2.50e0(number)"},
		{
			name:    "hex and ascii fields",
			rules:   []config.Rule{mkRule("r", config.Match{}, config.Extract{}, map[string]config.Field{"h": {Offset: intp(0), Type: "hex", Length: 2}, "a": {Offset: intp(2), Type: "ascii", Length: 4}})},
			payload: []byte("\x01\x02hi\"\x00"),
			want:    []string{`site1/t/10.0.0.7 = {"a":"hi\"","device":"10.0.0.7","h":"0102"}`},
		},
		{
			name:    "ascii not utf-8 in json",
			rules:   []config.Rule{mkRule("r", config.Match{}, config.Extract{}, map[string]config.Field{"a": {Offset: intp(0), Type: "ascii", Length: 2}})},
			payload: []byte("\xff\x01"),
			want:    []string{`site1/t/10.0.0.7 = {"a":"\ufffd\u0001","device":"10.0.0.7"}`},
		},
		{
			name:    "field beyond end",
			rules:   []config.Rule{mkRule("r", config.Match{}, config.Extract{}, map[string]config.Field{"v": {Offset: intp(3), Type: "uint16"}})},
			payload: []byte("abcd"), err: ErrDecode, errText: `field "v": bytes 3..4 are beyond the end of the 4-byte datagram`,
		},
		{
			name: "group numbers",
			rules: []config.Rule{mkRule("r", config.Match{Regex: `(?P<a>\S+) (?P<b>\S+) (?P<c>\S+)`}, config.Extract{}, map[string]config.Field{
				"a": {Group: "a", Type: "int8"}, "b": {Group: "b", Scale: 10}, "c": {Group: "c"},
			})},
			payload: []byte("-5 2.5 007"),
			want:    []string{`site1/t/10.0.0.7 = {"a":-5,"b":25,"c":"007","device":"10.0.0.7"}`},
		},
		{
			name:    "group number out of range",
			rules:   []config.Rule{mkRule("r", config.Match{Regex: `(?P<a>\S+)`}, config.Extract{}, map[string]config.Field{"a": {Group: "a", Type: "int8"}})},
			payload: []byte("300"), err: ErrDecode, errText: `group "a": "300" is not a valid int8`,
		},
		{
			name:    "field shadows group",
			rules:   []config.Rule{mkRule("r", config.Match{Regex: `t=(?P<t>\d+)`}, config.Extract{}, map[string]config.Field{"t": {Group: "t", Scale: 0.5}}, tp("{t}"))},
			payload: []byte("t=5"), want: []string{"site1/t = 2.5"},
		},
	})
}

func TestMapTemplates(t *testing.T) {
	r := func(ps ...config.Publish) []config.Rule {
		return []config.Rule{mkRule("r", config.Match{Regex: `^(?P<g>[^;]*);?`}, config.Extract{JSON: "/id"}, map[string]config.Field{"v": {JSON: "/v"}}, ps...)}
	}
	lora := func(ps ...config.Publish) []config.Rule {
		rs := r(ps...)
		rs[0].Listener = "lora"
		return rs
	}
	doc := []byte(`{"id":"d1","v":"a/b"}`)
	runMapCases(t, []mapCase{
		{name: "builtins", rules: r(config.Publish{Topic: "{gateway}/{listener}/{device}", Template: "{gateway} {listener} {device} {v}"}), payload: doc, want: []string{`site1/gw1/udp/d1 = gw1 udp d1 a/b`}},
		{name: "group in template", rules: r(config.Publish{Topic: "x", Template: "[{g}]"}), payload: doc, want: []string{`site1/x = [{"id":"d1","v":"a/b"}]`}},
		{name: "braces", rules: r(config.Publish{Topic: "x{{y}}", Payload: "template", Template: `{{"id":"{device}"}}`}), payload: doc, want: []string{`site1/x{y} = {"id":"d1"}`}},
		{name: "raw payload", rules: r(config.Publish{Topic: "x", Payload: "raw"}), payload: doc, want: []string{`site1/x = ` + string(doc)}},
		{name: "empty template payload", rules: r(config.Publish{Topic: "x", Payload: "template"}), payload: doc, want: []string{`site1/x = `}},
		{name: "no mountpoint", rules: lora(config.Publish{Topic: "{device}", Template: "-"}), listener: "lora", payload: doc, want: []string{`d1 = -`}},
		{name: "$ inside topic is fine", rules: lora(config.Publish{Topic: "a/{device}", Template: "-"}), listener: "lora", payload: []byte(`{"id":"$x","v":1}`), want: []string{`a/$x = -`}},
	})
}

func TestMapUnsafeTopic(t *testing.T) {
	r := []config.Rule{mkRule("r", config.Match{}, config.Extract{JSON: "/id"}, nil,
		config.Publish{Topic: "ok/{gateway}", Template: "{device}"},
		config.Publish{Topic: "dev/{device}/x"},
	)}
	lora := []config.Rule{mkRule("r", config.Match{}, config.Extract{JSON: "/id"}, nil, config.Publish{Topic: "{device}/x"})}
	lora[0].Listener = "lora"
	cases := []struct{ id, why string }{
		{`"a/b"`, `{device} = "a/b" contains '/'`},
		{`"+"`, `{device} = "+" contains '+'`},
		{`"a#"`, `{device} = "a#" contains '#'`},
		{`"a\u0000"`, `{device} = "a\x00" contains NUL`},
		{`"\ud800"`, ``}, // a lone surrogate decodes to U+FFFD, which is fine
	}
	var mc []mapCase
	for _, c := range cases {
		mc2 := mapCase{name: c.id, rules: r, payload: []byte(`{"id":` + c.id + `}`), err: ErrUnsafeTopic, errText: `mapping: rule "r": unsafe topic value: ` + c.why}
		if c.why == "" {
			mc2.err, mc2.want = nil, []string{"site1/ok/gw1 = \uFFFD", "site1/dev/\uFFFD/x = {\"device\":\"\\ud800\"}"}
		}
		mc = append(mc, mc2)
	}
	mc = append(mc,
		mapCase{name: "not utf-8", rules: []config.Rule{mkRule("r", config.Match{}, config.Extract{Offset: intp(0), Length: 2, As: "ascii"}, nil)}, payload: []byte("\xff\xfe"), err: ErrUnsafeTopic, errText: `is not UTF-8`},
		mapCase{name: "$ first", rules: lora, listener: "lora", payload: []byte(`{"id":"$SYS"}`), err: ErrUnsafeTopic, errText: `{device} = "$SYS" would start the topic with '$'`},
		mapCase{name: "empty group", rules: []config.Rule{mkRule("r", config.Match{Regex: `(?P<g>x*)`}, config.Extract{}, nil, config.Publish{Topic: "a/{g}"})}, payload: []byte("y"), err: ErrUnsafeTopic, errText: `{g} = "" is empty`},
		mapCase{name: "too long", rules: []config.Rule{mkRule("r", config.Match{}, config.Extract{Offset: intp(0), Length: 70000, As: "ascii"}, nil)}, payload: []byte(strings.Repeat("a", 70000)), err: ErrUnsafeTopic, errText: "longer than MQTT's 65535"},
	)
	runMapCases(t, mc)
}

// TestMapResultReuse checks that Messages copied out of a Result survive the next Map.
func TestMapResultReuse(t *testing.T) {
	tab := mustCompile(t, binRule(), jsonRule())
	var r Result
	if err := tab.Map(Datagram{Listener: "udp", From: testFrom, Payload: binFrame}, &r); err != nil {
		t.Fatal(err)
	}
	kept := append([]Message(nil), r.Publishes...)
	before := pubs(kept)
	frame := append([]byte(nil), binFrame...)
	frame[2] = 0xee
	for range 3 {
		if err := tab.Map(Datagram{Listener: "udp", From: testFrom, Payload: frame}, &r); err != nil {
			t.Fatal(err)
		}
		if err := tab.Map(Datagram{Listener: "udp", From: testFrom, Payload: jsonDoc}, &r); err != nil {
			t.Fatal(err)
		}
	}
	frame[3] = 0xee // the caller reuses its buffer
	if after := pubs(kept); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("kept publishes changed:\n%q\n%q", before, after)
	}
	// A failed Map leaves no publishes behind.
	if err := tab.Map(Datagram{Listener: "udp", From: testFrom, Payload: []byte(`{"no_id":1}`)}, &r); err == nil {
		t.Fatal("no device: no error")
	}
	if len(r.Publishes) != 0 || len(r.Fields) != 0 || r.Device != "" || r.Rule != "json" {
		t.Errorf("after failure: %+v", r)
	}
}

func TestMapAllocs(t *testing.T) {
	if testing.CoverMode() != "" || raceEnabled {
		t.Skip("allocation counts differ under -cover and -race")
	}
	tab := mustCompile(t, binRule(), jsonRule())
	var r Result
	for _, tc := range []struct {
		name    string
		payload []byte
		max     float64
	}{
		{"binary", binFrame, 2},
		{"json", jsonDoc, 2},
	} {
		d := Datagram{Listener: "udp", From: testFrom, Payload: tc.payload}
		if n := testing.AllocsPerRun(100, func() { _ = tab.Map(d, &r) }); n > tc.max {
			t.Errorf("%s: %v allocations per Map, want at most %v", tc.name, n, tc.max)
		}
	}
}

func TestHasRules(t *testing.T) {
	tab := mustCompile(t, binRule())
	if !tab.HasRules("udp") || tab.HasRules("lora") || tab.HasRules("nope") {
		t.Error("HasRules wrong")
	}
}

// TestMapConcurrent runs one Table from several goroutines (run it with -race).
func TestMapConcurrent(t *testing.T) {
	tab := mustCompile(t, binRule(), jsonRule(), textRule())
	done := make(chan error)
	for g := range 4 {
		go func() {
			var r Result
			var err error
			for i := range 200 {
				p := [][]byte{binFrame, jsonDoc, textLine}[(g+i)%3]
				if err = tab.Map(Datagram{Listener: "udp", From: testFrom, Payload: p}, &r); err != nil {
					break
				}
			}
			done <- err
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func TestNilTable(t *testing.T) {
	var tab *Table
	var r Result
	if err := tab.Map(Datagram{Listener: "udp", Payload: binFrame}, &r); !errors.Is(err, ErrNoMatch) {
		t.Errorf("nil table: %v", err)
	}
	if tab.HasRules("udp") {
		t.Error("nil table has rules")
	}
}

func TestAppendDecimal(t *testing.T) {
	cases := []struct {
		neg  bool
		u    uint64
		k    int
		want string
	}{
		{false, 215, 1, "21.5"},
		{false, 400, 1, "40"},
		{false, 3300, 3, "3.3"},
		{true, 5, 3, "-0.005"},
		{true, 0, 2, "0"},
		{false, 0, 9, "0"},
		{false, 123456789, 9, "0.123456789"},
		{false, math.MaxUint64, 9, "18446744073.709551615"},
		{true, 1 << 63, 1, "-922337203685477580.8"},
	}
	for _, tc := range cases {
		if got := string(appendDecimal(nil, tc.neg, tc.u, tc.k)); got != tc.want {
			t.Errorf("appendDecimal(%v, %d, %d) = %q, want %q", tc.neg, tc.u, tc.k, got, tc.want)
		}
	}
	// Within 15 digits the exact path agrees with the float path.
	var r Result
	for k := 1; k <= 9; k++ {
		ex := &extractor{scale: 1 / math.Pow10(k), affine: true}
		if decimalScale(ex.scale) != k {
			t.Fatalf("decimalScale(%v) = %d, want %d", ex.scale, decimalScale(ex.scale), k)
		}
		for _, u := range []uint64{1, 7, 10, 99, 215, 1000, 65535, 999999999, 123456789012345} {
			exact := string(appendDecimal(nil, false, u, k))
			v := r.scaled(ex, float64(u))
			if float := string(r.text[v.t0:v.t1]); !strings.Contains(float, "e") && float != exact {
				t.Errorf("%d × 1e-%d: exact %q, float %q", u, k, exact, float)
			}
		}
	}
	for _, s := range []float64{0, 1, 2, 0.5, 0.3, 1e-10, 10} {
		if k := decimalScale(s); k != 0 {
			t.Errorf("decimalScale(%v) = %d, want 0", s, k)
		}
	}
}
