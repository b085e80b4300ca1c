package main

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// needTool returns the path of a program a test runs. A missing one skips the
// test, except in CI (CI=true), where it is a failure: there the test
// dependencies must be installed (scripts/install-test-deps.sh).
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed (in CI a missing tool is a failure): run scripts/install-test-deps.sh", name)
	}
	t.Skipf("%s is not installed", name)
	return ""
}

// flagLines returns, for each flag line of a help text ("  -c, --config
// FILE  ..."), the names it shows.
func flagLines(help string) map[string]bool {
	names := map[string]bool{}
	for _, line := range strings.Split(help, "\n") {
		if !strings.HasPrefix(line, "  -") {
			continue
		}
		for _, w := range strings.Fields(line) {
			if !strings.HasPrefix(w, "-") {
				break
			}
			names[strings.TrimSuffix(w, ",")] = true
			if !strings.HasSuffix(w, ",") {
				break
			}
		}
	}
	return names
}

// TestHelpEveryCommand: every command answers --help (and -h where -h is not
// a flag, and `mqttgw help COMMAND`) on standard output with exit 0: its
// usage, every flag it parses with the flag's default, and an example.
func TestHelpEveryCommand(t *testing.T) {
	for _, c := range commands {
		words := strings.Fields(c.name)
		code, out, errOut := runCLI(append(slices.Clone(words), "--help")...)
		if code != 0 || errOut != "" {
			t.Errorf("mqttgw %s --help: exit %d, stderr %q; want 0 and nothing", c.name, code, errOut)
			continue
		}
		if !strings.HasPrefix(out, "usage: mqttgw "+c.name) {
			t.Errorf("mqttgw %s --help does not start with its usage:\n%s", c.name, out)
		}
		if !strings.Contains(out, "\nExamples:\n  mqttgw "+words[0]) {
			t.Errorf("mqttgw %s --help has no example:\n%s", c.name, out)
		}
		shown := flagLines(out)
		flat := strings.Join(strings.Fields(out), " ")
		if c.flags != nil {
			c.flags().VisitAll(func(f *flag.Flag) {
				if !shown[dashed(f.Name)] {
					t.Errorf("mqttgw %s --help does not list %s", c.name, dashed(f.Name))
				}
				if d := f.DefValue; d != "" && d != "0" && d != "false" && d != "0s" && !strings.Contains(flat, "(default "+d+")") {
					t.Errorf("mqttgw %s --help does not give %s's default %s", c.name, dashed(f.Name), d)
				}
			})
		}
		for _, n := range c.flagNames {
			if !shown[n] {
				t.Errorf("mqttgw %s --help does not list %s", c.name, n)
			}
		}
		if code, out2, _ := runCLI(append([]string{"help"}, words...)...); code != 0 || out2 != out {
			t.Errorf("mqttgw help %s: exit %d, and not the same text as --help", c.name, code)
		}
		if c.name != "pub" && c.name != "sub" {
			if code, out2, _ := runCLI(append(slices.Clone(words), "-h")...); code != 0 || out2 != out {
				t.Errorf("mqttgw %s -h: exit %d, and not the same text as --help", c.name, code)
			}
		}
	}
	if code, out, _ := runCLI("help"); code != 0 || out != usage() {
		t.Errorf("mqttgw help: exit %d, not the usage", code)
	}
	if code, out, _ := runCLI("rules", "--help"); code != 0 || !strings.HasPrefix(out, "usage: mqttgw rules test") {
		t.Errorf("mqttgw rules --help: exit %d, %q", code, out)
	}
	if code, _, errOut := runCLI("help", "frobnicate"); code != 2 || !strings.Contains(errOut, `no command "frobnicate"`) {
		t.Errorf("mqttgw help frobnicate: exit %d, %q", code, errOut)
	}
	for _, line := range strings.Split(usage(), "\n") {
		if len([]rune(line)) > 80 {
			t.Errorf("usage line longer than 80 columns: %q", line)
		}
	}
}

