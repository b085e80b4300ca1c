package config

import (
	"fmt"
	"strings"
)

// Listener modes.
const (
	ModeAggregate   = "aggregate"
	ModeTransparent = "transparent"
)

// DefaultMaxConnections bounds a transparent listener's broker connections.
const DefaultMaxConnections = 10000

// Transparent configures a listener in transparent mode
// ([listener.transparent]).
type Transparent struct {
	// Username and Password are used for a device's broker connection when it
	// gave no credentials of its own (MQTT-SN over plain UDP; a CoAP device
	// without u and p in its query, anonymous ones included); the PSK identity of
	// an mqttsns or coaps device is its user name, with Password.
	Username string `toml:"username"`
	Password string `toml:"password"`
	// MaxConnections bounds the broker connections; a device connecting beyond
	// it gets the protocol's congestion answer. Default 10000.
	MaxConnections int `toml:"max_connections"`
}

// IsTransparent reports whether the listener relays each device over its own
// broker connection.
func (l Listener) IsTransparent() bool { return l.Mode == ModeTransparent }

// validateMode checks mode and its settings for listener i.
func (l Listener) validateMode(i int, add func(key, format string, args ...any), warn func(key, format string, args ...any)) {
	key := func(k string) string { return fmt.Sprintf("listener[%d].%s", i, k) }
	switch l.Mode {
	case "", ModeAggregate:
		if l.ClientIDPrefix != "" {
			warn(key("client_id_prefix"), "ignored: mode is not \"transparent\"")
		}
		if l.Transparent != (Transparent{}) {
			warn(key("transparent"), "ignored: mode is not \"transparent\"")
		}
		return
	case ModeTransparent:
	default:
		add(key("mode"), "unknown mode %q: want \"aggregate\" or \"transparent\"", l.Mode)
		return
	}
	if !transparentKinds[l.Type] {
		add(key("mode"), "\"transparent\" works on listeners of type %s, not on type %q", transparentTypes(), l.Type)
	}
	if l.Transparent.MaxConnections < 0 {
		add(key("transparent.max_connections"), "%d: want a positive number (0: the default, %d)", l.Transparent.MaxConnections, DefaultMaxConnections)
	}
	if l.Transparent.Username == "" && l.Transparent.Password != "" {
		add(key("transparent.username"), "missing: transparent.password is set")
	}
}

// transparentKinds are the listener types whose devices have sessions to relay
// each over a broker connection of its own: MQTT-SN clients from CONNECT to
// DISCONNECT, CoAP devices from their first request until their session ends.
var transparentKinds = map[string]bool{ListenerMQTTSN: true, ListenerMQTTSNS: true, ListenerCoAP: true, ListenerCoAPS: true}

// transparentTypes names transparentKinds in the order of listenerKinds:
// "mqttsn, mqttsns, coap or coaps".
func transparentTypes() string {
	var ts []string
	for _, k := range listenerKinds {
		if transparentKinds[k.Type] {
			ts = append(ts, k.Type)
		}
	}
	if len(ts) < 2 {
		return strings.Join(ts, "")
	}
	return strings.Join(ts[:len(ts)-1], ", ") + " or " + ts[len(ts)-1]
}
