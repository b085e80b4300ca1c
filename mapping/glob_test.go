package mapping

import (
	"path"
	"strings"
	"testing"
)

func TestGlob(t *testing.T) {
	for _, tc := range []struct {
		glob, name string
		want       bool
	}{
		{"*", "", true},
		{"*", "a/b", true}, // unlike path.Match
		{"meter-*", "meter-a/b/c", true},
		{"?", "/", true}, // unlike path.Match
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"*x*y", "axxbxy", true},
		{"*x*y", "axxbx", false},
		{"[a-c]*", "b1", true},
		{"[^a-c]*", "b1", false},
		{"[^a-c]*", "d1", true},
		{`\*`, "*", true},
		{`\*`, "a", false},
		{`[\]]`, "]", true},
		{"é?", "éü", true}, // characters, not bytes
		{"**", "anything", true},
		{"ab", "abc", false},
	} {
		toks, err := compileGlob(tc.glob)
		if err != nil {
			t.Errorf("%q: %v", tc.glob, err)
			continue
		}
		if got := matchGlob(toks, tc.name); got != tc.want {
			t.Errorf("%q on %q = %v, want %v", tc.glob, tc.name, got, tc.want)
		}
	}
	for _, bad := range []string{"[", "[]", "[a-", `\`, "[^]", "a[b", "[a-]"} {
		if _, err := compileGlob(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// FuzzGlob: on names without '/', where the two mean the same, matchGlob agrees with
// path.Match, and both refuse the same malformed globs.
func FuzzGlob(f *testing.F) {
	// Prefix and star.
	f.Add("meter-*", "meter-12")
	// A class and an escape.
	f.Add(`[a-c\]]?\*`, "b!*")
	// Negated class.
	f.Add("[^0-9]*", "x1")
	// Unclosed class.
	f.Add("[a-", "a")
	// Stars that must backtrack.
	f.Add("*a*a*a", "aaaaab")
	// Bytes that are not UTF-8.
	f.Add("?\xff", "\xff\xff")
	f.Fuzz(func(t *testing.T, glob, name string) {
		toks, err := compileGlob(glob)
		_, perr := path.Match(glob, "")
		if (err != nil) != (perr != nil) {
			t.Fatalf("glob %q: compileGlob error %v, path.Match error %v", glob, err, perr)
		}
		// path.Match steps a star over bytes, so on multi-byte names it can split
		// a rune ("*[^é]" matches "é" there); classes match whole runes, so
		// compare with it only where bytes are runes.
		if err != nil || strings.Contains(name, "/") || strings.Contains(glob, "/") || !isASCII(name) {
			return
		}
		want, _ := path.Match(glob, name)
		if got := matchGlob(toks, name); got != want {
			t.Fatalf("glob %q on %q: %v, path.Match %v", glob, name, got, want)
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// TestGlobWholeRunes: a star never splits a multi-byte character, unlike
// path.Match's.
func TestGlobWholeRunes(t *testing.T) {
	for _, tc := range []struct {
		glob, name string
		want       bool
	}{
		{"*[^é]", "é", false},
		{"*[^é]", "éa", true},
		{"*\xaa*", "㪖", false},
		{"zä*", "zäh", true},
	} {
		toks, err := compileGlob(tc.glob)
		if err != nil {
			t.Fatal(err)
		}
		if got := matchGlob(toks, tc.name); got != tc.want {
			t.Errorf("glob %q on %q = %v, want %v", tc.glob, tc.name, got, tc.want)
		}
	}
}
