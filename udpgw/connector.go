package udpgw

import (
	"context"
	"time"
)

// Connection is what a device said about itself when it connected: its
// identity and credentials at the broker, clean-session wish and will (topic
// in the device's topic space, as in Message).
type Connection struct {
	Username, Password string
	CleanSession       bool
	Keepalive          time.Duration
	Will               *Message
}

// Connector is implemented by the Broker of a listener in transparent mode,
// which relays each connected device over its own MQTT connection made with the
// device's identity. An engine that has connections (MQTT-SN) calls Connect when
// a device connects, before it acknowledges, and Disconnect when it disconnects
// or its session ends; between the two, the device's publishes and
// subscriptions go over that connection. Errors of Connect wrap ErrUnavailable
// (broker away or max_connections reached: the protocol's congestion answer) or
// ErrForbidden (the broker refused the device's identity).
type Connector interface {
	Connect(ctx context.Context, device string, c Connection) error
	// Disconnect ends device's connection: graceful (the device said
	// DISCONNECT) makes the broker discard the will; otherwise (the session was
	// lost or taken over) the broker publishes it.
	Disconnect(device string, graceful bool)
}
