package testproc

import (
	"testing"

	"github.com/mqttgw/mqttgw/internal/deptest"
)

// TestImportsStdlibOnly: the test servers' helpers use only the standard
// library, so every package's tests can import them without a cycle.
func TestImportsStdlibOnly(t *testing.T) {
	deptest.Each(t, func(_, path string) string {
		if !deptest.Std(path) {
			return "only the standard library is allowed"
		}
		return ""
	})
}
