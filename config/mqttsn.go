package config

import (
	"fmt"
	"net/netip"
	"time"
)

// MQTTSNGlobal is the top-level [mqttsn] table.
type MQTTSNGlobal struct {
	// Predefined topic ids, known to gateway and clients without REGISTER
	// (MQTT-SN 1.2 §3, topic id type 01).
	Predefined []Predefined `toml:"predefined"`
}

// Predefined maps one topic id to a topic name, for every client or for one.
type Predefined struct {
	ID       int    `toml:"id"`
	Topic    string `toml:"topic"`
	ClientID string `toml:"client_id"` // "" = every client
}

// MQTTSN configures a listener of type "mqttsn" or "mqttsns" ([listener.mqttsn]).
type MQTTSN struct {
	// GatewayID is the GwId in ADVERTISE and GWINFO (1..255).
	GatewayID int `toml:"gateway_id"`
	// AdvertiseInterval sends ADVERTISE periodically (T_ADV); 0 = off.
	AdvertiseInterval Duration `toml:"advertise_interval"`
	// AdvertiseAddr is the broadcast or multicast HOST:PORT ADVERTISE goes to.
	AdvertiseAddr string `toml:"advertise_addr"`
	// RetryInterval and MaxRetries are T_RETRY and N_RETRY (MQTT-SN 1.2 §6.13).
	RetryInterval Duration `toml:"retry_interval"`
	MaxRetries    int      `toml:"max_retries"`
	// MaxClients refuses CONNECTs beyond it with CONNACK congestion.
	MaxClients int `toml:"max_clients"`
	// MaxTopics bounds the topic ids registered per client (REGACK rejected beyond).
	MaxTopics int `toml:"max_topics"`
	// MaxBuffered bounds the messages buffered per sleeping client; overflow drops
	// the oldest and is counted.
	MaxBuffered int `toml:"max_buffered"`
	// MaxKeepalive caps the CONNECT Duration a client may ask for; 0 = no cap.
	// A CONNECT asking for more (or for 0, "never expire") is refused with
	// CONNACK "not supported".
	MaxKeepalive Duration `toml:"max_keepalive"`
	// SessionExpiry is how long the gateway keeps the persistent session
	// (CleanSession=0) of a client that disconnected or was lost: its
	// subscriptions, topic ids and buffered messages. Default 1h.
	SessionExpiry Duration `toml:"session_expiry"`
	// AllowedSources, when set, are the only source networks (CIDR, or one
	// address) the listener takes datagrams from; others are dropped and
	// counted.
	AllowedSources []string `toml:"allowed_sources"`
	// RequireKnownClient refuses a CONNECT whose client id is not a user of
	// auth.password_file (CONNACK "not supported").
	RequireKnownClient bool `toml:"require_known_client"`
	// HandshakeTimeout bounds one DTLS handshake (mqttsns).
	HandshakeTimeout Duration `toml:"handshake_timeout"`
	// MaxHandshakes bounds the DTLS handshakes under way at once (mqttsns);
	// a ClientHello beyond it is dropped and counted, and the client retries.
	MaxHandshakes int `toml:"max_handshakes"`
	// MaxUnproven bounds the clients of a plain "mqttsn" listener connected
	// from an address that has not proven it receives (it echoed the MsgId
	// of a gateway REGISTER or PUBLISH, or a topic id given at random), the
	// least recently heard evicted first, also when max_clients is reached;
	// UnprovenRate is the datagrams per second one such address may send
	// (bursts of twice that). 0 takes the engine's defaults: 10000 clients,
	// 20 datagrams/s.
	MaxUnproven  int     `toml:"max_unproven"`
	UnprovenRate float64 `toml:"unproven_rate"`
}