// TestUnknownFlagNamesTheHelp: a flag a command does not know is exit 2 and
// says which help to read.
func TestUnknownFlagNamesTheHelp(t *testing.T) {
	for _, c := range commands {
		if c.flags == nil {
			continue // help takes none; passwd keeps its own usage (TestPasswdUsage)
		}
		words := strings.Fields(c.name)
		code, out, errOut := runCLI(append(words, "--no-such-flag")...)
		want := fmt.Sprintf("mqttgw %s: unknown flag --no-such-flag\nRun 'mqttgw %s --help' for its flags and examples.\n", c.name, c.name)
		if code != 2 || out != "" || errOut != want {
			t.Errorf("mqttgw %s --no-such-flag: exit %d, stdout %q, stderr %q; want 2 and %q", c.name, code, out, errOut, want)
		}
	}
	if code, _, errOut := runCLI("passwd", "--no-such-flag"); code != 2 || !strings.Contains(errOut, "usage: mqttgw passwd") {
		t.Errorf("mqttgw passwd --no-such-flag: exit %d, %q", code, errOut)
	}
}

// TestPubSubFlags: -h is the host, as in mosquitto_pub (alone it is a
// mistake that points to --help); one protocol's flags with the other are
// refused, not ignored.
func TestPubSubFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"pub", "-h"}, "-h names the gateway's host, as in mosquitto_pub (-h HOST); for help, --help"},
		{[]string{"sub", "-t", "x", "-h"}, "-h names the gateway's host, as in mosquitto_sub"},
		{[]string{"pub", "-t", "x", "-m", "y", "--non"}, "--non is a CoAP flag: add --coap"},
		{[]string{"sub", "-t", "x", "-u", "me"}, "-u is a CoAP flag"},
		{[]string{"pub", "--coap", "-t", "x", "-m", "y", "--predefined", "3"}, "--predefined is an MQTT-SN flag"},
		{[]string{"sub", "--coap", "-t", "x", "-c"}, "-c is an MQTT-SN flag"},
		{[]string{"pub", "-t", "x"}, "give exactly one of -m MSG, -f FILE, -n or -l"},
		{[]string{"pub", "-t", "x", "-m", "y", "extra"}, `unexpected argument "extra"`},
		{[]string{"sub", "--coap", "-t", "x", "-q", "3"}, "-q 3: want 0, 1 or 2"},
		{[]string{"bench", "--coap", "--clients", "3"}, "--clients is for the MQTT-SN load"},
		{[]string{"bench", "--devices", "3"}, "--devices is for the CoAP load: add --coap"},
	} {
		code, _, errOut := runCLI(tt.args...)
		if code != 2 || !strings.Contains(errOut, tt.want) || !strings.Contains(errOut, "Run 'mqttgw "+tt.args[0]+" --help'") {
			t.Errorf("mqttgw %s: exit %d, stderr %q; want 2 and %q", strings.Join(tt.args, " "), code, errOut, tt.want)
		}
	}
}

