package mqttsn

import (
	"sync"
	"time"

	"github.com/mqttgw/mqttgw/metrics"
	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
)

// dropReason says why a datagram, a message or an operation was dropped; each has
// its series of mqttgw_mqttsn_dropped_total.
type dropReason uint8

const (
	dropDecode           dropReason = iota // the datagram did not decode (truncated, wrong length, unknown type)
	dropTooLarge                           // datagram over max_packet
	dropUnexpected                         // a message a gateway never receives, or out of place
	dropNotConnected                       // from an address with no connected client (answered with DISCONNECT)
	dropWillExchange                       // arrived during the will exchange of its address
	dropMinusOneTopic                      // QoS -1 PUBLISH with a normal or unknown topic id
	dropBusy                               // QoS 0 PUBLISH while the client's operation queue was full
	dropBufferFull                         // oldest buffered message dropped for a newer one (max_buffered)
	dropRetries                            // N_RETRY transmissions towards the client went unanswered
	dropTopicLimit                         // no topic id left to REGISTER for a downlink message (max_topics)
	dropRegisterRejected                   // the client refused the gateway's REGISTER
	dropDownlinkTooLarge                   // a broker message longer than max_packet once encoded
	dropSessionEnded                       // buffered messages of a session that ended (clean, expired)
	dropShutdown                           // operations still queued when the drain timeout ended
	dropPublishFailed                      // QoS 0 or -1 publish the broker refused
	dropSource                             // from a source outside allowed_sources
	dropIdentity                           // mqttsns: a waking PINGREQ naming a client id other than the DTLS PSK identity
	dropLostAtStart                        // CONNECT of a client restored lost (keepalive ran out while the gateway was down) before its will is out
	dropRateLimited                        // from an address that has not proven it receives, above unproven_rate
	dropLoadBusy                           // CONNECT while maxLoads session loads from the fleet's store were under way (fleet.go)
	numDropReasons
)

var dropNames = [numDropReasons]string{
	"decode_error", "too_large", "unexpected", "not_connected", "will_exchange",
	"minus_one_topic", "busy", "buffer_full", "retries_exhausted", "topic_limit",
	"register_rejected", "downlink_too_large", "session_ended", "shutdown", "publish_failed",
	"source_not_allowed", "identity_mismatch", "lost_at_start", "rate_limited", "session_load_busy",
}

// refuseReason says why a request was answered with a rejecting return code.
type refuseReason uint8

const (
	refuseClientID      refuseReason = iota // CONNECT: client id empty, longer than 23 octets, or not UTF-8
	refuseKeepalive                         // CONNECT: Duration over max_keepalive (or 0 with a cap)
	refuseMaxClients                        // CONNECT: max_clients reached
	refuseWillTopic                         // CONNECT, WILLTOPICUPD: the will topic is not a topic name
	refuseInvalidTopic                      // REGISTER, PUBLISH, SUBSCRIBE: unknown topic id or bad name
	refuseTopicLimit                        // REGISTER, SUBSCRIBE: max_topics reached
	refuseCongestion                        // broker unavailable or the client's operation queue full
	refuseForbidden                         // the broker side refused the topic
	refuseUnknownClient                     // CONNECT: require_known_client and the id is no user
	refuseIdentity                          // CONNECT: mqttsns and the client id is not the DTLS PSK identity
	refuseSubLimit                          // SUBSCRIBE: the client has max_topics subscriptions
	numRefuseReasons
)

var refuseNames = [numRefuseReasons]string{
	"client_id", "keepalive", "max_clients", "will_topic", "invalid_topic", "topic_limit", "congestion", "forbidden",
	"unknown_client", "psk_identity", "subscription_limit",
}

type engineMetrics struct {
	in, out       map[mqttsn.MsgType]*metrics.Counter
	dropped       [numDropReasons]*metrics.Counter
	refused       [numRefuseReasons]*metrics.Counter
	retransmitted *metrics.Counter
	duplicates    *metrics.Counter
	takeovers     *metrics.Counter
	rebinds       *metrics.Counter
	tooLarge      *metrics.Counter // the listeners' shared mqttgw_datagrams_dropped_total
	// CONNECTs with CleanSession false that found their session, or did not
	// and started a new one.
	persistentResumed, persistentNew *metrics.Counter
}

