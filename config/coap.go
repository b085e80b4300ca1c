package config

import "time"

// CoAP listener types (RFC 7252): plain UDP, and DTLS 1.2 (§9).
const (
	ListenerCoAP  = "coap"
	ListenerCoAPS = "coaps"
)

// CoAP configures a listener of type "coap" or "coaps" ([listener.coap]).
type CoAP struct {
	// Notify is the message type of Observe notifications: "non" (default) or "con".
	Notify string `toml:"notify"`
	// MaxObserversPerTopic and MaxObserversPerDevice bound observations.
	MaxObserversPerTopic  int `toml:"max_observers_per_topic"`
	MaxObserversPerDevice int `toml:"max_observers_per_device"`
	// MaxPayload is the largest request or response body, block-wise included
	// (RFC 7959); larger requests get 4.13.
	MaxPayload int `toml:"max_payload"`
	// Keepalive is how long a device's session and observations live without
	// traffic; the session expires after 1.5 times it.
	Keepalive Duration `toml:"keepalive"`
	// RetryAfter is the Max-Age sent with 5.03 when the broker is unreachable.
	RetryAfter Duration `toml:"retry_after"`
	// CertFile and KeyFile give coaps a certificate besides PSK.
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
}

func (c *CoAP) applyDefaults() {
	if c.Notify == "" {
		c.Notify = "non"
	}
	if c.MaxObserversPerTopic == 0 {
		c.MaxObserversPerTopic = 1000
	}
	if c.MaxObserversPerDevice == 0 {
		c.MaxObserversPerDevice = 16
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = 64 << 10
	}
	setDuration(&c.Keepalive, 24*time.Hour)
	setDuration(&c.RetryAfter, 5*time.Second)
}

func (c *CoAP) validate(key string, add func(key, format string, args ...any)) {
	if c.Notify != "non" && c.Notify != "con" {
		add(key+".notify", "unknown notification type %q: want \"non\" or \"con\"", c.Notify)
	}
	if c.MaxObserversPerTopic < 1 {
		add(key+".max_observers_per_topic", "%d: want at least 1", c.MaxObserversPerTopic)
	}
	if c.MaxObserversPerDevice < 1 {
		add(key+".max_observers_per_device", "%d: want at least 1", c.MaxObserversPerDevice)
	}
	if c.MaxPayload < 1 || c.MaxPayload > 16<<20 {
		add(key+".max_payload", "%d is out of range 1..16777216", c.MaxPayload)
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		add(key, "cert_file and key_file go together: set both or neither")
	}
}
