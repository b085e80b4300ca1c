package gateway

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/udpgw"
	"github.com/mqttgw/mqttgw/udpgw/mqttsn"
)

// newMQTTSNListener builds the MQTT-SN engine for lc and registers its callback
// for sessions the driver expires.
func (g *Gateway) newMQTTSNListener(lc config.Listener) (udpgw.Listener, error) {
	conn, err := udpgw.ListenUDP(lc.Bind)
	if err != nil {
		return nil, fmt.Errorf("gateway: listener %q: %w", lc.Name, err)
	}
	o := lc.MQTTSN
	predefined := make([]mqttsn.Predefined, 0, len(g.cfg.MQTTSN.Predefined))
	for _, p := range g.cfg.MQTTSN.Predefined {
		predefined = append(predefined, mqttsn.Predefined{ID: uint16(p.ID), Topic: p.Topic, ClientID: p.ClientID})
	}
	e, err := mqttsn.New(mqttsn.Options{
		Name:              lc.Name,
		Conn:              conn,
		Broker:            g.broker(lc),
		Sessions:          g.sessions,
		Logger:            g.log.Named("mqttsn").With(zap.String("listener", lc.Name)),
		Metrics:           g.metrics,
		GatewayID:         uint8(o.GatewayID),
		AdvertiseInterval: o.AdvertiseInterval.D(),
		AdvertiseAddr:     o.AdvertiseAddr,
		RetryInterval:     o.RetryInterval.D(),
		MaxRetries:        o.MaxRetries,
		MaxClients:        o.MaxClients,
		MaxTopics:         o.MaxTopics,
		MaxBuffered:       o.MaxBuffered,
		MaxKeepalive:      o.MaxKeepalive.D(),
		MaxPacket:         lc.MaxPacket,
		SessionExpiry:     o.SessionExpiry.D(),
		Predefined:        predefined,
		DrainTimeout:      g.cfg.Gateway.DrainTimeout.D(),
	})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("gateway: listener %q: %w", lc.Name, err)
	}
	g.onLost[lc.Name] = e.Lost
	return e, nil
}
