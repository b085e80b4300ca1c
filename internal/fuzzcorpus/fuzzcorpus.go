// Package fuzzcorpus keeps a fuzz target's seed corpus (testdata/fuzz/NAME) in
// step with the fixture tables it is made from, for the packages' tests.
package fuzzcorpus

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// File is the seed file of one []byte input, in go test's corpus format.
func File(raw []byte) []byte {
	return []byte("go test fuzz v1\n[]byte(" + strconv.Quote(string(raw)) + ")\n")
}

// Check fails t for every file of want missing from dir or different there;
// with update it first writes them. Other files in dir (inputs saved by
// `go test -fuzz`) are left alone.
func Check(t testing.TB, dir string, want map[string][]byte, update bool) {
	t.Helper()
	if update {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, content := range want {
			if err := os.WriteFile(filepath.Join(dir, name), content, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, content := range want {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%v (run with -update-corpus)", err)
			continue
		}
		if !bytes.Equal(got, content) {
			t.Errorf("%s is stale (run with -update-corpus)", name)
		}
	}
}
