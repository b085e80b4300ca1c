package auth

import (
	"testing"

	"github.com/mqttgw/mqttgw/internal/deptest"
)

// TestImportsStdlibOnly: auth reads files and checks hashes with the standard
// library alone (crypto/pbkdf2 since Go 1.24), so every engine and the CLI may
// use it without pulling in anything else.
func TestImportsStdlibOnly(t *testing.T) {
	deptest.Each(t, func(_, path string) string {
		if !deptest.Std(path) {
			return "only the standard library is allowed"
		}
		return ""
	})
}
