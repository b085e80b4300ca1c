package config

import "fmt"

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
	// Username and Password are used for a device's broker connection when its
	// protocol carries no credentials of its own (MQTT-SN over plain UDP); an
	// mqttsns device's PSK identity is its user name.
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
		add(key("mode"), "\"transparent\" works on MQTT-SN listeners (type mqttsn or mqttsns), not on type %q", l.Type)
	}
	if l.Transparent.MaxConnections < 0 {
		add(key("transparent.max_connections"), "%d: want a positive number (0: the default, %d)", l.Transparent.MaxConnections, DefaultMaxConnections)
	}
	if l.Transparent.Username == "" && l.Transparent.Password != "" {
		add(key("transparent.username"), "missing: transparent.password is set")
	}
}

// transparentKinds are the listener types with device connections to relay.
var transparentKinds = map[string]bool{ListenerMQTTSN: true, ListenerMQTTSNS: true}
