package mqttsn

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports pins what the engine may import (ARCHITECTURE.md: udpgw/mqttsn
// uses mqttsn, udpgw and session). It must not reach the upstream side (proxy,
// paho), the config or the gateway: the Broker interface and Options are its
// only inputs, so it stays testable with a fake broker and usable by another
// owner. zap and metrics come in through Options.
func TestImports(t *testing.T) {
	allowed := map[string]string{
		"github.com/mqttgw/mqttgw/mqttsn":  "the codec",
		"github.com/mqttgw/mqttgw/udpgw":   "Listener, Broker, Message",
		"github.com/mqttgw/mqttgw/session": "liveness and wills",
		"github.com/mqttgw/mqttgw/metrics": "counters passed in Options",
		"go.uber.org/zap":                  "the logger passed in Options",
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
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if !strings.Contains(path, ".") {
				continue // standard library
			}
			if _, ok := allowed[path]; !ok {
				t.Errorf("%s imports %q: the engine may import only %v", name, path, allowed)
			}
		}
	}
}
