package config

import "strings"

// validate checks the basic-auth pair: both or neither, and the password a
// hash as in a password file (auth checks the hash itself when the gateway
// starts; here only its shape, to name the key and line).
func (m Metrics) validate(add func(key, format string, args ...any)) {
	switch {
	case m.Username == "" && m.Password == "":
	case m.Username == "":
		add("metrics.username", "missing: metrics.password is set")
	case m.Password == "":
		add("metrics.password", "missing: metrics.username is set")
	case strings.ContainsAny(m.Username, ":\x00"):
		add("metrics.username", "%q must not contain ':'", m.Username)
	case !strings.HasPrefix(m.Password, "$7$") && !strings.HasPrefix(m.Password, "$6$"):
		add("metrics.password", "want a password hash ($7$... made by `mqttgw passwd -b FILE USER PASSWORD` or mosquitto_passwd), not the password itself")
	}
}
