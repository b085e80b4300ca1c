package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds Parse arbitrary config text (a config file is untrusted
// input too: check runs on files from anywhere): it must never panic, and
// every problem it reports names this file and a line that exists in it (or
// none). Seeds: testdata/fuzz/FuzzParse, plus the example config and the
// error fixture read here.
func FuzzParse(f *testing.F) {
	for _, p := range []string{"../config.toml.example", "testdata/many_errors.toml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, ps := Parse("f.toml", data)
		lines := strings.Count(string(data), "\n") + 1
		for _, p := range ps {
			if p.File != "" && p.File != "f.toml" && !strings.HasPrefix(p.File, filepath.Dir("f.toml")) {
				t.Errorf("problem names file %q: %v", p.File, p)
			}
			if p.Line < 0 || p.Line > lines {
				t.Errorf("problem at line %d of a %d-line text: %v", p.Line, lines, p)
			}
			if p.Error() == "" {
				t.Errorf("empty problem")
			}
		}
	})
}
