package config

import "time"

// Class gives the devices whose id matches a glob a keepalive, a will and a birth
// ([[class]]), whatever their protocol: every device has a session, and a session
// takes the first class, in file order, that fits its listener and id. mapping
// compiles the templates; this package checks the plain values.
type Class struct {
	Name string `toml:"name"`
	// Listeners the class applies to; empty: every listener.
	Listeners []string `toml:"listeners"`
	// Match is a glob on the device id in path.Match syntax (* ? [...] \), except
	// that '*' and '?' match '/' too: an id is not a path. Default "*".
	Match string `toml:"match"`
	// Keepalive replaces the listener's: after 1.5 keepalives of silence the session
	// is lost and its will published. 0: the listener's own.
	Keepalive Duration `toml:"keepalive"`
	// Will is published when the session is lost; Birth when it starts (first
	// contact, or return after it was lost).
	Will  *ClassMessage `toml:"will"`
	Birth *ClassMessage `toml:"birth"`
}

// ClassMessage is a class's will or birth. Topic and Payload are templates of
// {device}, {listener}, {gateway}, {class} and {addr} (the device's ip:port); the
// listener's mountpoint is prefixed to the topic, as for rules.
type ClassMessage struct {
	Topic   string `toml:"topic"`
	Payload string `toml:"payload"`
	QoS     QoS    `toml:"qos"`
	Retain  bool   `toml:"retain"`
}

// maxKeepalive bounds a class's keepalive: a year is beyond any sleepy device's
// period, so a larger value is a typo (and 1.5 times it must not overflow).
const maxKeepalive = 365 * 24 * time.Hour

func (c *Class) applyDefaults() {
	if c.Match == "" {
		c.Match = "*"
	}
}

func (c *Class) validate(key string, add func(key, format string, args ...any)) {
	// Negative durations are refused by the decoder.
	if d := c.Keepalive.D(); d != 0 && d < time.Second {
		add(key+".keepalive", "%v: want 0 (the listener's own) or at least 1s", d)
	}
	if d := c.Keepalive.D(); d > maxKeepalive {
		add(key+".keepalive", "%v: want at most %v", d, maxKeepalive)
	}
}
