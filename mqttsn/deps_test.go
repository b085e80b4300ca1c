package mqttsn

import (
	"strings"
	"testing"

	"github.com/mqttgw/mqttgw/internal/deptest"
)

// TestImports pins what this package may import. The codec must stay pure
// (no I/O, no logging, no clock), so its files may import only the packages
// listed in codecImports; client.go adds the networking it needs. Nothing
// outside the standard library: the architecture gives mqttsn "stdlib" only,
// so the CLI, the load generator and other gateways can reuse it cheaply.
func TestImports(t *testing.T) {
	codecImports := map[string]bool{
		"encoding/binary": true, // big-endian fields
		"errors":          true, // sentinels
		"fmt":             true, // error wrapping, String methods
		"strconv":         true, // String methods
	}
	clientImports := map[string]bool{
		"bytes": true, "context": true, "errors": true, "fmt": true, "io": true,
		"net": true, "os": true, "strings": true, "sync": true,
		"sync/atomic": true, "syscall": true, "time": true,
	}
	deptest.Each(t, func(file, path string) string {
		allowed := codecImports
		if strings.HasPrefix(file, "client") {
			allowed = clientImports
		}
		if !allowed[path] {
			return "this package must not use it here"
		}
		return ""
	})
}
