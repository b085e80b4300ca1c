package mapping

import (
	"bytes"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/config"
)

// acksTOML: a text rule acknowledging with a template and dedup, a binary rule with a
// fixed hex ack, and a rule without ack. Their inline tests check the ack too.
const acksTOML = `
[[rule]]
name = "reading"
listener = "lora"
match.regex = '^R (?P<id>\w+) (?P<seq>[0-9]+) (?P<v>[0-9.]+)$'
device.group = "id"
fields.v = { group = "v", type = "float64" }
tests = [ { text = "R dev7 17 2.5", expect = { "r/dev7" = "2.5" }, ack = "ACK dev7 17" } ]
[[rule.publish]]
topic = "r/{device}"
template = "{v}"
[rule.ack]
template = "ACK {device} {seq}"
dedup = "{device}:{seq}"

[[rule]]
name = "bin"
listener = "lora"
match.hex_prefix = "a5"
device = { offset = 1, length = 2 }
ack = { hex = "06 a5" }
tests = [ { hex = "a50102", expect = { "b/0102" = "ok" }, ack_hex = "06a5" } ]
[[rule.publish]]
topic = "b/{device}"
template = "ok"

[[rule]]
name = "plain"
listener = "lora"
match.text_prefix = "P"
[[rule.publish]]
topic = "p/{device}"
`

func TestAck(t *testing.T) {
	tab := mustLoadTOML(t, acksTOML)
	if ps := tab.RunTests(); len(ps) > 0 {
		t.Fatalf("inline tests: %v", ps)
	}
	var r Result
	mapped := func(payload string) {
		t.Helper()
		if err := tab.Map(Datagram{Listener: "lora", From: testFrom, Payload: []byte(payload)}, &r); err != nil {
			t.Fatal(err)
		}
	}

	mapped("R dev7 17 2.5")
	if string(r.Ack) != "ACK dev7 17" || r.DedupKey != "reading\x00dev7:17" || r.DedupWindow != 5*time.Minute {
		t.Errorf("template ack: %q %q %v", r.Ack, r.DedupKey, r.DedupWindow)
	}
	ack, key := r.Ack, r.DedupKey

	mapped("\xa5\x01\x02")
	if !bytes.Equal(r.Ack, []byte{0x06, 0xa5}) || r.DedupKey != "" || r.DedupWindow != 0 {
		t.Errorf("hex ack: %x %q %v", r.Ack, r.DedupKey, r.DedupWindow)
	}
	// The first ack and key outlive the Result's reuse.
	if string(ack) != "ACK dev7 17" || key != "reading\x00dev7:17" {
		t.Errorf("kept ack changed: %q %q", ack, key)
	}

	mapped("P")
	if r.Ack != nil || r.DedupKey != "" || r.DedupWindow != 0 {
		t.Errorf("rule without ack: %q %q %v", r.Ack, r.DedupKey, r.DedupWindow)
	}

	// A datagram the rule takes but cannot map is not acknowledged.
	if err := tab.Map(Datagram{Listener: "lora", From: testFrom, Payload: []byte{0xa5, 0x01}}, &r); err == nil {
		t.Fatal("short datagram mapped")
	}
	if r.Ack != nil || r.DedupKey != "" {
		t.Errorf("failed Map: ack %q, key %q", r.Ack, r.DedupKey)
	}
}

// TestAckEmpty: a template that renders nothing is still an ack, not "no ack".
func TestAckEmpty(t *testing.T) {
	tab := mustLoadTOML(t, `
[[rule]]
name = "e"
listener = "lora"
match.regex = '^(?P<x>a*)$'
ack.template = "{x}"
[[rule.publish]]
topic = "e/{device}"
payload = "raw"
`)
	var r Result
	if err := tab.Map(Datagram{Listener: "lora", From: testFrom, Payload: nil}, &r); err != nil {
		t.Fatal(err)
	}
	if r.Ack == nil || len(r.Ack) != 0 {
		t.Errorf("Ack = %#v, want empty and not nil", r.Ack)
	}
}

// TestAckDedupKeysOfTwoRules: the same rendered dedup text in two rules makes two
// keys, so one rule's datagram never passes for a retry of the other's.
func TestAckDedupKeysOfTwoRules(t *testing.T) {
	rule := func(name, prefix string) config.Rule {
		r := mkRule(name, config.Match{TextPrefix: prefix}, config.Extract{}, nil)
		r.Ack = &config.Ack{Hex: "06", Dedup: "{device}", Window: config.Duration(time.Minute)}
		return r
	}
	tab := mustCompile(t, rule("a", "A"), rule("b", "B"))
	var r Result
	keys := map[string]bool{}
	for _, p := range []string{"A", "B"} {
		if err := tab.Map(Datagram{Listener: "udp", From: testFrom, Payload: []byte(p)}, &r); err != nil {
			t.Fatal(err)
		}
		keys[r.DedupKey] = true
		if r.DedupWindow != time.Minute {
			t.Errorf("window %v", r.DedupWindow)
		}
	}
	if len(keys) != 2 {
		t.Errorf("keys %v: want two", keys)
	}
}

