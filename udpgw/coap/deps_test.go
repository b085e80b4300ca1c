package coap

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports pins what the engine may import (ARCHITECTURE.md: udpgw/coap
// uses udpgw and session, and is the only importer of go-coap). It must not
// reach the upstream side (proxy, paho), the config, the gateway or auth: the
// Broker interface and Options are its only inputs — credentials come in as a
// PSK lookup and a password check — so it stays testable with a fake broker.
func TestImports(t *testing.T) {
	allowed := []string{
		"github.com/mqttgw/mqttgw/udpgw",   // Listener, Broker, Message
		"github.com/mqttgw/mqttgw/session", // device sessions
		"github.com/plgd-dev/go-coap/v3/",  // the CoAP stack
		"github.com/pion/dtls/v3",          // DTLS options and the PSK identity
		"github.com/pion/logging",          // pion's logs, sent to zap
		"go.uber.org/zap",                  // the logger passed in Options
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
	next:
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			first, _, _ := strings.Cut(path, "/")
			if !strings.Contains(first, ".") {
				continue // standard library
			}
			for _, a := range allowed {
				if path == a || strings.HasSuffix(a, "/") && strings.HasPrefix(path, a) {
					continue next
				}
			}
			t.Errorf("%s imports %q: the engine may import only %v", name, path, allowed)
		}
	}
}
