package gateway

import (
	"fmt"

	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/udpgw"
)

// newMQTTSNListener builds the MQTT-SN engine for lc.
func (g *Gateway) newMQTTSNListener(lc config.Listener) (udpgw.Listener, error) {
	return nil, fmt.Errorf("gateway: listener %q: the mqttsn listener is not built yet", lc.Name)
}
