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
