package nginxtest

import (
	"testing"

	"github.com/mqttgw/mqttgw/internal/deptest"
)

// TestImportsStdlibOnly: a test helper other packages' tests import adds
// nothing to go.mod and imports no mqttgw package that could not then use it.
func TestImportsStdlibOnly(t *testing.T) {
	deptest.Each(t, func(_, path string) string {
		if !deptest.Std(path) && path != "github.com/mqttgw/mqttgw/internal/testproc" {
			return "only the standard library is allowed"
		}
		return ""
	})
}
