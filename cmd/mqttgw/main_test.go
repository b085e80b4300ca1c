package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/mqttgw/mqttgw/config"
)

var update = flag.Bool("update", false, "rewrite golden files")

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := "testdata/" + name
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test ./cmd/mqttgw -update rewrites it)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestCheckExampleConfig(t *testing.T) {
	code, out, errOut := runCLI("check", "../../config.toml.example")
	if code != 0 {
		t.Fatalf("check config.toml.example: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "valid: 3 listener(s), 3 rule(s), 5 rule test(s) passed") {
		t.Errorf("unexpected output: %s", out)
	}
}

// TestCheckBrokenConfig: every mistake in one file, each with its line and key path,
// from the decoder and the rules compiler alike; exit 1.
func TestCheckBrokenConfig(t *testing.T) {
	code, out, _ := runCLI("check", "--config", "testdata/broken.toml")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	golden(t, "broken.golden", out)
}

func TestCheckFailingRuleTest(t *testing.T) {
	code, out, _ := runCLI("check", "testdata/failing_tests.toml")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	golden(t, "failing_tests.golden", out)
}

func TestCheckUsage(t *testing.T) {
	if code, _, _ := runCLI("check"); code != 2 {
		t.Errorf("check without a file: exit %d, want 2", code)
	}
	if code, _, errOut := runCLI("frobnicate"); code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: exit %d, %q", code, errOut)
	}
	if code, out, _ := runCLI("check", "testdata/does-not-exist.toml"); code != 1 || !strings.Contains(out, "no such file") {
		t.Errorf("missing file: exit %d, %q", code, out)
	}
}

func TestRulesTest(t *testing.T) {
	code, out, errOut := runCLI("rules", "test", "--config", "../../config.toml.example", "--listener", "sensors", "--hex", "a1000700d701900e10")
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	want := `rule:   binary-climate
device: 0007
field:  battery = 3600
field:  hum = 40
field:  temp = 21.5
publish: topic=sensors/0007/climate qos=1 retain=true payload={"battery":3600,"device":"0007","hum":40,"temp":21.5}
`
	if out != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
	code, out, _ = runCLI("rules", "test", "--config", "../../config.toml.example", "--listener", "sensors", "--text", "nothing matches this")
	wantWhy := `no publish: mapping: no rule matches
  rule json-climate: not a JSON object
  rule text-climate: regex ^(?P<id>[A-Za-z0-9_-]+) temp=(?P<temp>-?[0-9.]+) hum=(?P<hum>[0-9.]+)$ does not match
  rule binary-climate: 20 bytes, longer than max_len 9
`
	if code != 1 || out != wantWhy {
		t.Errorf("no match: exit %d, got\n%s\nwant\n%s", code, out, wantWhy)
	}
	if code, _, _ := runCLI("rules", "test", "--config", "../../config.toml.example", "--listener", "nosuch", "--text", "x"); code != 2 {
		t.Errorf("unknown listener: exit %d, want 2", code)
	}
}

// TestCheckClassesDownlinksAcks: a config with a class, downlinks and an acknowledged
// rule passes its inline tests, ack expectations included, and says what it checked.
func TestCheckClassesDownlinksAcks(t *testing.T) {
	code, out, _ := runCLI("check", "testdata/devices.toml")
	if code != 0 || !strings.Contains(out, "valid: 1 listener(s), 1 rule(s), 1 rule test(s) passed; 1 class(es), 2 downlink(s), 2 downlink test(s) passed; config sha256 "+configDigest("testdata/devices.toml")+" (run logs it as config_sha256)\n") {
		t.Errorf("exit %d: %s", code, out)
	}
}

func TestRulesTestDownlink(t *testing.T) {
	rules := func(args ...string) (int, string, string) {
		return runCLI(append([]string{"rules", "test", "--config", "testdata/devices.toml"}, args...)...)
	}
	code, out, errOut := rules("--downlink", "valve", "--topic", "site1/cmd/dev7/valve", "--payload", `{"open":258}`)
	want := `downlink: valve
listener: sensors
device:   dev7
deliver:  on_uplink (ttl 10m0s, max_queued 8)
hex:      0102
`
	if code != 0 || out != want {
		t.Errorf("fields: exit %d, got\n%s%s\nwant\n%s", code, out, errOut, want)
	}
	code, out, _ = rules("--downlink", "say", "--topic", "site1/say/dev7", "--payload", "1")
	want = `downlink: say
listener: sensors
device:   dev7
deliver:  now
hex:      53455420646576372031
text:     SET dev7 1
`
	if code != 0 || out != want {
		t.Errorf("template: exit %d, got\n%s\nwant\n%s", code, out, want)
	}
	code, out, _ = rules("--downlink", "valve", "--topic", "cmd/dev7/valve", "--payload", `{"open":1}`)
	if want := "no datagram: topic \"cmd/dev7/valve\" does not start with the mountpoint \"site1/\" of listener \"sensors\"\n"; code != 1 || out != want {
		t.Errorf("no match: exit %d, got %q, want %q", code, out, want)
	}
	code, out, _ = rules("--downlink", "valve", "--topic", "site1/cmd/dev7/valve", "--payload", `{"open":-1}`)
	if want := "no datagram: mapping: downlink \"valve\": decode: fields[0]: \"/open\" is -1, out of range for uint16\n"; code != 1 || out != want {
		t.Errorf("bad payload: exit %d, got %q, want %q", code, out, want)
	}
	if code, _, errOut := rules("--downlink", "nosuch", "--topic", "x"); code != 2 || !strings.Contains(errOut, `no downlink named "nosuch"`) {
		t.Errorf("unknown downlink: exit %d, %q", code, errOut)
	}
	if code, _, _ := rules("--downlink", "valve"); code != 2 {
		t.Errorf("no topic: exit %d, want 2", code)
	}
	if code, _, _ := rules("--downlink", "valve", "--topic", "x", "--listener", "sensors"); code != 2 {
		t.Errorf("downlink and listener: exit %d, want 2", code)
	}
}

// TestVersion: the version and the Go release it was built with, from
// `version` and `--version` alike.
func TestVersion(t *testing.T) {
	want := fmt.Sprintf("mqttgw %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	for _, args := range [][]string{{"version"}, {"--version"}} {
		if code, out, _ := runCLI(args...); code != 0 || out != want {
			t.Errorf("mqttgw %s: exit %d, %q; want 0, %q", args[0], code, out, want)
		}
	}
}

// TestREADMESnippetsParse: every ```toml block in the README is a valid config
// fragment (no unknown keys, no type errors).
func TestREADMESnippetsParse(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```toml\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) == 0 {
		t.Fatal("no toml blocks in README.md")
	}
	for i, b := range blocks {
		_, ps := config.Parse("README.md block "+string(rune('1'+i)), b[1])
		for _, p := range ps {
			// Fragments may leave out listeners or name files absent here.
			if strings.Contains(p.Msg, "cannot read") || strings.Contains(p.Msg, "no [[listener]]") {
				continue
			}
			t.Errorf("%v", p)
		}
	}
}