// TestPubSubAddress: how -h/-p, --mqttsn [ADDR], --coap [URL] and the PSK
// flags choose the protocol and the address.
func TestPubSubAddress(t *testing.T) {
	for _, tt := range []struct {
		args       []string
		coap, dtls bool
		hostport   string
		path       string
		err        string
	}{
		{args: []string{"-t", "a"}, hostport: "127.0.0.1:1884"},
		{args: []string{"-h", "gw.local", "-p", "2000", "-t", "a"}, hostport: "gw.local:2000"},
		{args: []string{"--mqttsn", "-h", "::1", "-t", "a"}, hostport: "[::1]:1884"},
		{args: []string{"--mqttsn", "10.0.0.1:1", "-t", "a"}, hostport: "10.0.0.1:1"},
		{args: []string{"--mqttsn=mqttsn://10.0.0.1:1", "-t", "a"}, hostport: "10.0.0.1:1"},
		{args: []string{"-t", "a", "--mqttsn"}, hostport: "127.0.0.1:1884"},
		{args: []string{"--psk-identity", "n7", "--psk-key", "00", "-t", "a"}, dtls: true, hostport: "127.0.0.1:8884"},
		{args: []string{"--mqttsn", "mqttsns://h:9", "--psk-identity", "n7", "--psk-key", "00", "-t", "a"}, dtls: true, hostport: "h:9"},
		{args: []string{"-m", "--coap", "-t", "a"}, hostport: "127.0.0.1:1884"}, // -m's value, not a protocol
		{args: []string{"--coap", "-t", "a/b"}, coap: true, hostport: "127.0.0.1:5683", path: "/ps/a/b"},
		{args: []string{"--coap", "-p", "6000", "-t", "a"}, coap: true, hostport: "127.0.0.1:6000", path: "/ps/a"},
		{args: []string{"--coap", "coap://h/ps/x"}, coap: true, hostport: "h:5683", path: "/ps/x"},
		{args: []string{"--coap", "coap://h:1", "-t", "x"}, coap: true, hostport: "h:1", path: "/ps/x"},
		{args: []string{"--coap", "coap://h:1/elsewhere"}, coap: true, hostport: "h:1", path: "/elsewhere"},
		{args: []string{"--coap", "--psk-identity", "n7", "--psk-key", "00", "-t", "a"}, coap: true, dtls: true, hostport: "127.0.0.1:5684", path: "/ps/a"},
		{args: []string{"--coap", "coaps://h/ps/a", "--psk-identity", "n7", "--psk-key", "00"}, coap: true, dtls: true, hostport: "h:5684", path: "/ps/a"},

		{args: []string{"--mqttsn", "--coap", "-t", "a"}, err: "give --mqttsn or --coap, not both"},
		{args: []string{"--mqttsn", "h:1", "-p", "2", "-t", "a"}, err: "give the gateway's address once"},
		{args: []string{"--coap", "coap://h/ps/x", "-h", "g"}, err: "give the gateway's address once"},
		{args: []string{"--coap", "coap://h/ps/x", "-t", "y"}, err: "give the topic once"},
		{args: []string{"--coap"}, err: "give -t TOPIC"},
		{args: []string{"--coap", "coap://h"}, err: "give -t TOPIC, or the topic in the URL"},
		{args: []string{"-p", "70000", "-t", "a"}, err: "-p 70000: want 1..65535"},
		{args: []string{"--mqttsn", "tcp://h:1", "-t", "a"}, err: "want HOST:PORT"},
		{args: []string{"--mqttsn", "h:1", "--psk-identity", "n7", "--psk-key", "00", "-t", "a"}, err: "are for DTLS"},
		{args: []string{"--coap", "coap://h/ps/x", "--psk-identity", "n7", "--psk-key", "00"}, err: "are for DTLS"},
		{args: []string{"--psk-identity", "n7", "-t", "a"}, err: "DTLS needs --psk-identity and --psk-key"},
		{args: []string{"--coap", "--psk-identity", "n7", "--psk-key", "secret1", "-t", "a"}, err: "want the key in hex"},
	} {
		fs, o := pubFlags()
		if err := fs.Parse(withOptionalValues(fs, tt.args)); err != nil {
			t.Errorf("%q: %v", tt.args, err)
			continue
		}
		got, err := o.dev.resolve(fs)
		switch {
		case tt.err != "":
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: error %v, want %q", tt.args, err, tt.err)
			}
		case err != nil:
			t.Errorf("%q: %v", tt.args, err)
		case got.coap != tt.coap || got.dtls != tt.dtls || got.hostport != tt.hostport || got.path != tt.path:
			t.Errorf("%q: coap %t, dtls %t, %s%s; want coap %t, dtls %t, %s%s", tt.args, got.coap, got.dtls, got.hostport, got.path, tt.coap, tt.dtls, tt.hostport, tt.path)
		}
	}
}

