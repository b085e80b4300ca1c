package mqttsn

import (
	"net/netip"
	"time"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// state is a client's place in MQTT-SN 1.2 §6.14 Figure 4 (client's state
// transition diagram), seen from the gateway.
type state uint8

const (
	stateActive       state = iota // connected, awake
	stateAsleep                    // DISCONNECT with Duration: messages are buffered
	stateAwake                     // PINGREQ(ClientId) from asleep: buffered messages are being sent
	stateDisconnected              // gone, persistent session kept for SessionExpiry
	stateGone                      // dropped; removed once its operations are done
)

var stateNames = [...]string{"active", "asleep", "awake", "disconnected", "gone"}

func (s state) String() string { return stateNames[s] }

// connected reports whether the client has a connection (awake or not).
func (s state) connected() bool { return s <= stateAwake }

// client is one MQTT-SN client's protocol state. Every field is guarded by
// Engine.mu. Its address, liveness and will are its session's: sess is set
// while the client is connected (state.connected()), nil otherwise.
type client struct {
	id    string
	state state
	clean bool // the last CONNECT's CleanSession
	// With a store (persist.go): stored says the store may hold a record of
	// the client, so that a clean CONNECT or its end deletes it; lostPending
	// that it was restored with its keepalive run out while the gateway was
	// down, and waits for the registry to lose it (its will) before it may
	// connect again.
	stored      bool
	lostPending bool
	sess        *session.Session
	// gen changes with every CONNECT and every end of a connection, so that a
	// worker's answer for an older connection is not sent to a newer one.
	gen   uint32
	since time.Time // when it disconnected (stateDisconnected)
	// The CONNECT that made the current connection, to tell a copy the
	// network made from a new CONNECT: its flags and Duration, and when.
	connSig connectSig
	connAt  int64 // unix nanoseconds

	// Topic ids registered by either side (MQTT-SN 1.2 §6.5).
	topics topicTable
	// confirmed, after a CONNECT that resumed a session, holds the normal
	// topic ids the client has (again) acknowledged on this connection: a
	// downlink on any other id REGISTERs it first. nil: all are known.
	confirmed map[uint16]struct{}

	// subs maps each filter (device-side) to its subscription.
	subs map[string]*sub
	// subscribing counts SUBSCRIBEs at the broker: downlink waits meanwhile,
	// so the SUBACK carrying a topic id reaches the client before a PUBLISH
	// using it.
	subscribing int

	// Downlink: the message in flight and the ones waiting.
	out         *outbound
	queue       msgQueue
	nextMsgID   uint16
	awakeBudget int // messages still to send in this awake period (§6.14)

	// Uplink QoS 1 and 2 publishes in progress or, for QoS 2, received and
	// waiting for PUBREL (MQTT-SN 1.2 §6.7, duplicate detection), by MsgId.
	uplink map[uint16]uplinkState
	// done holds the last QoS 1 and 2 publishes the gateway completed (PUBACK
	// or PUBREC sent), so that a repeat within the duplicate window is never
	// published again; nil until the first one.
	done  *[4]doneUplink
	doneN uint8

	// Broker operations, run one at a time by the workers.
	ops    []op
	queued bool // in Engine.ready or being run by a worker

	// connecting: transparent mode, the device's own broker connection is
	// being made for a CONNECT from this address; CONNACK waits for it.
	connecting *session.Peer

	// ps is the client's persistence state (persist.go); nil without a store
	// and for clean sessions.
	ps *clientPersist

	// chk is the check of its address while it has not proven it receives
	// (unproven.go); nil once it has, and always over DTLS. okAddr is the
	// address it proved (or connected from, proven): what goes there needs
	// no budget.
	chk    *addrCheck
	okAddr netip.AddrPort
}

type sub struct {
	qos    byte // granted
	idType mqttsn.TopicIDType
}

type uplinkState uint8

const (
	upPublishing uplinkState = iota // at the broker
	upReceived                      // QoS 2: broker acknowledged, PUBREC sent, waiting for PUBREL
	// upRecording: QoS 2, broker acknowledged; the PUBREC waits until the
	// client's record holding the MsgId is committed (persist.go).
	upRecording
)

// awaitsRelease reports whether a QoS 2 publish in state st was published and
// waits for PUBREL: it survives a new connection of a persistent session and
// a restart.
func (st uplinkState) awaitsRelease() bool { return st != upPublishing }

// outStage is where the message in flight towards a client stands.
type outStage uint8

const (
	outRegister outStage = iota // REGISTER sent, waiting for REGACK
	outPublish                  // PUBLISH QoS 1 or 2 sent, waiting for PUBACK or PUBREC
	outRelease                  // PUBREL sent, waiting for PUBCOMP
)

// outbound is the one message in flight towards a client (MQTT-SN 1.2 §6.13).
type outbound struct {
	msg     udpgw.Message
	stage   outStage
	msgID   uint16
	topicID uint16
	idType  mqttsn.TopicIDType
	due     time.Time
	retries int
	// reregistered is set after the client answered "invalid topic ID": the
	// message is sent once more after a new REGISTER, not forever.
	reregistered bool
	// sentTo is where it was last sent: its acknowledgement from there
	// proves the address (unproven.go); unsent, that it was held instead
	// (the address's budget), to go once the address is proven.
	sentTo netip.AddrPort
	unsent bool
}

func (c *client) key(listener string) session.Key {
	return session.Key{Listener: listener, Device: c.id}
}

// peer is where to answer the client: its session's last source. A client
// without a session gets nothing (send refuses the zero Peer).
func (c *client) peer() session.Peer {
	if c.sess == nil {
		return session.Peer{}
	}
	return c.sess.Peer()
}

// allocMsgID returns the next MsgId, never 0.
func (c *client) allocMsgID() uint16 {
	c.nextMsgID++
	if c.nextMsgID == 0 {
		c.nextMsgID = 1
	}
	return c.nextMsgID
}

// register records a topic id for name, allocating one when the client has
// none; ok is false when it already has max ids.
func (c *client) register(name string, max int, origin regOrigin) (id uint16, ok bool) {
	return c.topics.add(name, max, origin)
}

func (c *client) unregister(id uint16) { c.topics.remove(id) }

// connectSig is what identifies a CONNECT besides its client id and address.
type connectSig struct {
	duration uint16
	clean    bool
	will     bool
}

// doneUplink is one completed QoS 1 or 2 publish of a client: its MsgId and a
// digest of its topic and payload. A link that duplicates datagrams delivers the
// same PUBLISH again, DUP flag clear, after the exchange ended; only the id,
// topic and payload together tell it from a new message reusing the id.
type doneUplink struct {
	at    int64 // unix nanoseconds of completion
	sum   uint64
	msgID uint16
	qos   mqttsn.QoS
}

// rememberDone records a completed publish.
func (c *client) rememberDone(id uint16, qos mqttsn.QoS, sum uint64, now time.Time) {
	if c.done == nil {
		c.done = new([4]doneUplink)
	}
	c.done[c.doneN%uint8(len(c.done))] = doneUplink{at: now.UnixNano(), sum: sum, msgID: id, qos: qos}
	c.doneN++
}

// wasDone reports whether the publish (id, sum) completed within window of now.
func (c *client) wasDone(id uint16, sum uint64, now time.Time, window time.Duration) bool {
	if c.done == nil {
		return false
	}
	for _, d := range c.done[:min(int(c.doneN), len(c.done))] {
		if d.msgID == id && d.sum == sum && now.UnixNano()-d.at <= int64(window) {
			return true
		}
	}
	return false
}

// msgQueue is a ring buffer of messages for one client; bytes is the sum of
// their payloads.
type msgQueue struct {
	buf   []udpgw.Message
	head  int
	n     int
	bytes int
}

func (q *msgQueue) len() int { return q.n }

func (q *msgQueue) grow() {
	nb := make([]udpgw.Message, max(4, 2*len(q.buf)))
	for i := range q.n {
		nb[i] = q.buf[(q.head+i)%len(q.buf)]
	}
	q.buf, q.head = nb, 0
}

func (q *msgQueue) pushBack(m udpgw.Message) {
	if q.n == len(q.buf) {
		q.grow()
	}
	q.buf[(q.head+q.n)%len(q.buf)] = m
	q.n++
	q.bytes += len(m.Payload)
}

// pushFront puts m back at the head: the message popFront returned, which
// could not go yet.
func (q *msgQueue) pushFront(m udpgw.Message) {
	if q.n == len(q.buf) {
		q.grow()
	}
	q.head = (q.head + len(q.buf) - 1) % len(q.buf)
	q.buf[q.head] = m
	q.n++
	q.bytes += len(m.Payload)
}

func (q *msgQueue) popFront() (udpgw.Message, bool) {
	if q.n == 0 {
		return udpgw.Message{}, false
	}
	m := q.buf[q.head]
	q.buf[q.head] = udpgw.Message{}
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	q.bytes -= len(m.Payload)
	if q.n == 0 && len(q.buf) > 16 {
		q.buf, q.head = nil, 0 // give a burst's memory back
	}
	return m, true
}

func (q *msgQueue) clear() int {
	n := q.n
	*q = msgQueue{}
	return n
}
