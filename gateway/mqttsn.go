package gateway

import (
	"fmt"

	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/udpgw"
	"github.com/mqttgw/mqttgw/udpgw/mqttsn"
)

// newMQTTSNListener builds the MQTT-SN engine for lc from g.env(lc) and its own
// options. newListener declares it to the registry as its sessions' owner
// (session.Owner) and to the driver (udpgw.Ticker).
func (g *Gateway) newMQTTSNListener(lc config.Listener) (udpgw.Listener, error) {
	o := lc.MQTTSN
	predefined := make([]mqttsn.Predefined, 0, len(g.cfg.MQTTSN.Predefined))
	for _, p := range g.cfg.MQTTSN.Predefined {
		predefined = append(predefined, mqttsn.Predefined{ID: uint16(p.ID), Topic: p.Topic, ClientID: p.ClientID})
	}
	var known func(string) bool
	if o.RequireKnownClient {
		known = g.knownUser
	}
	e, err := mqttsn.New(g.env(lc), mqttsn.Options{
		Bind:              lc.Bind,
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
		AllowedSources:    o.SourcePrefixes(),
		KnownClient:       known,
		Predefined:        predefined,
		DrainTimeout:      g.cfg.Gateway.DrainTimeout.D(),
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: listener %q: %w", lc.Name, err)
	}
	return e, nil
}