// TestPubRefusedAtOnce: pub to a port where nothing listens fails on the ICMP
// port unreachable instead of retransmitting (here for an hour; the timeout
// would end it with "context deadline exceeded"), as mosquitto_pub fails on
// a refused connection; -d shows the ICMP message.
func TestPubRefusedAtOnce(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(pc.LocalAddr().String())
	pc.Close()
	for _, debug := range []bool{false, true} {
		args := []string{"pub", "-p", port, "-t", "a", "-m", "x", "-q", "1", "--retry", "1h", "--timeout", "50s"}
		if debug {
			args = append(args, "-d")
		}
		code, _, errOut := runCLI(args...)
		if code != 1 || !strings.Contains(errOut, "connect: port unreachable: nothing listens there") {
			t.Errorf("mqttgw %s: exit %d, stderr %q; want 1 and the refusal", strings.Join(args, " "), code, errOut)
		}
		if debug && !strings.Contains(errOut, "sending CONNECT (clean 1, will 0, duration 60, client id \"mqttgw-pub-") ||
			debug && !strings.Contains(errOut, "received ICMP port unreachable from 127.0.0.1:"+port) {
			t.Errorf("pub -d: stderr %q; want the CONNECT and the ICMP message", errOut)
		}
	}
}

// TestPubSubDebug: -d prints every MQTT-SN packet and CoAP message sent and
// received, over UDP and DTLS.
func TestPubSubDebug(t *testing.T) {
	_, _, snAddr := startSNGateway(t)
	code, _, errOut := runCLI("pub", "-d", "--mqttsn", snAddr, "-t", "cli/d", "-m", "hello", "-q", "1", "--retry", "300ms")
	if code != 0 {
		t.Fatalf("pub -d: exit %d: %s", code, errOut)
	}
	wantLines(t, errOut,
		`sending CONNECT (clean 1, will 0, duration 60, client id "mqttgw-pub-`,
		"received CONNACK (accepted)",
		`sending REGISTER (topic id 0, msg id 1, topic "cli/d")`,
		"received REGACK (topic id ",
		"sending PUBLISH (dup 0, qos 1, retain 0, normal topic id ",
		"received PUBACK (topic id ",
		"sending DISCONNECT",
		"received DISCONNECT",
	)

	_, _, plain, secure := startCoAPGateway(t)
	code, _, errOut = runCLI("pub", "-d", "--coap", "coap://"+plain, "-t", "cli/c", "-m", "hi", "-r")
	if code != 0 {
		t.Fatalf("pub --coap -d: exit %d: %s", code, errOut)
	}
	wantLines(t, errOut, "sending CON POST mid ", " /ps/cli/c ?retain=true (2 octets)", "received ACK 2.04 Changed mid ")
	code, out, errOut := runCLI("sub", "-d", "-v", "--coap", "coap://"+plain, "-t", "cli/c", "-C", "1", "-W", "10")
	if code != 0 || out != "cli/c hi\n" {
		t.Fatalf("sub --coap -d -v: exit %d, stdout %q: %s", code, out, errOut)
	}
	wantLines(t, errOut, "sending CON GET mid ", " /ps/cli/c observe 0", "received ACK 2.05 Content mid ", "sending CON GET", "observe 1")
	code, _, errOut = runCLI("pub", "-d", "--coap", "coaps://"+secure+"/ps/cli/s", "-m", "sealed",
		"--psk-identity", "cli-dev", "--psk-key", "636c692d6b6579")
	if code != 0 {
		t.Fatalf("pub coaps -d: exit %d: %s", code, errOut)
	}
	wantLines(t, errOut, `DTLS 1.2 handshake with `+secure+` done, PSK identity "cli-dev"`, "sending CON POST", "received ACK 2.04 Changed")
}

// wantLines fails unless text holds each of wants, in order.
func wantLines(t *testing.T, text string, wants ...string) {
	t.Helper()
	rest := text
	for _, w := range wants {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Errorf("no %q (in order) in:\n%s", w, text)
			return
		}
		rest = rest[i+len(w):]
	}
}

