//go:build linux

package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/config"
)

// The README's shell blocks are run as written, as coredns tests its README
// (test/readme_test.go), so that a command that does not work fails here and
// not in a reader's terminal. The conventions, also in the README:
//
//   - A block fenced ```sh runs with bash -e -o pipefail from the repository
//     root, a freshly built mqttgw first on PATH, and must exit 0 within
//     blockBound. Blocks run in README order.
//   - The gateway they talk to is the quick start's `make run &`, on
//     config.toml.example's fixed loopback ports: after a block that leaves
//     something running, the test waits until that gateway is ready
//     (/healthz on its metrics listener). Long-running commands are written
//     with & or bounded (-C COUNT -W SECONDS); what a block leaves running is
//     stopped when the test ends.
//   - ```sh norun is not run: only for what changes the machine or needs what
//     a test cannot have (sudo dpkg -i, docker, make test itself).
//   - ```sh config=FILE runs against a second gateway that the test starts on
//     FILE (relative to the repository root), for listeners the example does
//     not have.
//
// config.toml in the repository root, which the quick start copies from the
// example, is created if absent and removed afterwards (or put back as it
// was).

const (
	blockBound = 2 * time.Minute // one block
	readyBound = 3 * time.Minute // a gateway a block started (make run builds first)
)

// shellBlock is one ```sh block of the README.
type shellBlock struct {
	line   int    // of the opening fence
	text   string // the commands
	norun  bool
	config string // config=FILE
}

func readmeShellBlocks(t *testing.T, readme string) []shellBlock {
	t.Helper()
	data, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []shellBlock
	var cur *shellBlock
	var text strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && (line == "```sh" || strings.HasPrefix(line, "```sh ")):
			cur = &shellBlock{line: n}
			for _, w := range strings.Fields(strings.TrimPrefix(line, "```sh")) {
				switch {
				case w == "norun":
					cur.norun = true
				case strings.HasPrefix(w, "config="):
					cur.config = strings.TrimPrefix(w, "config=")
				default:
					t.Fatalf("README.md:%d: unknown word %q after ```sh: want norun or config=FILE", n, w)
				}
			}
			text.Reset()
		case cur != nil && line == "```":
			cur.text = text.String()
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			text.WriteString(line + "\n")
		}
	}
	if cur != nil {
		t.Fatalf("README.md:%d: a ```sh block that never ends", cur.line)
	}
	return blocks
}

// gatewayPorts are the loopback ports a config binds: its listeners (UDP),
// the embedded broker and the metrics listener (TCP).
func gatewayPorts(cfg *config.Config) (udp, tcp []string) {
	for _, l := range cfg.Listeners {
		udp = append(udp, l.Bind)
	}
	if cfg.Upstream.URL == "embedded" {
		tcp = append(tcp, cfg.Upstream.Embedded.Listen)
	}
	if cfg.Metrics.Listen != "" {
		tcp = append(tcp, cfg.Metrics.Listen)
	}
	return udp, tcp
}

// requireFree fails the test when another process holds one of the ports
// the README's commands name.
func requireFree(t *testing.T, file string, cfg *config.Config) {
	t.Helper()
	udp, tcp := gatewayPorts(cfg)
	for _, a := range udp {
		c, err := net.ListenPacket("udp", a)
		if err != nil {
			t.Fatalf("the README's commands use %s's fixed loopback ports, and UDP %s is taken (%v): stop what holds it (a gateway from make run?) and run again", file, a, err)
		}
		c.Close()
	}
	for _, a := range tcp {
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("the README's commands use %s's fixed loopback ports, and TCP %s is taken (%v): stop what holds it (a gateway from make run? Debian's mosquitto service, on 1883: systemctl stop mosquitto) and run again", file, a, err)
		}
		l.Close()
	}
}

// healthy reports whether the gateway whose metrics listener is at addr
// answers /healthz with 200: listening, and connected to its broker.
func healthy(addr string) bool {
	c := http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// groupAlive reports whether a process group has a member that is not a
// zombie (an orphan that nobody reaps still counts for kill(2)).
func groupAlive(pgid int) bool {
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')') // the command may hold spaces
		if i < 0 {
			continue
		}
		fields := strings.Fields(s[i+1:]) // state, ppid, pgrp, ...
		if len(fields) < 3 || fields[0] == "Z" {
			continue
		}
		if g, _ := strconv.Atoi(fields[2]); g == pgid {
			return true
		}
	}
	return false
}

