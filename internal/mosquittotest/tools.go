package mosquittotest

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// sbinDirs are searched after PATH: Debian installs mosquitto in /usr/sbin,
// which is not on a non-root user's PATH.
var sbinDirs = []string{"/usr/sbin", "/usr/local/sbin", "/sbin"}

// lookTool returns the path of the program name.
func lookTool(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err == nil {
		return p, nil
	}
	for _, d := range sbinDirs {
		if p, err2 := exec.LookPath(filepath.Join(d, name)); err2 == nil {
			return p, nil
		}
	}
	return "", err
}

// RequireTools fails the test when one of the named programs is not
// installed. It never skips: the integration tests need the real tools.
func RequireTools(t testing.TB, names ...string) {
	t.Helper()
	var missing []string
	for _, n := range names {
		if _, err := lookTool(n); err != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("mosquittotest: missing %s: run scripts/install-test-deps.sh (make test does)", strings.Join(missing, ", "))
	}
}

// mustTool returns the path of name, failing the test when it is missing.
func mustTool(t testing.TB, name string) string {
	t.Helper()
	RequireTools(t, name)
	p, _ := lookTool(name)
	return p
}
