package gateway

import (
	"github.com/mqttgw/mqttgw/store/natsstore"
	"github.com/mqttgw/mqttgw/udpgw/mqttsn"
)

// fleetStore is the fleet's JetStream store with [cluster], else nil: its
// owner keys, live keys, fenced writes and drains (store/natsstore).
func (g *Gateway) fleetStore() *natsstore.Store {
	st, _ := g.store.(*natsstore.Store)
	return st
}

// owners is the fleet's device ownership for the MQTT-SN engines, nil
// without [cluster] (one machine: every client is this instance's). An
// untyped nil, not a nil *natsstore.Store, which the engine would take
// for a fleet.
func (g *Gateway) owners() mqttsn.Owners {
	if st := g.fleetStore(); st != nil {
		return st
	}
	return nil
}

// sessionOwners is owners for the synthetic sessions of CoAP and plain-UDP
// devices (fleetsessions.go).
func (g *Gateway) sessionOwners() sessionOwners {
	if st := g.fleetStore(); st != nil {
		return st
	}
	return nil
}
