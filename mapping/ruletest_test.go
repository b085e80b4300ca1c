package mapping

import (
	"testing"

	"github.com/mqttgw/mqttgw/config"
)

func TestRunTests(t *testing.T) {
	hello := func(tests ...config.RuleTest) config.Rule {
		r := mkRule("hello", config.Match{TextPrefix: "hello"}, config.Extract{}, nil,
			config.Publish{Topic: "h/{device}", Template: "hi"},
			config.Publish{Topic: "h/{device}/json"},
		)
		r.Tests = tests
		return r
	}
	short := mkRule("short", config.Match{MaxLen: 3}, config.Extract{}, nil)
	later := mkRule("later", config.Match{TextPrefix: "bye"}, config.Extract{}, nil)
	device := mkRule("dev", config.Match{TextPrefix: "dev"}, config.Extract{Offset: intp(3), Length: 4, As: "ascii"}, nil)
	device.Tests = []config.RuleTest{{Text: "devab", Expect: map[string]string{"x": "y"}}}

	good := map[string]string{"site1/h/127.0.0.1": "hi", "site1/h/127.0.0.1/json": `{"device":"127.0.0.1"}`}
	cases := []struct {
		name  string
		rules []config.Rule
		want  []problem
	}{
		{"pass", []config.Rule{hello(config.RuleTest{Text: "hello", Expect: good}), short, later}, nil},
		{"from", []config.Rule{hello(config.RuleTest{Text: "hello", From: "[::1]:9", Expect: map[string]string{"site1/h/::1": "hi", "site1/h/::1/json": `{"device":"::1"}`}})}, nil},
		{"wrong payload", []config.Rule{hello(config.RuleTest{Text: "hello", Expect: map[string]string{"site1/h/127.0.0.1": "hello", "site1/h/127.0.0.1/json": `{"device":"127.0.0.1"}`}})},
			[]problem{{key: "rule[0].tests[0]", msg: `topic "site1/h/127.0.0.1": expected payload "hello", got "hi"`}}},
		{"missing and unexpected topic", []config.Rule{hello(config.RuleTest{Text: "hello", Expect: map[string]string{"site1/h/127.0.0.1": "hi", "h/127.0.0.1/json": `{"device":"127.0.0.1"}`}})},
			[]problem{{key: "rule[0].tests[0]", msg: `unexpected publish to "site1/h/127.0.0.1/json" with payload "{\"device\":\"127.0.0.1\"}"; expected a publish to "h/127.0.0.1/json", got none (published: "site1/h/127.0.0.1" = "hi", "site1/h/127.0.0.1/json" = "{\"device\":\"127.0.0.1\"}")`}}},
		{"earlier rule wins", []config.Rule{short, hello(config.RuleTest{Text: "hel", Expect: good})},
			[]problem{{key: "rule[1].tests[0]", msg: `expected rule "hello" to match, but rule "short" (rule[0]) matched first`}}},
		{"no rule", []config.Rule{hello(config.RuleTest{Text: "howdy", Expect: good})},
			[]problem{{key: "rule[0].tests[0]", msg: `expected rule "hello" to match, but no rule matched`}}},
		{"map error", []config.Rule{device},
			[]problem{{key: "rule[0].tests[0]", msg: `expected "x" = "y", got error: mapping: rule "dev": decode: device: bytes 3..6 are beyond the end of the 5-byte datagram`}}},
		{"no_match passes", []config.Rule{short, hello(
			config.RuleTest{Text: "howdy", NoMatch: true},      // no rule
			config.RuleTest{Text: "bye", NoMatch: true},        // an earlier rule
			config.RuleTest{Hex: "62 79 65 21", NoMatch: true}, // "bye!": a later rule
		), later}, nil},
		{"no_match fails", []config.Rule{hello(config.RuleTest{Text: "hello", NoMatch: true})},
			[]problem{{key: "rule[0].tests[0]", msg: `expected no match, but rule "hello" matched and published "site1/h/127.0.0.1" = "hi", "site1/h/127.0.0.1/json" = "{\"device\":\"127.0.0.1\"}"`}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkProblems(t, mustCompile(t, tc.rules...).RunTests(), tc.want)
		})
	}
}
