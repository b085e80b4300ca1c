package mapping

import (
	"net/netip"
	"testing"

	"github.com/mqttgw/mqttgw/config"
)

func TestExplain(t *testing.T) {
	one := 1
	rules := []config.Rule{
		{Name: "json", Listener: "l", Match: config.Match{JSON: true}, Publish: []config.Publish{{Topic: "j"}}},
		{Name: "bin", Listener: "l", Match: config.Match{HexPrefix: "a1", MinLen: 3}, Device: config.Extract{Offset: &one, Length: 1}, Publish: []config.Publish{{Topic: "b/{device}"}}},
		{Name: "text", Listener: "l", Match: config.Match{Regex: "^t=[0-9]+$"}, Publish: []config.Publish{{Topic: "t"}}},
		{Name: "any", Listener: "l", Publish: []config.Publish{{Topic: "a"}}},
	}
	tb, ps := Compile("gw", []config.Listener{{Name: "l", Type: "udp"}}, rules)
	if len(ps.Errors()) > 0 {
		t.Fatal(ps)
	}
	got := tb.Explain(Datagram{Listener: "l", From: netip.MustParseAddrPort("127.0.0.1:1"), Payload: []byte("t=x")})
	want := []RuleVerdict{
		{"json", "not a JSON object"},
		{"bin", "does not start with hex_prefix a1"},
		{"text", "regex ^t=[0-9]+$ does not match"},
		{"any", ""},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("rule %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if got := tb.Explain(Datagram{Listener: "l", Payload: []byte{0xa1}}); got[1].Reason != "1 bytes, shorter than min_len 3" {
		t.Errorf("min_len: %+v", got[1])
	}
}

// FuzzExplainAgreesWithMap: rejects (the diagnostic copy of the match logic) says ""
// for exactly the rule accepts takes, so `rules test` never explains a different
// decision than the gateway makes.
func FuzzExplainAgreesWithMap(f *testing.F) {
	f.Add(binFrame)
	f.Add(jsonDoc)
	f.Add(textLine)
	f.Add([]byte{0xa5})
	f.Add([]byte(`{"id":1}x`))
	prefixed := binRule()
	prefixed.Name, prefixed.Match.HexPrefix, prefixed.Match.TextPrefix = "prefixed", "", "T,"
	tb := mustCompile(f, binRule(), jsonRule(), prefixed, textRule())
	f.Fuzz(func(t *testing.T, p []byte) {
		js := jsonUnchecked
		for _, ru := range tb.byListener["udp"] {
			js2 := jsonUnchecked
			ok, _ := ru.accepts(p, &js)
			if why := ru.rejects(p, &js2); ok != (why == "") {
				t.Fatalf("rule %s on %q: accepts=%v but rejects says %q", ru.name, p, ok, why)
			}
		}
	})
}
