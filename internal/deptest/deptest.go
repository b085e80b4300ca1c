// Package deptest walks the imports of the package under test, for the small
// TestImports each package keeps with its own rules and reasons (STYLE.md: a test
// lists the imports a package must not have, and why).
package deptest

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Each calls check for every import of every non-test .go file in the current
// directory (the package under test); a non-empty answer fails t with it.
func Each(t testing.TB, check func(file, path string) (why string)) {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if why := check(name, path); why != "" {
				t.Errorf("%s imports %q: %s", name, path, why)
			}
		}
	}
}

// Std reports whether path is in the standard library (its first element has no dot).
func Std(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

// Allowed reports whether path is one of allowed; an entry ending in "/" allows
// everything below it.
func Allowed(path string, allowed []string) bool {
	for _, a := range allowed {
		if path == a || strings.HasSuffix(a, "/") && strings.HasPrefix(path, a) {
			return true
		}
	}
	return false
}