// stopGroup ends a process group: SIGTERM (a gateway drains and exits), then
// SIGKILL for what is left after a while.
func stopGroup(t *testing.T, pgid int) {
	t.Helper()
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	if poll(20*time.Second, func() (bool, error) { return !groupAlive(pgid), nil }) != nil {
		t.Errorf("process group %d outlived SIGTERM by 20 s: killed", pgid)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
}

// TestREADMEShellBlocks runs every ```sh block of the README (see the
// conventions above).
func TestREADMEShellBlocks(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the README's commands against a real gateway")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeShellBlocks(t, filepath.Join(root, "README.md"))
	bash := needTool(t, "bash")
	// The programs the blocks name besides mqttgw and the shell's own.
	for _, tool := range []string{"make", "go", "mosquitto_sub", "mosquitto_pub", "coap-client-notls", "curl"} {
		re := regexp.MustCompile(`(^|[\s|&;(])` + regexp.QuoteMeta(tool) + `\s`)
		for _, b := range blocks {
			if !b.norun && re.MatchString(b.text) {
				needTool(t, tool)
				break
			}
		}
	}

	example := filepath.Join(root, "config.toml.example")
	cfg, ps := config.Load(example)
	if errs := ps.Errors(); len(errs) > 0 {
		t.Fatal(errs)
	}
	requireFree(t, "config.toml.example", cfg)

	// config.toml: the quick start makes it; blocks read it.
	cfgFile := filepath.Join(root, "config.toml")
	if old, err := os.ReadFile(cfgFile); err == nil {
		t.Cleanup(func() { os.WriteFile(cfgFile, old, 0o644) })
	} else {
		data, err := os.ReadFile(example)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cfgFile, data, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(cfgFile) })
	}

	bin := buildBinary(t)
	env := append(os.Environ(), "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	logs := t.TempDir()
	var groups []int // what blocks left running, stopped at the end
	t.Cleanup(func() {
		for i := len(groups) - 1; i >= 0; i-- {
			stopGroup(t, groups[i])
		}
	})
	extra := map[string]bool{} // config=FILE gateways started

	for i, b := range blocks {
		where := fmt.Sprintf("README.md:%d", b.line)
		if b.norun {
			t.Logf("%s: norun", where)
			continue
		}
		if b.config != "" && !extra[b.config] {
			startExtraGateway(t, bin, filepath.Join(root, b.config), where)
			extra[b.config] = true
		}
		script := filepath.Join(logs, fmt.Sprintf("block%d.sh", i))
		if err := os.WriteFile(script, []byte(b.text), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(filepath.Join(logs, fmt.Sprintf("block%d.log", i)))
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bash, "-e", "-o", "pipefail", script)
		cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = root, env, out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		out.Close()
		pgid := cmd.Process.Pid
		groups = append(groups, pgid)
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		output := func() string {
			b, _ := os.ReadFile(out.Name())
			return string(b)
		}
		select {
		case err = <-exited:
		case <-time.After(blockBound):
			stopGroup(t, pgid)
			<-exited
			t.Fatalf("%s did not end within %v (a long-running command needs & or bounds such as -C COUNT -W SECONDS):\n%s\noutput:\n%s", where, blockBound, b.text, output())
		}
		if err != nil {
			t.Fatalf("%s: %v\n%s\noutput:\n%s", where, err, b.text, output())
		}
		t.Logf("%s: ok", where)

		// A block that left a gateway starting (the quick start's make run &):
		// wait until it is ready, or gone.
		if !groupAlive(pgid) || healthy(cfg.Metrics.Listen) {
			continue
		}
		err = poll(readyBound, func() (bool, error) {
			if healthy(cfg.Metrics.Listen) {
				return true, nil
			}
			if !groupAlive(pgid) {
				return false, errors.New("what it started ended first")
			}
			return false, nil
		})
		if err != nil {
			t.Fatalf("%s: the gateway on config.toml.example did not answer http://%s/healthz within %v: %v\n%s", where, cfg.Metrics.Listen, readyBound, err, output())
		}
		t.Logf("%s: the gateway it started is ready", where)
	}
}

// startExtraGateway runs the test's mqttgw on a config=FILE block's config
// until the test ends, and waits until it is ready.
func startExtraGateway(t *testing.T, bin, file, where string) {
	t.Helper()
	cfg, ps := config.Load(file)
	if errs := ps.Errors(); len(errs) > 0 {
		t.Fatalf("%s: config=%s: %v", where, file, errs)
	}
	if cfg.Metrics.Listen == "" {
		t.Fatalf("%s: config=%s: set [metrics] listen, so that the test can tell when the gateway is ready", where, file)
	}
	requireFree(t, file, cfg)
	r := startBinary(t, bin, "run", "--config", file)
	err := poll(30*time.Second, func() (bool, error) { return healthy(cfg.Metrics.Listen), r.exitErr() })
	if err != nil {
		t.Fatalf("%s: mqttgw run --config %s did not answer http://%s/healthz within 30 s: %v\n%s", where, file, cfg.Metrics.Listen, err, r.logs.String())
	}
}
