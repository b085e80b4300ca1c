package coap

import (
	"fmt"
	"testing"

	"github.com/mqttgw/mqttgw/internal/deptest"
)

// TestImports pins what the engine may import (ARCHITECTURE.md: udpgw/coap
// uses udpgw and session, and is the only importer of go-coap; and store,
// whose State keeps observations across restarts). It must not
// reach the upstream side (proxy, paho), the config, the gateway or auth:
// udpgw.Env and Options are its only inputs — the broker behind the Broker
// interface, credentials as a PSK lookup and a password check — so it stays
// testable with a fake broker.
func TestImports(t *testing.T) {
	allowed := []string{
		"github.com/mqttgw/mqttgw/udpgw",   // Env, Listener, Broker, Message
		"github.com/mqttgw/mqttgw/session", // the device registry; SessionEnded
		"github.com/mqttgw/mqttgw/metrics", // the registry Env carries
		"github.com/mqttgw/mqttgw/store",   // the durable State observations are kept in (Options.State), and the record codec
		"github.com/plgd-dev/go-coap/v3/",  // the CoAP stack
		"github.com/pion/dtls/v3",          // DTLS options and the PSK identity
		"github.com/pion/logging",          // pion's logs, sent to zap
		"go.uber.org/zap",                  // the logger Env carries
	}
	deptest.Each(t, func(_, path string) string {
		if !deptest.Std(path) && !deptest.Allowed(path, allowed) {
			return fmt.Sprintf("the engine may import only %v", allowed)
		}
		return ""
	})
}
