// Package config turns the mqttgw TOML file into plain Go structs, fills defaults and
// validates them. Every problem is reported with its key path and line, all at once:
// Load never stops at the first mistake.
//
// It starts no goroutines. Other packages that compile parts of the config (mapping,
// gateway) report their own problems as Problem values with a key path; Config.Pos
// turns a key path into a line so those problems read like the decoder's.
package config

import "time"

// Config is the whole file.
type Config struct {
	Gateway   Gateway      `toml:"gateway"`
	Log       Log          `toml:"log"`
	Upstream  Upstream     `toml:"upstream"`
	Metrics   Metrics      `toml:"metrics"`
	Auth      Auth         `toml:"auth"`
	MQTTSN    MQTTSNGlobal `toml:"mqttsn"`
	Listeners []Listener   `toml:"listener"`
	Rules     []Rule       `toml:"rule"`
	Classes   []Class      `toml:"class"`
	Downlinks []Downlink   `toml:"downlink"`
	Store     Store        `toml:"store"`
	Cluster   Cluster      `toml:"cluster"`

	// File is the path the config was read from ("" for text loaded from memory).
	File string `toml:"-"`
	// positions maps a key path (as in Problem.Key) to its 1-based line.
	positions map[string]int
}

// Gateway identifies this gateway instance.
type Gateway struct {
	ID string `toml:"id"`
	// StatusTopic gets a retained "online" on connect and is the MQTT last will
	// (retained "offline"). Default: mqttgw/{id}/status.
	StatusTopic string `toml:"status_topic"`
	// DrainTimeout bounds how long shutdown waits for in-flight QoS >= 1 publishes.
	DrainTimeout Duration `toml:"drain_timeout"`
}

// Log configures the zap logger.
type Log struct {
	Level  string `toml:"level"`  // debug, info, warn, error
	Format string `toml:"format"` // console or json
}

// Upstream is the broker side.
type Upstream struct {
	// URL is tcp://, ssl://, ws://, wss:// or "embedded".
	URL       string   `toml:"url"`
	ClientID  string   `toml:"client_id"`
	Username  string   `toml:"username"`
	Password  string   `toml:"password"`
	Keepalive Duration `toml:"keepalive"`
	// ConnectTimeout bounds one connection attempt; PublishTimeout bounds the wait for
	// the broker's acknowledgement of a QoS >= 1 publish.
	ConnectTimeout Duration `toml:"connect_timeout"`
	PublishTimeout Duration `toml:"publish_timeout"`
	// ReconnectMin and ReconnectMax bound the exponential reconnect backoff.
	ReconnectMin Duration `toml:"reconnect_min"`
	ReconnectMax Duration `toml:"reconnect_max"`
	// QueueMessages and QueueBytes bound the store-and-forward queue of
	// publishes nobody waits on (plain datagrams, wills, births); when either is
	// reached the oldest are dropped and counted.
	QueueMessages int `toml:"queue_messages"`
	QueueBytes    int `toml:"queue_bytes"`
	// MaxInflightQoS2 bounds the QoS 2 publishes in flight on a broker
	// connection: at most the broker's own limit (Mosquitto
	// max_inflight_messages, 20 by default), which drops the excess while
	// acknowledging it to an MQTT 3.1.1 client.
	MaxInflightQoS2 int      `toml:"max_inflight_qos2"`
	TLS             TLS      `toml:"tls"`
	Embedded        Embedded `toml:"embedded"`
}

// TLS configures the client side of a TLS connection to the broker.
type TLS struct {
	CAFile             string `toml:"ca_file"`
	CertFile           string `toml:"cert_file"`
	KeyFile            string `toml:"key_file"`
	ServerName         string `toml:"server_name"`
	InsecureSkipVerify bool   `toml:"insecure_skip_verify"`
}