// SourcePrefixes parses AllowedSources (validated by Load).
func (m *MQTTSN) SourcePrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range m.AllowedSources {
		if p, err := parsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// parsePrefix takes a CIDR ("192.168.7.0/24") or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither a CIDR network like \"192.168.7.0/24\" nor an address", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

func (m *MQTTSN) applyDefaults() {
	if m.GatewayID == 0 {
		m.GatewayID = 1
	}
	setDuration(&m.RetryInterval, 10*time.Second)
	if m.MaxRetries == 0 {
		m.MaxRetries = 3
	}
	if m.MaxClients == 0 {
		m.MaxClients = 100000
	}
	if m.MaxTopics == 0 {
		m.MaxTopics = 1000
	}
	if m.MaxBuffered == 0 {
		m.MaxBuffered = 100
	}
	setDuration(&m.SessionExpiry, time.Hour)
	setDuration(&m.HandshakeTimeout, 10*time.Second)
	if m.MaxHandshakes == 0 {
		m.MaxHandshakes = 128
	}
}

func (m *MQTTSN) validate(key string, add func(key, format string, args ...any)) {
	if m.GatewayID < 1 || m.GatewayID > 255 {
		add(key+".gateway_id", "%d is out of range 1..255 (GwId is one octet)", m.GatewayID)
	}
	if m.AdvertiseInterval != 0 && m.AdvertiseAddr == "" {
		add(key+".advertise_addr", "missing: advertise_interval is set, so say where ADVERTISE goes (a broadcast or multicast HOST:PORT)")
	}
	if m.AdvertiseAddr != "" {
		if err := checkHostPort(m.AdvertiseAddr); err != nil {
			add(key+".advertise_addr", "%v", err)
		}
	}
	if d := m.AdvertiseInterval.D(); d != 0 && (d < time.Second || d > 65535*time.Second) {
		add(key+".advertise_interval", "%v is out of range 1s..65535s (the ADVERTISE Duration is 16 bits of seconds)", d)
	}
	if m.RetryInterval.D() < 10*time.Millisecond {
		add(key+".retry_interval", "%v is too short: want at least 10ms (the spec's T_RETRY is 10-15s)", m.RetryInterval.D())
	}
	if m.MaxRetries < 1 {
		add(key+".max_retries", "%d: want at least 1", m.MaxRetries)
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"max_clients", m.MaxClients}, {"max_topics", m.MaxTopics}, {"max_buffered", m.MaxBuffered}} {
		if f.v < 1 {
			add(key+"."+f.name, "%d: want at least 1", f.v)
		}
	}
	if m.MaxTopics > 65534 {
		add(key+".max_topics", "%d: topic ids are 16 bits, so at most 65534", m.MaxTopics)
	}
	if m.MaxKeepalive.D() > 65535*time.Second {
		add(key+".max_keepalive", "must be at most 65535s (the CONNECT Duration is 16 bits)")
	}
	if m.MaxKeepalive != 0 && m.MaxKeepalive.D() < time.Second {
		add(key+".max_keepalive", "%v is shorter than 1s, the CONNECT Duration's unit", m.MaxKeepalive.D())
	}
	if m.HandshakeTimeout.D() < 100*time.Millisecond || m.HandshakeTimeout.D() > 5*time.Minute {
		add(key+".handshake_timeout", "%v: want 100ms to 5m", m.HandshakeTimeout.D())
	}
	if m.MaxHandshakes < 1 || m.MaxHandshakes > 100000 {
		add(key+".max_handshakes", "%d is out of range 1..100000", m.MaxHandshakes)
	}
	if m.MaxUnproven < 0 || m.MaxUnproven > 10_000_000 {
		add(key+".max_unproven", "%d is out of range 0..10000000 (0: the default, 10000)", m.MaxUnproven)
	}
	if m.UnprovenRate < 0 || m.UnprovenRate > 1e6 {
		add(key+".unproven_rate", "%v is out of range 0..1000000 datagrams per second (0: the default, 20)", m.UnprovenRate)
	}
	for i, src := range m.AllowedSources {
		if _, err := parsePrefix(src); err != nil {
			add(fmt.Sprintf("%s.allowed_sources[%d]", key, i), "%v", err)
		}
	}
}

func (g *MQTTSNGlobal) validate(add func(key, format string, args ...any)) {
	seen := map[string]int{}
	for i, p := range g.Predefined {
		key := fmt.Sprintf("mqttsn.predefined[%d]", i)
		if p.ID < 1 || p.ID > 0xFFFE {
			add(key+".id", "%d is out of range 1..65534", p.ID)
		}
		if err := CheckTopic(p.Topic); err != nil {
			add(key+".topic", "%v", err)
		}
		if len(p.ClientID) > 23 {
			add(key+".client_id", "%q is longer than 23 octets, the longest MQTT-SN client id", p.ClientID)
		}
		k := fmt.Sprintf("%s/%d", p.ClientID, p.ID)
		if j, dup := seen[k]; dup {
			add(key+".id", "predefined id %d is already mqttsn.predefined[%d]", p.ID, j)
		}
		seen[k] = i
	}
}
