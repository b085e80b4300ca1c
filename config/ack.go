package config

import "time"

// Ack answers a rule's datagram once the broker has its publishes ([rule.ack]):
// exactly one of Template and Hex. mapping compiles the templates; this package
// defaults and checks Window.
type Ack struct {
	// Template is rendered with the rule's names: its fields and regex groups,
	// {device}, {listener}, {gateway}.
	Template string `toml:"template"`
	Hex      string `toml:"hex"`
	// Dedup, a template like Template, makes a retry whose key was seen within
	// Window acknowledged again but published once.
	Dedup  string   `toml:"dedup"`
	Window Duration `toml:"window"`
}

const defaultAckWindow = 5 * time.Minute

// applyDefaults fills window when dedup is set and window left out; a window
// written as 0 stays, for validate to refuse.
func (a *Ack) applyDefaults(c *Config, key string) {
	if a.Dedup != "" && !c.isSet(key+".window") {
		setDuration(&a.Window, defaultAckWindow)
	}
}

func (a *Ack) validate(c *Config, key string, add, warn func(key, format string, args ...any)) {
	switch {
	case a.Dedup == "" && c.isSet(key+".window"):
		warn(key+".window", "ignored: window applies with dedup")
	case a.Dedup != "" && a.Window <= 0:
		add(key+".window", "%v: want more than 0 (leave window out for %v)", a.Window.D(), defaultAckWindow)
	}
}
