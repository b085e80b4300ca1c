package mapping

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/mqttgw/mqttgw/config"
)

// fuzzRules is the table the Map fuzz targets run: the three fixtures plus variants
// that reach the other extractors (little endian, floats, ascii device, pointers into
// arrays, scaled JSON numbers, group numbers) and an ack with a dedup key.
func fuzzRules() []config.Rule {
	bin2 := config.Rule{
		Name:     "bin2",
		Listener: "udp",
		Match:    config.Match{HexPrefix: "a502"},
		Device:   config.Extract{Offset: intp(2), Length: 4, As: "ascii"},
		Fields: map[string]config.Field{
			"f32": {Offset: intp(6), Type: "float32", Endian: "little"},
			"f64": {Offset: intp(10), Type: "float64", Scale: 2},
			"i64": {Offset: intp(2), Type: "int64", Endian: "little"},
			"raw": {Offset: intp(1), Type: "ascii", Length: 3},
		},
		Publish: []config.Publish{
			{Topic: "bin2/{device}/{raw}"},
			{Topic: "bin2/{device}", Payload: "raw"},
		},
	}
	json2 := config.Rule{
		Name:     "json2",
		Listener: "udp",
		Match:    config.Match{TextPrefix: "[", JSON: false},
		Device:   config.Extract{JSON: "/0"},
		Fields: map[string]config.Field{
			"v": {JSON: "/1/v", Scale: 0.5, Add: 1},
			"w": {JSON: "/2"},
		},
		Publish: []config.Publish{
			{Topic: "json2/{device}/{w}"},
			{Topic: "json2/{device}", Template: "{w}:{v}"},
		},
	}
	text2 := config.Rule{
		Name:     "text2",
		Listener: "udp",
		Match:    config.Match{Regex: `^(?P<k>[a-z]+)=(?P<n>-?[0-9.e]+)(;(?P<opt>.*))?$`},
		Device:   config.Extract{Source: "addr"},
		Fields: map[string]config.Field{
			"n": {Group: "n", Type: "int16", Scale: 0.25},
		},
		Publish: []config.Publish{
			{Topic: "text2/{k}/{device}/{opt}"},
		},
		Ack: &config.Ack{Template: "ok {k} {n}", Dedup: "{device}/{opt}", Window: 1},
	}
	return []config.Rule{binRule(), bin2, jsonRule(), json2, textRule(), text2}
}

// checkMap maps payload through tab and checks what must hold for any input.
func checkMap(t *testing.T, tab *Table, payload []byte) {
	var r Result
	err := tab.Map(Datagram{Listener: "udp", From: testFrom, Payload: payload}, &r)
	if err != nil {
		if !errors.Is(err, ErrNoMatch) && !errors.Is(err, ErrDecode) && !errors.Is(err, ErrUnsafeTopic) {
			t.Fatalf("unexpected error kind: %v", err)
		}
		if len(r.Publishes) != 0 {
			t.Fatalf("error %v but %d publishes", err, len(r.Publishes))
		}
		return
	}
	var ru *rule
	for _, x := range tab.rules {
		if x.name == r.Rule {
			ru = x
		}
	}
	if ru == nil || len(r.Publishes) != len(ru.pubs) {
		t.Fatalf("rule %q, %d publishes", r.Rule, len(r.Publishes))
	}
	if r.Device == "" {
		t.Fatal("empty device")
	}
	if (ru.ack != nil) != (r.Ack != nil) || (ru.ack != nil && ru.ack.dedup != nil) != (r.DedupKey != "") {
		t.Fatalf("rule %q: ack %q, dedup key %q", ru.name, r.Ack, r.DedupKey)
	}
	if r.DedupKey != "" && !strings.HasPrefix(r.DedupKey, ru.name+"\x00") {
		t.Fatalf("dedup key %q lacks the rule's name", r.DedupKey)
	}
	for i, m := range r.Publishes {
		if strings.ContainsAny(m.Topic, "+#\x00") || !utf8.ValidString(m.Topic) || m.Topic == "" || m.Topic[0] == '$' {
			t.Fatalf("bad topic %q", m.Topic)
		}
		// Values never add a level: the topic has exactly the template's separators.
		levels := 0
		for _, s := range ru.pubs[i].topic {
			levels += strings.Count(s.lit, "/")
		}
		if got := strings.Count(m.Topic, "/"); got != levels {
			t.Fatalf("topic %q has %d separators, template %d", m.Topic, got, levels)
		}
		switch ru.pubs[i].payload {
		case payloadJSON:
			if !json.Valid(m.Payload) {
				t.Fatalf("json payload is not JSON: %q", m.Payload)
			}
		case payloadRaw:
			if string(m.Payload) != string(payload) {
				t.Fatalf("raw payload %q, datagram %q", m.Payload, payload)
			}
		}
	}
}

