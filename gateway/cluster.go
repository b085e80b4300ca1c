package gateway

import (
	"context"
	"strings"

	"github.com/mqttgw/mqttgw/session"
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
		return fencedOwners{st, g.fences}
	}
	return nil
}

// sessionOwners is owners for the synthetic sessions of CoAP and plain-UDP
// devices (fleetsessions.go).
func (g *Gateway) sessionOwners() sessionOwners {
	if st := g.fleetStore(); st != nil {
		return fencedOwners{st, g.fences}
	}
	return nil
}

// fencedOwners is the fleet's store as the engines' Owners: a device taken
// from another instance, or adopted from a dead one, is fenced until that
// instance's queue has let go of what the device left there (fence.go).
type fencedOwners struct {
	*natsstore.Store
	f *fences
}

func (o fencedOwners) Take(ctx context.Context, key string) (rev uint64, prev string, err error) {
	rev, prev, err = o.Store.Take(ctx, key)
	o.f.moved(sessionKeyOf(key), prev, err)
	return rev, prev, err
}

func (o fencedOwners) TakeFrom(ctx context.Context, key string, rev uint64) (newRev uint64, ok bool, err error) {
	// The instance it is taken from, read first: TakeFrom succeeds only if
	// the owner key is still at rev, so an owner read at rev is the one.
	prev, prevRev, perr := o.Owner(key)
	newRev, ok, err = o.Store.TakeFrom(ctx, key, rev)
	if ok && perr == nil && prevRev == rev {
		o.f.moved(sessionKeyOf(key), prev, nil)
	}
	return newRev, ok, err
}

// sessionKeyOf is the session key of a device's record key (recordKey).
func sessionKeyOf(recordKey string) session.Key {
	listener, device, _ := strings.Cut(recordKey, "\x00")
	return session.Key{Listener: listener, Device: device}
}