// TestAckAllocs: an ack and its dedup key are cut from Map's two blocks.
func TestAckAllocs(t *testing.T) {
	if testing.CoverMode() != "" || raceEnabled {
		t.Skip("allocation counts differ under -cover and -race")
	}
	r := binRule()
	r.Ack = &config.Ack{Template: "ACK {device} {temp}", Dedup: "{device}:{hum}", Window: config.Duration(time.Minute)}
	tab := mustCompile(t, r)
	var res Result
	d := Datagram{Listener: "udp", From: testFrom, Payload: binFrame}
	if n := testing.AllocsPerRun(100, func() { _ = tab.Map(d, &res) }); n > 2 {
		t.Errorf("%v allocations per Map with an ack, want at most 2", n)
	}
	if string(res.Ack) != "ACK 001122334455 21.5" || res.DedupKey != "bin\x00001122334455:40" {
		t.Errorf("ack %q key %q", res.Ack, res.DedupKey)
	}
}

func TestAckRunTests(t *testing.T) {
	tab := mustLoadTOML(t, `
[[rule]]
name = "r"
listener = "lora"
match.regex = '^(?P<seq>[0-9]+)$'
ack.template = "ACK {seq}"
tests = [
  { text = "17", expect = { "r" = "p" }, ack = "ACK 17" },
  { text = "17", expect = { "r" = "p" }, ack = "ACK 18" },
  { text = "17", expect = { "r" = "p" }, ack_hex = "06" },
  { text = "17", expect = { "r" = "q" }, ack = "ACK 1" },
]
[[rule.publish]]
topic = "r"
template = "p"
`)
	checkProblems(t, tab.RunTests(), []problem{
		{key: "rule[0].tests[1]", msg: `expected ack "ACK 18", got "ACK 17"`},
		{key: "rule[0].tests[2]", msg: `expected ack 06, got 41434b203137`},
		{key: "rule[0].tests[3]", msg: `topic "r": expected payload "q", got "p"; expected ack "ACK 1", got "ACK 17"`},
	})
}

func TestAckProblems(t *testing.T) {
	rule := func(lines ...string) string {
		// The lines go in at line 5, before the publish table.
		s := "[[rule]]\nname = \"r\"\nlistener = \"lora\"\nmatch.regex = '^(?P<seq>[0-9]+)$'\n"
		for _, l := range lines {
			s += l + "\n"
		}
		return s + "[[rule.publish]]\ntopic = \"t\"\n"
	}
	runTOMLCases(t, []tomlCase{
		{"neither", rule(`[rule.ack]`, `dedup = "{seq}"`), 5, `rule[0].ack: set template or hex: the datagram that answers the device`},
		{"both", rule(`ack = { template = "A", hex = "06" }`), 5, `rule[0].ack: set one of template and hex, not both`},
		{"bad hex", rule(`ack = { hex = "0x06" }`), 5, `rule[0].ack.hex: invalid hex "0x06": invalid byte: U+0078 'x'`},
		{"empty hex", rule(`ack = { hex = " " }`), 5, `rule[0].ack.hex: hex has no bytes: an ack is at least one byte`},
		{"unknown name", rule(`[rule.ack]`, `template = "ACK {sq}"`), 6, `rule[0].ack.template: unknown placeholder {sq} in template (known: device, gateway, listener, seq)`},
		{"template syntax", rule(`ack = { template = "ACK {seq" }`), 5, `rule[0].ack.template: template: unclosed '{' at offset 4 (write '{{' for a literal brace)`},
		{"dedup unknown name", rule(`ack = { hex = "06", dedup = "{id}" }`), 5, `rule[0].ack.dedup: unknown placeholder {id} in template (known: device, gateway, listener, seq)`},
		{"window zero", rule(`[rule.ack]`, `hex = "06"`, `dedup = "{seq}"`, `window = "0s"`), 8, `rule[0].ack.window: 0s: want more than 0 (leave window out for 5m0s)`},
		{"window without dedup", rule(`[rule.ack]`, `hex = "06"`, `window = "1m"`), 7, `warning: rule[0].ack.window: ignored: window applies with dedup`},
		{"unknown key", rule(`[rule.ack]`, `hex = "06"`, `dedupe = "{seq}"`), 7, `rule[0].ack.dedupe: unknown key "dedupe" (did you mean "dedup"?)`},
		{"test ack without rule ack", rule(`tests = [ { text = "1", expect = { "t" = "" }, ack = "A" } ]`), 5, `rule[0].tests[0].ack: the rule has no [rule.ack]: there is no ack to expect`},
		{"test ack_hex without rule ack", rule(`tests = [ { text = "1", expect = { "t" = "" }, ack_hex = "06" } ]`), 5, `rule[0].tests[0].ack_hex: the rule has no [rule.ack]: there is no ack to expect`},
		{"test ack and ack_hex", rule(`ack.hex = "06"`, `tests = [ { text = "1", expect = { "t" = "" }, ack = "A", ack_hex = "06" } ]`), 6, `rule[0].tests[0]: set one of ack and ack_hex, not both`},
		{"test ack and no_match", rule(`ack.hex = "06"`, `tests = [ { text = "x", no_match = true, ack = "A" } ]`), 6, `rule[0].tests[0]: no_match and an expected ack are both set`},
		{"test bad ack_hex", rule(`ack.hex = "06"`, `tests = [ { text = "1", expect = { "t" = "" }, ack_hex = "6" } ]`), 6, `rule[0].tests[0].ack_hex: invalid hex "6": odd length hex string`},
		{"ack on a topic rule", "[[rule]]\nname = \"sn\"\nlistener = \"sn\"\nmatch.topic = \"a/{device}\"\nack.hex = \"06\"\n[[rule.publish]]\ntopic = \"b/{device}\"\n", 5, `rule[0].ack: acks answer datagrams of udp listeners; a mqttsn device gets its protocol's own acknowledgement`},
	})
}
