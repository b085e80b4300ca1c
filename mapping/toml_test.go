package mapping

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mqttgw/mqttgw/config"
)

// tomlPreamble is the start of every config text in the TOML table tests: a
// gateway, a udp listener with a mountpoint, one without, and an mqttsn listener.
const tomlPreamble = `[gateway]
id = "gw1"
[[listener]]
name = "sensors"
type = "udp"
bind = "127.0.0.1:0"
mountpoint = "site1/"
[[listener]]
name = "lora"
type = "udp"
bind = "127.0.0.1:0"
[[listener]]
name = "sn"
type = "mqttsn"
bind = "127.0.0.1:0"
`

// loadTOML parses tomlPreamble+text as config.Load does and compiles it as `mqttgw
// check` does, returning the table (nil on errors) and every problem with its line.
func loadTOML(tb testing.TB, text string) (*Table, config.Problems) {
	tb.Helper()
	cfg, ps := config.Parse("t.toml", []byte(tomlPreamble+text))
	if cfg == nil {
		return nil, ps
	}
	tab, mps := CompileConfig(cfg)
	ps = append(ps, cfg.Locate(mps)...)
	ps.Sort()
	if len(ps.Errors()) > 0 {
		return nil, ps
	}
	return tab, ps
}

// mustLoadTOML is loadTOML that fails on any problem.
func mustLoadTOML(tb testing.TB, text string) *Table {
	tb.Helper()
	tab, ps := loadTOML(tb, text)
	if len(ps) > 0 || tab == nil {
		tb.Fatalf("problems:\n%v", ps)
	}
	return tab
}

// tomlCase is one config text and one problem it must produce: line counts from
// the first line after the preamble, want is "key: message" as printed.
type tomlCase struct {
	name string
	toml string
	line int
	want string
}

func runTOMLCases(t *testing.T, cases []tomlCase) {
	t.Helper()
	pre := strings.Count(tomlPreamble, "\n")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, ps := loadTOML(t, tc.toml)
			want := fmt.Sprintf("t.toml:%d: %s", pre+tc.line, tc.want)
			var got []string
			for _, p := range ps {
				if p.Error() == want {
					return
				}
				got = append(got, p.Error())
			}
			t.Fatalf("want problem\n  %s\ngot\n  %s", want, strings.Join(got, "\n  "))
		})
	}
}