// Embedded configures the in-process broker used when Upstream.URL is "embedded".
type Embedded struct {
	Listen string `toml:"listen"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Listen string `toml:"listen"` // "" = off
	// PProf serves Go's profiler at /debug/pprof/ on the metrics listener; off by
	// default, since a profile shows the process's internals.
	PProf bool `toml:"pprof"`
	// Username and Password, when set, protect every page of the metrics
	// listener (the status page, /devices, /metrics, pprof) with HTTP basic
	// auth. Password is a hash in the password file's format, made by
	// `mqttgw passwd` or mosquitto_passwd ($7$... or $6$...), never the
	// password itself.
	Username string `toml:"username"`
	Password string `toml:"password"`
}

// Listener is one device-side socket.
type Listener struct {
	Name string `toml:"name"`
	Type string `toml:"type"` // udp (plain datagrams), mqttsn, coap, coaps
	Bind string `toml:"bind"`
	// Mountpoint is prefixed to every topic published from this listener.
	Mountpoint string `toml:"mountpoint"`
	// DeadLetterTopic receives datagrams that match no rule or fail to decode; "" = off.
	DeadLetterTopic string `toml:"dead_letter_topic"`
	// MaxPacket is the largest datagram accepted; larger ones are dropped and counted.
	MaxPacket int `toml:"max_packet"`
	// ReadBuffer is the socket's kernel receive buffer (SO_RCVBUF) in bytes, so
	// that a burst waits in the kernel rather than being dropped there; 0 asks
	// for 4 MiB. Linux caps it at net.core.rmem_max (the gateway logs what it
	// was granted). The kernel's drops are counted in a metric.
	ReadBuffer int `toml:"read_buffer"`
	// MQTTSN and CoAP hold the options of those listener types.
	MQTTSN MQTTSN `toml:"mqttsn"`
	CoAP   CoAP   `toml:"coap"`
	// Mode is how devices reach the broker: "aggregate" (default) over the
	// gateway's own connection, or "transparent": one MQTT connection per
	// connected device with its own identity ([listener.transparent]).
	Mode string `toml:"mode"`
	// ClientIDPrefix is prefixed to a device's id to make its broker client id
	// in transparent mode.
	ClientIDPrefix string      `toml:"client_id_prefix"`
	Transparent    Transparent `toml:"transparent"`
}

// Rule maps one kind of uplink datagram onto MQTT publishes. The first rule whose
// Match accepts a datagram wins.
type Rule struct {
	Name     string           `toml:"name"`
	Listener string           `toml:"listener"`
	Match    Match            `toml:"match"`
	Device   Extract          `toml:"device"`
	Fields   map[string]Field `toml:"fields"`
	Publish  []Publish        `toml:"publish"`
	// Ack, when set, answers the device once the broker has the rule's publishes
	// ([rule.ack]).
	Ack   *Ack       `toml:"ack"`
	Tests []RuleTest `toml:"tests"`
}

// Match selects datagrams. All set conditions must hold.
//
// On mqttsn and coap listeners a rule is a topic rule instead: Topic alone selects
// the device's topic (MQTT-SN topic name, CoAP path) and the rule's one publish
// rewrites it; payload, QoS and retain stay the device's.
type Match struct {
	// Topic is a topic pattern for topic rules: literal levels, {name} capturing one
	// whole level, and a final {name...} capturing the rest (one or more levels).
	Topic      string `toml:"topic"`
	HexPrefix  string `toml:"hex_prefix"`
	TextPrefix string `toml:"text_prefix"`
	// Regex is matched against the whole payload as text; its named groups become
	// captures usable in device, fields and templates.
	Regex  string `toml:"regex"`
	MinLen int    `toml:"min_len"`
	MaxLen int    `toml:"max_len"`
	JSON   bool   `toml:"json"` // the payload must be a JSON object
}

// Extract says where one value comes from. Exactly one source is set.
type Extract struct {
	JSON   string `toml:"json"`   // RFC 6901 JSON pointer, e.g. "/id"
	Group  string `toml:"group"`  // named group of match.regex
	Offset *int   `toml:"offset"` // byte slice: offset and length
	Length int    `toml:"length"`
	// As renders a byte slice: "hex" (default) or "ascii".
	As string `toml:"as"`
	// Source is "addr" (ip:port) or "ip" of the datagram's sender.
	Source string `toml:"source"`
}

// Field is one extracted value. JSON takes the value as it is; Group takes the
// captured text, parsed as a number when Type is a numeric type or scale/add are
// set; Offset with Type decodes a binary number or a byte slice.
type Field struct {
	JSON   string `toml:"json"`
	Group  string `toml:"group"`
	Offset *int   `toml:"offset"`
	// Type is int8..int64, uint8..uint64, float32, float64 (binary) or, with Length,
	// "hex" / "ascii" for a byte slice.
	Type   string  `toml:"type"`
	Length int     `toml:"length"`
	Endian string  `toml:"endian"` // big (default) or little
	Scale  float64 `toml:"scale"`  // value*scale + add; scale 0 means 1
	Add    float64 `toml:"add"`
}

// Publish is one MQTT publish produced by a rule.
type Publish struct {
	// Topic is a template: {device}, {listener}, {gateway} and field or capture names.
	Topic string `toml:"topic"`
	// Payload is "json" (all fields as a JSON object, default), "raw" (the datagram as
	// received) or "template" (Template rendered).
	Payload  string `toml:"payload"`
	Template string `toml:"template"`
	QoS      QoS    `toml:"qos"`
	Retain   bool   `toml:"retain"`
}

// RuleTest is an inline test run by `mqttgw check`: the datagram (hex or text) must
// produce exactly the expected topic → payload publishes.
type RuleTest struct {
	Hex    string            `toml:"hex"`
	Text   string            `toml:"text"`
	From   string            `toml:"from"` // sender address, default 127.0.0.1:40000
	Expect map[string]string `toml:"expect"`
	// NoMatch expects this rule not to take the datagram: no rule, or another one,
	// takes it.
	NoMatch bool `toml:"no_match"`
	// Ack (as text) or AckHex is the ack the rule must render for the datagram;
	// unset, the ack is not checked.
	Ack    string `toml:"ack"`
	AckHex string `toml:"ack_hex"`
}

// Duration is a time.Duration written as a Go duration string ("30s", "1m30s").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// QoS is an MQTT quality of service, 0, 1 or 2.
type QoS uint8
