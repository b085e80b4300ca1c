package mqttsn

import (
	"fmt"
	"testing"

	"github.com/mqttgw/mqttgw/internal/deptest"
)

// TestImports pins what the engine may import (ARCHITECTURE.md: udpgw/mqttsn
// uses mqttsn, udpgw and session). It must not reach the upstream side (proxy,
// paho), the config or the gateway: udpgw.Env (with its Broker) and Options are
// its only inputs, so it stays testable with a fake broker and usable by another
// owner. zap and metrics come in through udpgw.Env.
func TestImports(t *testing.T) {
	allowed := []string{
		"github.com/mqttgw/mqttgw/mqttsn",  // the codec
		"github.com/mqttgw/mqttgw/udpgw",   // Listener, Broker, Message
		"github.com/mqttgw/mqttgw/session", // the device registry: addresses, liveness, wills
		"github.com/mqttgw/mqttgw/metrics", // counters passed in udpgw.Env
		"go.uber.org/zap",                  // the logger passed in udpgw.Env
	}
	deptest.Each(t, func(_, path string) string {
		if !deptest.Std(path) && !deptest.Allowed(path, allowed) {
			return fmt.Sprintf("the engine may import only %v", allowed)
		}
		return ""
	})
}
