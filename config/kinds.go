package config

import "time"

// The listener types.
const (
	ListenerUDP     = "udp"     // plain datagrams, mapped by [[rule]]s
	ListenerMQTTSN  = "mqttsn"  // MQTT-SN 1.2
	ListenerMQTTSNS = "mqttsns" // MQTT-SN 1.2 over DTLS 1.2 with PSKs
	ListenerCoAP    = "coap"    // CoAP, RFC 7252
	ListenerCoAPS   = "coaps"   // CoAP over DTLS 1.2, RFC 7252 §9
)

// RawKeepalive is how long a plain-UDP device without a class keepalive stays
// listed without traffic (times 1.5): it has no will, so its loss only frees its
// record.
const RawKeepalive = 24 * time.Hour

// ListenerKind is what the project knows of one listener type. listenerKinds is
// the one list of them: validation, mapping and the gateway ask it rather than
// naming types.
type ListenerKind struct {
	Type string
	// DefaultPort is where the listener binds on loopback when bind is not set;
	// "" means bind is required.
	DefaultPort string
	// TopicRules: the type has a protocol of its own, so its [[rule]]s rewrite
	// device topics instead of mapping datagrams, and it has no downlinks or acks.
	TopicRules bool
	// Options names its options table ([listener.mqttsn], [listener.coap]), or "".
	Options string
	// DTLS: devices reach it over DTLS 1.2 and prove who they are with a
	// pre-shared key from auth.psk_file (or, for coaps, a certificate).
	DTLS bool
}

// listenerKinds is in the order error messages name them.
var listenerKinds = []ListenerKind{
	{Type: ListenerUDP},
	{Type: ListenerMQTTSN, DefaultPort: "1884", TopicRules: true, Options: "mqttsn"},
	// No port is assigned to MQTT-SN over DTLS; 8884 follows MQTT's 1883 → 8883.
	{Type: ListenerMQTTSNS, DefaultPort: "8884", TopicRules: true, Options: "mqttsn", DTLS: true},
	{Type: ListenerCoAP, DefaultPort: "5683", TopicRules: true, Options: "coap"},
	{Type: ListenerCoAPS, DefaultPort: "5684", TopicRules: true, Options: "coap", DTLS: true},
}

// KindOf returns the kind of listener type typ; ok is false for an unknown type.
func KindOf(typ string) (k ListenerKind, ok bool) {
	for _, k := range listenerKinds {
		if k.Type == typ {
			return k, true
		}
	}
	return ListenerKind{}, false
}

func listenerTypes() []string {
	ts := make([]string, len(listenerKinds))
	for i, k := range listenerKinds {
		ts[i] = k.Type
	}
	return ts
}

// Kind is the listener's kind (zero for an unknown type, which Load refuses).
func (l Listener) Kind() ListenerKind {
	k, _ := KindOf(l.Type)
	return k
}

// SessionKeepalive is a new device session's keepalive on this listener until
// a class or the device sets one: the CoAP listener's keepalive, RawKeepalive
// for plain UDP, 0 for MQTT-SN (a CONNECT's Duration sets each client's).
func (l Listener) SessionKeepalive() time.Duration {
	switch l.Kind().Options {
	case "coap":
		return l.CoAP.Keepalive.D()
	case "mqttsn":
		return 0
	}
	return RawKeepalive
}
