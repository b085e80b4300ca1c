package gateway

import (
	"github.com/mqttgw/mqttgw/store/natsstore"
	"github.com/mqttgw/mqttgw/udpgw/mqttsn"
)

// owners is the fleet's device ownership for the MQTT-SN engines: the
// JetStream store itself with [cluster] (its owner keys, live key and fenced
// writes, store/natsstore/owner.go), nil otherwise (one machine: every
// client is this instance's).
func (g *Gateway) owners() mqttsn.Owners {
	if st, ok := g.store.(*natsstore.Store); ok {
		return st
	}
	return nil
}

// sessionOwners is the fleet's device ownership for the synthetic sessions of
// CoAP and plain-UDP devices (fleetsessions.go), nil without [cluster].
func (g *Gateway) sessionOwners() sessionOwners {
	if st, ok := g.store.(*natsstore.Store); ok {
		return st
	}
	return nil
}