// TestCompletionBash: the bash script parses (bash -n) and, sourced into bash,
// completes commands, their flags, the word after a command, and file names.
func TestCompletionBash(t *testing.T) {
	bash := needTool(t, "bash")
	code, script, errOut := runCLI("completion", "bash")
	if code != 0 {
		t.Fatalf("completion bash: exit %d: %s", code, errOut)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "mqttgw.bash")
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bash, "-n", file).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "site.toml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	complete := func(words ...string) []string {
		t.Helper()
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + w + "'"
		}
		sh := fmt.Sprintf("source %s\nCOMP_WORDS=(%s)\nCOMP_CWORD=%d\n_mqttgw\nprintf '%%s\\n' \"${COMPREPLY[@]}\"\n",
			file, strings.Join(quoted, " "), len(words)-1)
		out, err := exec.Command(bash, "-c", sh).CombinedOutput()
		if err != nil {
			t.Fatalf("completing %q: %v\n%s", words, err, out)
		}
		return strings.Fields(string(out))
	}
	for _, tt := range []struct {
		words []string
		want  []string
	}{
		{[]string{"mqttgw", "pu"}, []string{"pub"}},
		{[]string{"mqttgw", "c"}, []string{"check", "completion"}},
		{[]string{"mqttgw", "pub", "--ps"}, []string{"--psk-identity", "--psk-key"}},
		{[]string{"mqttgw", "sub", "-W"}, []string{"-W"}},
		{[]string{"mqttgw", "rules", ""}, []string{"test"}},
		{[]string{"mqttgw", "rules", "test", "--li"}, []string{"--listener"}},
		{[]string{"mqttgw", "completion", ""}, []string{"bash", "zsh"}},
		{[]string{"mqttgw", "help", "b"}, []string{"bench"}},
		{[]string{"mqttgw", "run", "--config", dir + "/si"}, []string{dir + "/site.toml"}},
		{[]string{"mqttgw", "check", dir + "/si"}, []string{dir + "/site.toml"}},
		{[]string{"mqttgw", "passwd", "-"}, []string{"-D", "-b", "-c", "--help"}},
	} {
		got := complete(tt.words...)
		slices.Sort(got)
		want := slices.Clone(tt.want)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("completing %q: %q, want %q", tt.words, got, want)
		}
	}
	all := complete("mqttgw", "")
	for _, c := range commands {
		if !slices.Contains(all, firstWord(c)) {
			t.Errorf("completing the command: %q lacks %s", all, firstWord(c))
		}
	}
}

// TestCompletionZsh: the zsh script parses (zsh -n), when zsh is installed.
func TestCompletionZsh(t *testing.T) {
	zsh, err := exec.LookPath("zsh")
	if err != nil {
		t.Skip("zsh is not installed")
	}
	code, script, errOut := runCLI("completion", "zsh")
	if code != 0 || !strings.HasPrefix(script, "#compdef mqttgw\n") {
		t.Fatalf("completion zsh: exit %d: %s", code, errOut)
	}
	file := filepath.Join(t.TempDir(), "_mqttgw")
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(zsh, "-n", file).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v\n%s", err, out)
	}
	if code, _, errOut := runCLI("completion", "fish"); code != 2 || !strings.Contains(errOut, "want bash or zsh") {
		t.Errorf("completion fish: exit %d, %q", code, errOut)
	}
}

// TestManPageGroff: groff reads the man page without a warning (-ww: all of
// them), as the package test checks the installed page; skipped without groff
// (in CI the package test has it).
func TestManPageGroff(t *testing.T) {
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Skip("groff is not installed")
	}
	var page bytes.Buffer
	cmdMan(&page)
	cmd := exec.Command(groff, "-man", "-ww", "-z")
	cmd.Stdin = &page
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("groff -man -ww -z: %v\n%s", err, out)
	}
}
