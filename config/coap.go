package config

import "time"

// CoAP configures a listener of type "coap" or "coaps" ([listener.coap]).
type CoAP struct {
	// Notify is the message type of Observe notifications: "non" (default) or "con".
	// With "non" a Confirmable notification is still sent at least once every 24 h
	// (RFC 7641 §4.5).
	Notify string `toml:"notify"`
	// MaxObserversPerTopic and MaxObserversPerDevice bound observations; a
	// registration beyond them is answered as a plain GET (RFC 7641 §4.1).
	MaxObserversPerTopic  int `toml:"max_observers_per_topic"`
	MaxObserversPerDevice int `toml:"max_observers_per_device"`
	// ObserverQueue bounds the notifications waiting for one observer; when full
	// the oldest is dropped and counted.
	ObserverQueue int `toml:"observer_queue"`
	// AllowWildcards lets an observation's path be an MQTT filter with '+' and '#'
	// levels; by default such a path is refused with 4.00.
	AllowWildcards bool `toml:"allow_wildcards"`
	// MaxPayload is the largest request or response body, block-wise included
	// (RFC 7959); larger requests get 4.13.
	MaxPayload int `toml:"max_payload"`
	// Keepalive is how long a device's session and observations live without
	// traffic; the session expires after 1.5 times it.
	Keepalive Duration `toml:"keepalive"`
	// RetryAfter is the Max-Age sent with 5.03 when the broker is unreachable.
	RetryAfter Duration `toml:"retry_after"`
	// HandshakeTimeout bounds one DTLS handshake (coaps).
	HandshakeTimeout Duration `toml:"handshake_timeout"`
	// CertFile and KeyFile give coaps a certificate besides PSK.
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// MaxUnproven bounds the source addresses of a plain "coap" listener that
	// have not proven they receive (RFC 9175 Echo, or the Reset to a CoAP
	// ping), the least recently heard forgotten first; UnprovenRate is the
	// requests per second one of them may make (bursts of twice that). 0 takes
	// the engine's defaults: 10000 sources, 20 requests/s.
	MaxUnproven  int     `toml:"max_unproven"`
	UnprovenRate float64 `toml:"unproven_rate"`
}

// maxCoAPKeepalive bounds keepalive: a year is beyond any sleepy sensor's period,
// so a larger value is a typo.
const maxCoAPKeepalive = 365 * 24 * time.Hour

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
	if c.ObserverQueue == 0 {
		c.ObserverQueue = 16
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = 64 << 10
	}
	setDuration(&c.Keepalive, 24*time.Hour)
	setDuration(&c.RetryAfter, 5*time.Second)
	setDuration(&c.HandshakeTimeout, 10*time.Second)
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
	if c.ObserverQueue < 1 || c.ObserverQueue > 10000 {
		add(key+".observer_queue", "%d is out of range 1..10000", c.ObserverQueue)
	}
	if c.MaxPayload < 1 || c.MaxPayload > 16<<20 {
		add(key+".max_payload", "%d is out of range 1..16777216", c.MaxPayload)
	}
	if c.Keepalive.D() < time.Second {
		add(key+".keepalive", "%v: want at least 1s", c.Keepalive.D())
	}
	if c.Keepalive.D() > maxCoAPKeepalive {
		add(key+".keepalive", "%v: want at most %v", c.Keepalive.D(), maxCoAPKeepalive)
	}
	// Max-Age is in whole seconds (RFC 7252 §5.10.5).
	if c.RetryAfter.D() < time.Second || c.RetryAfter.D() > 24*time.Hour {
		add(key+".retry_after", "%v: want 1s to 24h (Max-Age counts whole seconds)", c.RetryAfter.D())
	}
	if c.HandshakeTimeout.D() < 100*time.Millisecond || c.HandshakeTimeout.D() > 5*time.Minute {
		add(key+".handshake_timeout", "%v: want 100ms to 5m", c.HandshakeTimeout.D())
	}
	if c.MaxUnproven < 0 || c.MaxUnproven > 10_000_000 {
		add(key+".max_unproven", "%d is out of range 0..10000000 (0: the default, 10000)", c.MaxUnproven)
	}
	if c.UnprovenRate < 0 || c.UnprovenRate > 1e6 {
		add(key+".unproven_rate", "%v is out of range 0..1000000 requests per second (0: the default, 20)", c.UnprovenRate)
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		add(key, "cert_file and key_file go together: set both or neither")
	}
}
