package natstest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// MinVersion is the oldest nats-server the tests accept: 2.12 brought atomic
// batch publishing (the JetStream store's State.Apply); 2.11 per-message TTLs.
// Debian 12's package (2.9.10) has neither, so scripts/install-test-deps.sh
// builds the server from its Go module instead.
var MinVersion = [3]int{2, 12, 0}

// EnvServer names an environment variable that, when set, is the path of the
// nats-server to run instead of the one found on PATH.
const EnvServer = "MQTTGW_NATS_SERVER"

// sbinDirs are searched after PATH.
var sbinDirs = []string{"/usr/local/bin", "/usr/sbin", "/usr/local/sbin", "/sbin"}

var versionRE = regexp.MustCompile(`v?(\d+)\.(\d+)\.(\d+)`)

// serverBinary returns the path of a nats-server of at least MinVersion and
// its version, or why there is none.
func serverBinary() (path, version string, err error) {
	if p := os.Getenv(EnvServer); p != "" {
		v, err := binaryVersion(p)
		if err != nil {
			return "", "", fmt.Errorf("%s=%s: %w", EnvServer, p, err)
		}
		return p, v, nil
	}
	var candidates []string
	if p, err := exec.LookPath("nats-server"); err == nil {
		candidates = append(candidates, p)
	}
	for _, d := range sbinDirs {
		candidates = append(candidates, filepath.Join(d, "nats-server"))
	}
	var tooOld error
	for _, p := range candidates {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		v, err := binaryVersion(p)
		if err == nil {
			return p, v, nil
		}
		if tooOld == nil {
			tooOld = fmt.Errorf("%s: %w", p, err)
		}
	}
	if tooOld != nil {
		return "", "", tooOld
	}
	return "", "", fmt.Errorf("nats-server is not installed")
}

// binaryVersion runs `nats-server --version` and checks it against
// MinVersion.
func binaryVersion(path string) (string, error) {
	out, err := exec.Command(path, "--version").CombinedOutput()
	if err != nil {
		if out = bytes.TrimSpace(out); len(out) > 0 {
			err = fmt.Errorf("%w: %s", err, out)
		}
		return "", fmt.Errorf("--version: %w", err)
	}
	m := versionRE.FindStringSubmatch(string(out))
	if m == nil {
		return "", fmt.Errorf("--version printed %q", out)
	}
	var v [3]int
	for i := range v {
		v[i], _ = strconv.Atoi(m[i+1])
	}
	version := fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2])
	for i := range v {
		if v[i] != MinVersion[i] {
			if v[i] < MinVersion[i] {
				return "", fmt.Errorf("version %s, the tests need %d.%d.%d or newer", version, MinVersion[0], MinVersion[1], MinVersion[2])
			}
			break
		}
	}
	return version, nil
}

// mustServer returns the nats-server to run. A missing or too old one skips
// the test, except in CI (CI=true), where it fails it: there the test
// dependencies must be installed.
func mustServer(t testing.TB) (path, version string) {
	t.Helper()
	path, version, err := serverBinary()
	if err == nil {
		return path, version
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("natstest: %v (in CI this is a failure): run scripts/install-test-deps.sh", err)
	}
	t.Skipf("natstest: %v: run scripts/install-test-deps.sh", err)
	return "", ""
}
