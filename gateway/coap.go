package gateway

import (
	"fmt"

	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/udpgw"
)

// newCoAPListener builds the CoAP (or CoAP over DTLS) listener for lc.
func (g *Gateway) newCoAPListener(lc config.Listener) (udpgw.Listener, error) {
	return nil, fmt.Errorf("gateway: listener %q: the %s listener is not built yet", lc.Name, lc.Type)
}
