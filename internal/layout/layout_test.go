// Package layout holds one test: the import rules of the package table in README's
// architecture section, checked over the whole tree so that a new import that breaks
// the picture fails CI instead of drifting.
package layout

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/mqttgw/mqttgw/"

// owners: a third-party module and the only project packages that may import it.
var owners = map[string][]string{
	"github.com/eclipse/paho.mqtt.golang": {"proxy", "cmd/mqttgw"}, // cmd: the load tools' direct-to-broker baseline
	"github.com/mochi-mqtt/server":        {"proxy"},
	"github.com/plgd-dev/go-coap":         {"udpgw/coap", "cmd/mqttgw"},                 // cmd: the CoAP client tools
	"github.com/pion/":                    {"udpgw/coap", "udpgw/mqttsn", "cmd/mqttgw"}, // mqttsn: the mqttsns (DTLS) listener
	"github.com/BurntSushi/toml":          {"config"},
	"github.com/prometheus/":              {"metrics"},
	"go.etcd.io/bbolt":                    {"store"},
	"github.com/nats-io/":                 {"store/natsstore"}, // the JetStream backend of the store (issue 13)
}

// pure: packages that must stay free of I/O frameworks and logging, and the
// project packages they may use.
var pure = map[string][]string{
	"config":    {},
	"mapping":   {"config"},
	"mqttsn":    {},
	"session":   {},
	"udpgw":     {"session", "metrics"},
	"udpgw/raw": {"udpgw"},
	"metrics":   {},
	"auth":      {},
}

// pureExtra: the libraries (import path prefixes) a pure package may use beyond
// the standard library.
var pureExtra = map[string][]string{
	"udpgw":   {"go.uber.org/zap", "golang.org/x/sys/"}, // zap: Env hands every engine its logger; x/sys: recvmmsg and sendmmsg (batch_linux.go)
	"metrics": {"github.com/prometheus/"},               // the registry is client_golang's
}

func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}: {{join .Imports \" \"}}", module+"...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, ": ")
		pkg = strings.TrimPrefix(pkg, module)
		for _, imp := range strings.Fields(imports) {
			for mod, allowed := range owners {
				if strings.HasPrefix(imp, mod) && !contains(allowed, pkg) {
					t.Errorf("%s imports %s: only %v may (README, architecture)", pkg, imp, allowed)
				}
			}
			if allowedProject, ok := pure[pkg]; ok {
				if strings.HasPrefix(imp, module) && !contains(allowedProject, strings.TrimPrefix(imp, module)) {
					t.Errorf("%s imports %s: it may use only %v of the project", pkg, imp, allowedProject)
				}
				if strings.Contains(imp, ".") && !strings.HasPrefix(imp, module) && !hasPrefix(pureExtra[pkg], imp) && !(pkg == "config" && strings.HasPrefix(imp, "github.com/BurntSushi/toml")) {
					t.Errorf("%s imports %s: it stays on the standard library", pkg, imp)
				}
			}
		}
	}
}

func hasPrefix(prefixes []string, s string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
