package gateway

import (
	"fmt"

	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/udpgw"
	"github.com/mqttgw/mqttgw/udpgw/raw"
)

// newListener builds the listener of lc's type; each type's constructor lives in
// its own file (raw here, mqttsn.go, coap.go).
func (g *Gateway) newListener(lc config.Listener) (udpgw.Listener, error) {
	switch lc.Type {
	case config.ListenerUDP:
		return g.newRawListener(lc)
	case config.ListenerMQTTSN:
		return g.newMQTTSNListener(lc)
	case config.ListenerCoAP, config.ListenerCoAPS:
		return g.newCoAPListener(lc)
	}
	return nil, fmt.Errorf("gateway: listener %q: unknown type %q", lc.Name, lc.Type)
}

// broker returns the udpgw.Broker for one listener's engine.
func (g *Gateway) broker(lc config.Listener) udpgw.Broker {
	return &listenerBroker{g: g, listener: lc.Name, mountpoint: lc.Mountpoint}
}

func (g *Gateway) newRawListener(lc config.Listener) (udpgw.Listener, error) {
	conn, err := udpgw.ListenUDP(lc.Bind)
	if err != nil {
		return nil, fmt.Errorf("gateway: listener %q: %w", lc.Name, err)
	}
	tooLarge := g.metrics.Counter("mqttgw_datagrams_dropped_total", "Datagrams dropped before mapping, by reason.", "listener", lc.Name, "reason", "too_large")
	return raw.New(lc.Name, conn, lc.MaxPacket, g.rawHandler(lc), func(int) { tooLarge.Inc() }), nil
}
