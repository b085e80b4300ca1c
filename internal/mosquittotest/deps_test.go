package mosquittotest

import (
	"testing"

	"github.com/mqttgw/mqttgw/internal/deptest"
)

// TestImportsStdlibOnly checks the package imports only the standard
// library: it is a test helper that other packages' tests import, and it
// must not add dependencies to go.mod, nor import mqttgw packages that would
// then be unable to use it in their own tests (an import cycle).
func TestImportsStdlibOnly(t *testing.T) {
	deptest.Each(t, func(_, path string) string {
		if !deptest.Std(path) && path != "github.com/mqttgw/mqttgw/internal/testproc" {
			return "only the standard library is allowed"
		}
		return ""
	})
}
