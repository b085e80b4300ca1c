package mapping

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mqttgw/mqttgw/internal/deptest"
)

// forbiddenImports are packages this package must not import directly, and why.
var forbiddenImports = map[string]string{
	"net":                                 "mapping is pure: sockets belong to udpgw (net/netip is fine)",
	"os":                                  "mapping is pure: no files, no environment",
	"log":                                 "mapping does not log: it returns errors for the owner to log",
	"log/slog":                            "mapping does not log: it returns errors for the owner to log",
	"sync":                                "a Table is immutable and a Result belongs to one goroutine: no locks",
	"unsafe":                              "the allocation budget is met without it",
	"reflect":                             "the hot path must not reflect",
	"encoding/json":                       "the hot path scans JSON itself (json.go); encoding/json is for tests",
	"github.com/BurntSushi/toml":          "the TOML library stays in config",
	"go.uber.org/zap":                     "mapping does not log",
	"github.com/eclipse/paho.mqtt.golang": "the MQTT client stays in proxy",
}

// forbiddenDeps must not appear anywhere in the dependency graph.
var forbiddenDeps = []string{"go.uber.org/zap", "github.com/eclipse/paho.mqtt.golang", "github.com/plgd-dev/go-coap/v3", "github.com/mochi-mqtt/server/v2"}

func TestImports(t *testing.T) {
	deptest.Each(t, func(_, path string) string {
		if why, bad := forbiddenImports[path]; bad {
			return why
		}
		if !deptest.Std(path) && path != "github.com/mqttgw/mqttgw/config" {
			return "mapping uses the standard library and config only"
		}
		return ""
	})
}

func TestDeps(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool")
	}
	cmd := exec.Command(goTool, "list", "-deps", ".")
	out, err := cmd.Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, bad := range forbiddenDeps {
			if dep == bad || strings.HasPrefix(dep, bad+"/") {
				t.Errorf("mapping depends on %s", dep)
			}
		}
	}
}

// clockFuncs are the parts of package time that read or wait on the clock. mapping
// imports time for durations only (a class's keepalive, a downlink's ttl, an ack's
// dedup window): it is pure, so time, when needed, is an argument.
var clockFuncs = map[string]bool{
	"Now": true, "Since": true, "Until": true, "Sleep": true, "After": true,
	"AfterFunc": true, "Tick": true, "NewTimer": true, "NewTicker": true,
}

func TestNoClock(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); ok && x.Name == "time" && clockFuncs[sel.Sel.Name] {
				t.Errorf("%s: time.%s: mapping is pure: time, if ever needed, is an argument", fset.Position(sel.Pos()), sel.Sel.Name)
			}
			return true
		})
	}
}
