package natsstore

import (
	"strings"
	"testing"

	"github.com/mqttgw/mqttgw/internal/deptest"
)

// TestImports pins what this package may import: the standard library, the
// store package whose interfaces it implements and whose records it stores,
// and the NATS client (README's architecture: only the store's backends
// import their libraries, so NATS types never reach the gateway). Nothing
// else of the project: the store knows bytes and records, not sessions.
func TestImports(t *testing.T) {
	deptest.Each(t, func(_, path string) string {
		switch {
		case deptest.Std(path), path == "github.com/mqttgw/mqttgw/store":
		case strings.HasPrefix(path, "github.com/nats-io/nats.go"):
		default:
			return "natsstore uses only the standard library, the store package and nats.go"
		}
		return ""
	})
}
