package faultrelay

import (
	"testing"

	"github.com/mqttgw/mqttgw/internal/deptest"
)

// TestImportsStdlibOnly checks the package imports only the standard library:
// it is a test helper that other packages' tests import, so it must add
// nothing to their dependencies, nor import an mqttgw package that could then
// not use it in its own tests (an import cycle).
func TestImportsStdlibOnly(t *testing.T) {
	deptest.Each(t, func(_, path string) string {
		if !deptest.Std(path) {
			return "only the standard library is allowed"
		}
		return ""
	})
}