var knownTypes = []mqttsn.MsgType{
	mqttsn.MsgAdvertise, mqttsn.MsgSearchGW, mqttsn.MsgGWInfo, mqttsn.MsgConnect, mqttsn.MsgConnack,
	mqttsn.MsgWillTopicReq, mqttsn.MsgWillTopic, mqttsn.MsgWillMsgReq, mqttsn.MsgWillMsg,
	mqttsn.MsgRegister, mqttsn.MsgRegack, mqttsn.MsgPublish, mqttsn.MsgPuback, mqttsn.MsgPubcomp,
	mqttsn.MsgPubrec, mqttsn.MsgPubrel, mqttsn.MsgSubscribe, mqttsn.MsgSuback, mqttsn.MsgUnsubscribe,
	mqttsn.MsgUnsuback, mqttsn.MsgPingreq, mqttsn.MsgPingresp, mqttsn.MsgDisconnect,
	mqttsn.MsgWillTopicUpd, mqttsn.MsgWillTopicResp, mqttsn.MsgWillMsgUpd, mqttsn.MsgWillMsgResp,
	mqttsn.MsgEncapsulated,
}

func newMetrics(r *metrics.Registry, listener string) *engineMetrics {
	m := &engineMetrics{in: map[mqttsn.MsgType]*metrics.Counter{}, out: map[mqttsn.MsgType]*metrics.Counter{}}
	const msgHelp = "MQTT-SN messages received (in) and sent (out), by type."
	for _, t := range knownTypes {
		m.in[t] = r.Counter("mqttgw_mqttsn_messages_total", msgHelp, "listener", listener, "direction", "in", "type", t.String())
		m.out[t] = r.Counter("mqttgw_mqttsn_messages_total", msgHelp, "listener", listener, "direction", "out", "type", t.String())
	}
	for i, n := range dropNames {
		m.dropped[i] = r.Counter("mqttgw_mqttsn_dropped_total", "MQTT-SN datagrams, messages and operations dropped, by reason.", "listener", listener, "reason", n)
	}
	for i, n := range refuseNames {
		m.refused[i] = r.Counter("mqttgw_mqttsn_refused_total", "MQTT-SN requests answered with a rejecting return code, by reason.", "listener", listener, "reason", n)
	}
	m.retransmitted = r.Counter("mqttgw_mqttsn_retransmissions_total", "Messages the gateway sent again to a client after T_RETRY.", "listener", listener)
	m.duplicates = r.Counter("mqttgw_mqttsn_duplicates_total", "Client retransmissions recognised as duplicates (DUP + MsgId) and not acted on twice.", "listener", listener)
	m.takeovers = r.Counter("mqttgw_mqttsn_takeovers_total", "CONNECTs that took a client id over from another address.", "listener", listener)
	m.rebinds = r.Counter("mqttgw_mqttsn_rebinds_total", "Clients that moved to a new address with PINGREQ(ClientId) (NAT rebinding).", "listener", listener)
	const pcHelp = "MQTT-SN CONNECTs with CleanSession false, by whether the gateway had the client's session (resumed) or started a new one (new: never had one, expired, or lost in a restart without a store)."
	m.persistentResumed = r.Counter("mqttgw_mqttsn_persistent_connects_total", pcHelp, "listener", listener, "session", "resumed")
	m.persistentNew = r.Counter("mqttgw_mqttsn_persistent_connects_total", pcHelp, "listener", listener, "session", "new")
	m.tooLarge = r.Counter("mqttgw_datagrams_dropped_total", "Datagrams dropped before mapping, by reason.", "listener", listener, "reason", "too_large")
	return m
}

func (m *engineMetrics) drop(r dropReason)     { m.dropped[r].Inc() }
func (m *engineMetrics) refuse(r refuseReason) { m.refused[r].Inc() }

func (m *engineMetrics) countIn(t mqttsn.MsgType) {
	if c := m.in[t]; c != nil {
		c.Inc()
	}
}

func (m *engineMetrics) countOut(t mqttsn.MsgType) {
	if c := m.out[t]; c != nil {
		c.Inc()
	}
}

// limiter lets through at most perSecond log lines per second and counts the
// rest, so that one misbehaving device cannot flood the log.
type limiter struct {
	perSecond int

	mu         sync.Mutex // guards the fields below
	window     time.Time
	n          int
	suppressed int
}

// allow reports whether a line may be logged now, and how many were suppressed
// since the last one that was.
func (l *limiter) allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.window) >= time.Second {
		l.window, l.n = now, 0
	}
	if l.n >= l.perSecond {
		l.suppressed++
		return false, 0
	}
	l.n++
	s := l.suppressed
	l.suppressed = 0
	return true, s
}
