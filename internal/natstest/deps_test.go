package natstest

import (
	"testing"

	"github.com/mqttgw/mqttgw/internal/deptest"
)

// TestImportsStdlibOnly checks the package imports only the standard
// library: it is a test helper that other packages' tests import, so it must
// not add dependencies to go.mod (it speaks to the servers by their config
// files and monitoring port, not with a NATS client), nor import mqttgw
// packages that could then not use it in their own tests (an import cycle).
func TestImportsStdlibOnly(t *testing.T) {
	deptest.Each(t, func(_, path string) string {
		if !deptest.Std(path) && path != "github.com/mqttgw/mqttgw/internal/testproc" {
			return "only the standard library is allowed"
		}
		return ""
	})
}
