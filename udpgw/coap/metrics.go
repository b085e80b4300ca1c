package coap

import (
	"sync"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/mqttgw/mqttgw/metrics"
)

// counters are the listener's series, made once in New. Every series is named
// mqttgw_coap_* and labelled with the listener's name.
type counters struct {
	m        *metrics.Registry
	listener string

	malformed        *metrics.Counter // datagram that is not CoAP (RFC 7252 §3)
	badVersion       *metrics.Counter // CoAP version other than 1: silently ignored (§3)
	tooLarge         *metrics.Counter // datagram above MaxDatagram
	badOption        *metrics.Counter // request with an unknown critical option: bare 4.02 or Reset
	busy             *metrics.Counter // request dropped: its peer has maxInflight in flight
	peersFull        *metrics.Counter // datagram from a new address dropped: MaxPeers reached
	handshakeFailed  *metrics.Counter // DTLS handshake failed (wrong key, unknown identity, timeout)
	notifyNON        *metrics.Counter
	notifyCON        *metrics.Counter
	notifyQueueFull  *metrics.Counter // oldest queued notification dropped for a newer one
	notifyTooLarge   *metrics.Counter // MQTT message larger than MaxPayload, not notified
	notifyRetransmit *metrics.Counter
	refused          *metrics.Counter // registration beyond an observer limit (RFC 7641 §4.1)
	echoSent         *metrics.Counter // 4.01 with an Echo option: a request needs a proven address (RFC 9175 §2.4)
	pingSent         *metrics.Counter // CoAP ping sent to an unproven source, to prove its address
	unprovenBusy     *metrics.Counter // request of an unproven source dropped: maxUnprovenInflight being handled

	mu        sync.Mutex // guards responses and ended
	responses map[string]*metrics.Counter
	ended     map[string]*metrics.Counter
}

func newCounters(m *metrics.Registry, listener string) *counters {
	c := &counters{m: m, listener: listener, responses: map[string]*metrics.Counter{}, ended: map[string]*metrics.Counter{}}
	dropped := func(reason string) *metrics.Counter {
		return m.Counter("mqttgw_coap_datagrams_dropped_total", "CoAP datagrams dropped before a handler saw them, by reason.", "listener", listener, "reason", reason)
	}
	c.malformed = dropped("malformed")
	c.badVersion = dropped("bad_version")
	c.tooLarge = dropped("too_large")
	c.badOption = dropped("bad_option")
	c.busy = dropped("busy")
	c.peersFull = dropped("peers_full")
	c.handshakeFailed = m.Counter("mqttgw_coap_dtls_handshake_failures_total", "DTLS handshakes that failed.", "listener", listener)
	notify := func(typ string) *metrics.Counter {
		return m.Counter("mqttgw_coap_notifications_total", "Observe notifications sent (first transmissions), by message type.", "listener", listener, "type", typ)
	}
	c.notifyNON, c.notifyCON = notify("non"), notify("con")
	c.notifyRetransmit = m.Counter("mqttgw_coap_notification_retransmissions_total", "Confirmable notifications sent again for want of an ACK.", "listener", listener)
	ndrop := func(reason string) *metrics.Counter {
		return m.Counter("mqttgw_coap_notifications_dropped_total", "MQTT messages not notified to an observer, by reason.", "listener", listener, "reason", reason)
	}
	c.notifyQueueFull, c.notifyTooLarge = ndrop("queue_full"), ndrop("too_large")
	check := func(kind string) *metrics.Counter {
		return m.Counter("mqttgw_coap_address_checks_total", "Challenges sent to a source that has not proven its address: 4.01 with an Echo option (RFC 9175), or a CoAP ping.", "listener", listener, "kind", kind)
	}
	c.echoSent, c.pingSent = check("echo"), check("ping")
	c.unprovenBusy = dropped("unproven_busy")
	c.refused = m.Counter("mqttgw_coap_observations_refused_total", "Observe registrations answered as a plain GET: an observer limit was reached.", "listener", listener)
	return c
}

// response counts one answer by method and response code ("4.04").
func (c *counters) response(method codes.Code, code codes.Code) {
	m := methodName(method)
	key := m + " " + codeString(code)
	c.mu.Lock()
	ctr, ok := c.responses[key]
	if !ok {
		ctr = c.m.Counter("mqttgw_coap_requests_total", "CoAP requests answered, by method and response code.", "listener", c.listener, "method", m, "code", codeString(code))
		c.responses[key] = ctr
	}
	c.mu.Unlock()
	ctr.Inc()
}

// observationEnded counts one observation removed, by reason.
func (c *counters) observationEnded(reason endReason) {
	c.mu.Lock()
	ctr, ok := c.ended[string(reason)]
	if !ok {
		ctr = c.m.Counter("mqttgw_coap_observations_ended_total", "Observations removed, by reason.", "listener", c.listener, "reason", string(reason))
		c.ended[string(reason)] = ctr
	}
	c.mu.Unlock()
	ctr.Inc()
}

func methodName(c codes.Code) string {
	switch c {
	case codes.GET:
		return "GET"
	case codes.POST:
		return "POST"
	case codes.PUT:
		return "PUT"
	case codes.DELETE:
		return "DELETE"
	}
	return "other"
}

// codeString renders a response code as c.dd (RFC 7252 §3).
func codeString(c codes.Code) string {
	return string([]byte{'0' + byte(c>>5), '.', '0' + byte(c&0x1f)/10, '0' + byte(c&0x1f)%10})
}
