package recordtest

import (
	"testing"

	"github.com/mqttgw/mqttgw/internal/deptest"
)

// TestImports: a helper of other packages' tests imports the standard
// library and the store (its error sentinels) only.
func TestImports(t *testing.T) {
	deptest.Each(t, func(_, path string) string {
		if !deptest.Std(path) && path != "github.com/mqttgw/mqttgw/store" {
			return "only the standard library and store are allowed"
		}
		return ""
	})
}
