package mqttsn

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mqttgw/mqttgw/internal/deptest"
)

// TestImports pins what the engine may import (ARCHITECTURE.md: udpgw/mqttsn
// uses mqttsn, udpgw and session; and store, whose State keeps persistent
// sessions across restarts). It must not reach the upstream side (proxy,
// paho), the config or the gateway: udpgw.Env (with its Broker) and Options are
// its only inputs, so it stays testable with a fake broker and usable by another
// owner. zap and metrics come in through udpgw.Env. pion/dtls serves mqttsns
// listeners, in dtls.go alone.
func TestImports(t *testing.T) {
	allowed := []string{
		"github.com/mqttgw/mqttgw/mqttsn",  // the codec
		"github.com/mqttgw/mqttgw/udpgw",   // Listener, Broker, Message
		"github.com/mqttgw/mqttgw/session", // the device registry: addresses, liveness, wills
		"github.com/mqttgw/mqttgw/store",   // the durable State its persistent sessions are kept in (Options.State), and the record codec
		"github.com/mqttgw/mqttgw/metrics", // counters passed in udpgw.Env
		"go.uber.org/zap",                  // the logger passed in udpgw.Env
		"github.com/pion/dtls/v3",          // DTLS 1.2 of mqttsns listeners (dtls.go only)
		"github.com/pion/logging",          // pion's logger interface, sent to zap
	}
	deptest.Each(t, func(file, path string) string {
		if !deptest.Std(path) && !deptest.Allowed(path, allowed) {
			return fmt.Sprintf("the engine may import only %v", allowed)
		}
		if strings.HasPrefix(path, "github.com/pion/") && !strings.HasPrefix(file, "dtls") {
			return "pion stays in dtls.go: the engine and its plain-UDP path know only the transport interface"
		}
		return ""
	})
}