func FuzzMapBinary(f *testing.F) {
	// The documented frame: 21.5 °C, 40 %, 3.3 V.
	f.Add(binFrame)
	// One byte short: min_len rejects it.
	f.Add(binFrame[:13])
	// Padded to max_len 32.
	f.Add(append(append([]byte(nil), binFrame...), make([]byte, 18)...))
	// One beyond max_len.
	f.Add(append(append([]byte(nil), binFrame...), make([]byte, 19)...))
	// Extremes: int16 min, uint16 max.
	f.Add([]byte{0xa5, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x80, 0x00, 0xff, 0xff, 0xff, 0xff})
	// Rule bin2: ascii device, float32 22, float64 NaN.
	f.Add([]byte("\xa5\x02dev1\x00\x00\xb0\x41\x7f\xf8\x00\x00\x00\x00\x00\x00"))
	// Rule bin2: device "a/b+" must be rejected.
	f.Add([]byte("\xa5\x02a/b+\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	// Rule bin2: all-NUL device, fields beyond the end.
	f.Add([]byte("\xa5\x02\x00\x00\x00\x00"))
	// Rule bin2: device not UTF-8.
	f.Add([]byte("\xa5\x02\xff\xfe\xfd\xfc"))
	// Empty datagram.
	f.Add([]byte{})
	tab := mustCompile(f, fuzzRules()...)
	f.Fuzz(func(t *testing.T, payload []byte) {
		checkMap(t, tab, payload)
	})
}

func FuzzMapJSON(f *testing.F) {
	// The documented document.
	f.Add(jsonDoc)
	// Device injects a level.
	f.Add([]byte(`{"id":"a/b","kind":"env","t":1,"meta":{}}`))
	// Field injects a wildcard.
	f.Add([]byte(`{"id":"x","kind":"+","t":1,"meta":{}}`))
	// Escaped NUL.
	f.Add([]byte(`{"id":"x","kind":"\u0000","t":1,"meta":{}}`))
	// Lone surrogate → U+FFFD.
	f.Add([]byte(`{"id":"\ud800","kind":"k","t":1,"meta":[]}`))
	// Duplicate key: first wins.
	f.Add([]byte(`{"id":"x","kind":"k","t":1,"meta":{},"id":"y"}`))
	// Brackets inside strings.
	f.Add([]byte(`{"id":"x","kind":"k","t":1,"meta":{"a":[1,{"b":"}"}]}}`))
	// Truncated.
	f.Add([]byte(`{"id":"x","kind":"k","t":1`))
	// Rule json2: array pointers, scaled number.
	f.Add([]byte(`["dev",{"v":3},"w"]`))
	// Rule json2: scale on a string.
	f.Add([]byte(`["dev",{"v":"3"},"w"]`))
	// Rule json2: number out of range.
	f.Add([]byte(`["dev",{"v":1e999},"w"]`))
	// Deep and invalid.
	f.Add([]byte(`[` + strings.Repeat(`[`, 200) + `]`))
	tab := mustCompile(f, fuzzRules()...)
	f.Fuzz(func(t *testing.T, payload []byte) {
		// The scanner agrees with encoding/json on what is valid.
		want := json.Valid(payload)
		if got := validJSON(payload, false); got != want {
			t.Fatalf("validJSON = %v, encoding/json %v", got, want)
		}
		checkMap(t, tab, payload)
	})
}

func FuzzMapRegex(f *testing.F) {
	// The documented line.
	f.Add(textLine)
	// Device injects a level.
	f.Add([]byte("T,a/b,1,2"))
	// Temp not a number.
	f.Add([]byte("T,dev,x,2"))
	// Hum out of uint8 range.
	f.Add([]byte("T,dev,1,300"))
	// Empty device.
	f.Add([]byte("T,,1,2"))
	// Rule text2: scaled int16.
	f.Add([]byte("temp=86"))
	// Rule text2: optional group present.
	f.Add([]byte("temp=86;opt"))
	// Rule text2: out of int16 range.
	f.Add([]byte("temp=99999"))
	// Rule text2: optional group injects a wildcard.
	f.Add([]byte("temp=1;a#b"))
	// Device not UTF-8.
	f.Add([]byte("T,\xff,1,2"))
	tab := mustCompile(f, fuzzRules()...)
	f.Fuzz(func(t *testing.T, payload []byte) {
		checkMap(t, tab, payload)
	})
}

func FuzzTemplate(f *testing.F) {
	// A plain topic.
	f.Add("sensors/{device}/state", "dev1")
	// A JSON payload written by hand.
	f.Add(`{{"t":{v},"d":"{device}"}}`, "21.5")
	// Braces around a placeholder.
	f.Add("{{{v}}}", "x")
	// Unclosed.
	f.Add("{", "")
	// Single close.
	f.Add("}", "")
	// Bad name.
	f.Add("{a b}", "")
	// Unknown name, a constant.
	f.Add("{unknown}/{gw}", "v")
	// Value that is unsafe in a topic.
	f.Add("{v}", "a/b")
	// Dollar.
	f.Add("$x/{v}", "$")
	f.Fuzz(func(t *testing.T, text, val string) {
		parts, err := parseTemplate(text)
		if err != nil {
			return
		}
		// Round trip: re-escaping the parts gives a template that parses the same.
		var b strings.Builder
		for _, p := range parts {
			if p.isName {
				b.WriteString("{" + p.text + "}")
			} else {
				b.WriteString(strings.NewReplacer("{", "{{", "}", "}}").Replace(p.text))
			}
		}
		again, err := parseTemplate(b.String())
		if err != nil || len(again) != len(parts) {
			t.Fatalf("re-escaped %q: %v, %d parts, want %d", b.String(), err, len(again), len(parts))
		}
		for i := range parts {
			if again[i] != parts[i] {
				t.Fatalf("part %d: %+v, want %+v", i, again[i], parts[i])
			}
		}

		lookup := func(name string) (binding, bool) {
			switch name {
			case "gw":
				return binding{slot: -1, constant: "G"}, true
			case "device":
				return binding{slot: 0}, true
			case "v":
				return binding{slot: 1}, true
			}
			return binding{}, false
		}
		segs, unknown := bindTemplate("", parts, lookup)
		text2 := []byte("dev1" + val)
		vals := []value{{t0: 0, t1: 4}, {t0: 4, t1: len(text2)}}
		payload := appendText(nil, segs, vals, text2)
		var want strings.Builder
		for _, p := range parts {
			switch {
			case !p.isName:
				want.WriteString(p.text)
			case p.text == "gw":
				want.WriteString("G")
			case p.text == "device":
				want.WriteString("dev1")
			case p.text == "v":
				want.WriteString(val)
			}
		}
		if string(payload) != want.String() {
			t.Fatalf("rendered %q, want %q", payload, want.String())
		}
		topic, bad, _ := appendTopic(nil, segs, vals, text2)
		if len(unknown) == 0 && bad < 0 && badTopicText(text) == "" {
			if string(topic) != want.String() {
				t.Fatalf("topic %q, want %q", topic, want.String())
			}
			usesV := false
			for _, p := range parts {
				usesV = usesV || p.isName && p.text == "v"
			}
			if usesV && strings.ContainsAny(val, "/+#\x00") {
				t.Fatalf("unsafe value %q accepted in %q", val, topic)
			}
		}
	})
}

// mqttMatches is MQTT 3.1.1 §4.7 filter matching, written plainly from the spec as a
// reference for Downlink.match: '+' one level, '#' the rest including the parent, no
// wildcard first level for a topic starting with '$'. A topic name is non-empty and
// free of wildcards and NUL.
func mqttMatches(filter, topic string) bool {
	if topic == "" || strings.ContainsAny(topic, "+#\x00") {
		return false
	}
	f, tp := strings.Split(filter, "/"), strings.Split(topic, "/")
	if topic[0] == '$' && (f[0] == "+" || f[0] == "#") {
		return false
	}
	for i, lv := range f {
		if lv == "#" {
			return true
		}
		if i >= len(tp) || lv != "+" && lv != tp[i] {
			return false
		}
	}
	return len(f) == len(tp)
}

// FuzzDownlinkEncode: for any topic and payload, Encode agrees with the reference
// filter match and with ExplainTopic, fails only with ErrDecode, gives a device that
// is one level, and renders what the payload kind says: raw as it came, fields
// packed to their width and back again.
func FuzzDownlinkEncode(f *testing.F) {
	// valve: the documented message.
	f.Add("site1/cmd/dev7/valve", []byte(`{"open":1,"level":-2,"t":1.5}`))
	// valve: extremes, an exponent and a negative zero.
	f.Add("site1/cmd/d/valve", []byte(`{"open":65535,"level":-32768,"t":-0,"x":1e2}`))
	// valve: a value out of range.
	f.Add("site1/cmd/d/valve", []byte(`{"open":65536,"level":0,"t":0}`))
	// valve: not JSON.
	f.Add("site1/cmd/d/valve", []byte(`{"open":`))
	// say: '+' and '#' levels, the template.
	f.Add("say/n/d9/x/y/z", []byte("on"))
	// say: '#' matching its parent level.
	f.Add("say/n/d9/x", []byte{})
	// raw: binary payload.
	f.Add("raw/d1", []byte{0x00, 0xff, 0x10})
	// raw: empty device level.
	f.Add("raw/", []byte("x"))
	// any: a '$' topic a leading capture must not match.
	f.Add("$SYS/any", []byte("x"))
	// A topic with a wildcard is no topic name.
	f.Add("raw/+", []byte("x"))
	tab := mustLoadTOML(f, downlinksTOML)
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		for _, d := range tab.Downlinks() {
			device, b, ok, err := d.Encode(topic, payload)
			if want := mqttMatches(d.Filter, topic); ok != want {
				t.Fatalf("%s: Encode(%q) ok %v, filter %q matches %v", d.Name, topic, ok, d.Filter, want)
			}
			if why := d.ExplainTopic(topic); ok != (why == "") {
				t.Fatalf("%s: Encode(%q) ok %v, but ExplainTopic says %q", d.Name, topic, ok, why)
			}
			if !ok {
				if device != "" || b != nil || err != nil {
					t.Fatalf("%s: no match, yet %q %x %v", d.Name, device, b, err)
				}
				continue
			}
			if err != nil {
				if !errors.Is(err, ErrDecode) || b != nil {
					t.Fatalf("%s: error %v, datagram %x", d.Name, err, b)
				}
				continue
			}
			if device == "" || strings.Contains(device, "/") || !strings.Contains(topic, "/"+device+"/") && !strings.HasPrefix(topic, device+"/") && !strings.HasSuffix(topic, "/"+device) {
				t.Fatalf("%s: device %q is not a level of %q", d.Name, device, topic)
			}
			if b == nil {
				t.Fatalf("%s: nil datagram", d.Name)
			}
			switch d.Name {
			case "raw", "any":
				if string(b) != string(payload) {
					t.Fatalf("%s: raw datagram %x, payload %x", d.Name, b, payload)
				}
			case "valve":
				checkPacked(t, d, topic, b)
			}
		}
	})
}

// checkPacked unpacks a "valve" datagram (uint16 big, int16 little, float32 big),
// writes the numbers back as JSON and encodes that again: the same datagram.
func checkPacked(t *testing.T, d *Downlink, topic string, b []byte) {
	t.Helper()
	if len(b) != 8 {
		t.Fatalf("valve datagram %x: want 8 bytes", b)
	}
	open := binary.BigEndian.Uint16(b[0:2])
	level := int16(binary.LittleEndian.Uint16(b[2:4]))
	temp := math.Float32frombits(binary.BigEndian.Uint32(b[4:8]))
	again := fmt.Sprintf(`{"open":%d,"level":%d,"t":%s}`, open, level, strconv.FormatFloat(float64(temp), 'g', -1, 32))
	_, b2, ok, err := d.Encode(topic, []byte(again))
	if !ok || err != nil || string(b2) != string(b) {
		t.Fatalf("round trip of %x through %s: %x %v %v", b, again, b2, ok, err)
	}
}
