package udpgw

import (
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/metrics"
	"github.com/mqttgw/mqttgw/session"
)

// Env is what every engine is built with, whatever its protocol: the gateway
// makes one per listener and passes it to the engine's New with the engine's own
// options. Engines keep no other copy of a device's address or will than the
// registry's, and reach the broker only through Broker.
type Env struct {
	Name     string            // the listener's name: metrics label, session key
	Logger   *zap.Logger       // narrowed to the listener; nil: no logs
	Metrics  *metrics.Registry // nil: counted in a registry nobody reads
	Now      func() time.Time  // the clock; nil: time.Now. Tests drive time through it
	Broker   Broker            // the listener's one uplink path into the gateway
	Sessions *session.Registry // the device registry; nil: a private one (tests)
}

// WithDefaults fills the optional fields.
func (e Env) WithDefaults() Env {
	if e.Logger == nil {
		e.Logger = zap.NewNop()
	}
	if e.Metrics == nil {
		e.Metrics = metrics.New()
	}
	if e.Now == nil {
		e.Now = time.Now
	}
	if e.Sessions == nil {
		e.Sessions = session.New(session.Options{})
	}
	return e
}

// Ticker is an engine with timed work of its own (retransmissions, ADVERTISE,
// stalled exchanges). The gateway's one driver calls Tick at least every
// TickEvery, with the time as an argument; the engine starts no timer of its own.
type Ticker interface {
	Tick(now time.Time)
	TickEvery() time.Duration
}
