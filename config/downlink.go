package config

import "time"

// Downlink turns MQTT messages into datagrams for plain-UDP devices ([[downlink]]).
// mapping compiles the filter, the payload and the tests; this package checks and
// defaults the plain values (ttl, max_queued).
type Downlink struct {
	Name string `toml:"name"`
	// Listener is the udp listener whose socket sends the datagrams.
	Listener string `toml:"listener"`
	// Filter is an MQTT topic filter whose {name} levels capture one whole level
	// each; {device} names the device the datagram goes to. Literal + and # are
	// wildcards, as in any filter. The listener's mountpoint is prefixed.
	Filter string `toml:"filter"`
	// Payload is "raw" (default: the MQTT payload as is), "template" (Template
	// rendered) or "fields" (Fields packed from a JSON object).
	Payload  string          `toml:"payload"`
	Template string          `toml:"template"`
	Fields   []DownlinkField `toml:"fields"`
	// Deliver is "now" (default: at once, to the device's last address) or
	// "on_uplink" (queued, sent right after the device's next datagram).
	Deliver string `toml:"deliver"`
	// TTL drops a queued downlink older than it; MaxQueued bounds the queue per
	// device (the oldest is dropped). Both apply to deliver = "on_uplink".
	TTL       Duration       `toml:"ttl"`
	MaxQueued int            `toml:"max_queued"`
	Tests     []DownlinkTest `toml:"tests"`
}

// DownlinkField is one binary number of a "fields" payload.
type DownlinkField struct {
	// Value is an RFC 6901 JSON pointer into the MQTT payload, e.g. "/open".
	Value  string `toml:"value"`
	Type   string `toml:"type"`   // int8..int64, uint8..uint64, float32, float64
	Endian string `toml:"endian"` // big (default) or little
}

// DownlinkTest is an inline test run by `mqttgw check`: the message must encode to
// the datagram Hex (or Text), for the device Device when set.
type DownlinkTest struct {
	Message TestMessage `toml:"message"`
	Hex     string      `toml:"hex"`
	Text    string      `toml:"text"`
	Device  string      `toml:"device"`
}

// TestMessage is an MQTT message of a test. Topic is the topic as the broker has
// it, mountpoint included (as a rule test's expect).
type TestMessage struct {
	Topic   string `toml:"topic"`
	Payload string `toml:"payload"`
}

// Downlink defaults, and the bound of max_queued: a queue per device, so its bound
// multiplies by the number of devices.
const (
	defaultDownlinkTTL = 10 * time.Minute
	defaultMaxQueued   = 8
	maxMaxQueued       = 10000
)

// applyDefaults fills what the file left out; a value written as 0 stays, for
// validate to refuse.
func (d *Downlink) applyDefaults(c *Config, key string) {
	if !c.isSet(key + ".ttl") {
		setDuration(&d.TTL, defaultDownlinkTTL)
	}
	if !c.isSet(key + ".max_queued") {
		d.MaxQueued = defaultMaxQueued
	}
}

func (d *Downlink) validate(c *Config, key string, add, warn func(key, format string, args ...any)) {
	ok := map[string]bool{"ttl": true, "max_queued": true}
	if d.TTL <= 0 {
		add(key+".ttl", "%v: want more than 0 (leave ttl out for %v)", d.TTL.D(), defaultDownlinkTTL)
		ok["ttl"] = false
	}
	if d.MaxQueued < 1 || d.MaxQueued > maxMaxQueued {
		add(key+".max_queued", "%d is out of range 1..%d", d.MaxQueued, maxMaxQueued)
		ok["max_queued"] = false
	}
	// Queue settings of a downlink that never queues are a misunderstanding. A
	// deliver other than "now" and "on_uplink" is mapping's error to report.
	if d.Deliver != "" && d.Deliver != "now" {
		return
	}
	for _, k := range []string{"ttl", "max_queued"} {
		if ok[k] && c.isSet(key+"."+k) {
			warn(key+"."+k, "ignored: deliver is \"now\"; %s applies to deliver = \"on_uplink\"", k)
		}
	}
}
