package store

import (
	"strings"
	"testing"

	"github.com/mqttgw/mqttgw/internal/deptest"
)

// TestImports pins what this package may import: the standard library and
// bbolt (the architecture makes store the only importer of the backends'
// libraries, so that their types never leak into the gateway), and nothing of
// the project: the store knows bytes and records, not sessions or MQTT-SN.
// Only the bbolt backend's files (bolt*.go) may use bbolt, so that the
// JetStream backend can sit beside it and the interfaces, records and
// errors stay backend-neutral.
func TestImports(t *testing.T) {
	deptest.Each(t, func(file, path string) string {
		switch {
		case strings.HasPrefix(path, "go.etcd.io/bbolt"):
			if !strings.HasPrefix(file, "bolt") {
				return "only the bbolt backend's files, bolt*.go, may use bbolt"
			}
		case !deptest.Std(path):
			return "store uses only the standard library and its backends' libraries"
		}
		return ""
	})
}
