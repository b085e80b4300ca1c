package mqttsn

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports pins what this package may import. The codec must stay pure
// (no I/O, no logging, no clock), so its files may import only the packages
// listed in codecImports; client.go adds the networking it needs. Nothing
// outside the standard library: the architecture gives mqttsn "stdlib" only,
// so the CLI, the load generator and other gateways can reuse it cheaply.
func TestImports(t *testing.T) {
	codecImports := map[string]bool{
		"encoding/binary": true, // big-endian fields
		"errors":          true, // sentinels
		"fmt":             true, // error wrapping, String methods
		"strconv":         true, // String methods
	}
	clientImports := map[string]bool{
		"bytes": true, "context": true, "errors": true, "fmt": true,
		"net": true, "os": true, "strings": true, "sync": true,
		"sync/atomic": true, "syscall": true, "time": true,
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		allowed := codecImports
		if strings.HasPrefix(name, "client") {
			allowed = clientImports
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if !allowed[path] {
				t.Errorf("%s imports %q, which this package must not use here", name, path)
			}
		}
	}
}
