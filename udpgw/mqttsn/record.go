package mqttsn

import (
	"fmt"
	"math"
	"net/netip"
	"time"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/store"
	"github.com/mqttgw/mqttgw/udpgw"
)

// sessionRecord is the durable form of one persistent client (CleanSession
// false, MQTT-SN 1.2 §6.2): what the engine and the registry hold of it, as
// persist.go snapshots it and restores it after a restart. It is a plain
// value: encoding and decoding are pure (no I/O, no engine state).
type sessionRecord struct {
	ID    string
	Clean bool
	State recordState
	// LastSeen is the session's last traffic, as of the record's write: a
	// write is due again once the session's is Keepalive/2 newer (persist.go).
	LastSeen time.Time
	// Since is when a disconnected client went away (its SessionExpiry runs
	// from there); zero otherwise.
	Since     time.Time
	Duration  uint16        // the CONNECT's Duration, seconds
	Keepalive time.Duration // the session's: the Duration, a sleep's, or a class's
	Addr      netip.AddrPort
	Node      string           // forwarder's wireless node id (session.Peer.Node); "" direct
	Will      *session.Message // the device's own, in its topic space; nil none
	NextMsgID uint16
	NextTopic uint16
	Topics    []recordTopic
	Subs      []recordSub
	// AwaitRel are the MsgIds of QoS 2 publishes the broker took and the
	// client was (or is about to be) sent PUBREC for, until its PUBREL.
	AwaitRel []uint16
	// Out and Queue are the downlink of a client that is not active (asleep,
	// awake or disconnected): the message in flight and the ones buffered.
	Out   *recordOut
	Queue []udpgw.Message
}

// recordState is a client's state in a record: an awake client is stored
// asleep (it wakes again with PINGREQ), a gone one has no record.
type recordState uint8

const (
	recActive recordState = iota
	recAsleep
	recDisconnected
	numRecordStates
)

// recordTopic is one registration (MQTT-SN 1.2 §6.5): the gateway assigns
// every id; Origin says which exchange made it.
type recordTopic struct {
	ID     uint16
	Name   string
	Origin regOrigin
}

type recordSub struct {
	Filter string
	QoS    byte
	IDType mqttsn.TopicIDType
}

type recordOut struct {
	Stage        outStage
	MsgID        uint16
	TopicID      uint16
	IDType       mqttsn.TopicIDType
	Reregistered bool
	Msg          udpgw.Message
}

// sessionRecordVersion is the newest record version this build writes and reads.
const sessionRecordVersion = 1

// The record, version 1, in store's record format (store/record.go: every
// field fixed-width or length-prefixed, big-endian):
//
//	Uint8  version (1)
//	Str    client id (1 to 23 octets, MQTT-SN 1.2 §5.3.1; also the key's)
//	Bool   clean
//	Uint8  state: 0 active, 1 asleep, 2 disconnected
//	Time   last seen
//	Time   since (disconnected; else 0)
//	Uint16 CONNECT Duration (s)
//	Uint64 keepalive (ns)
//	Str    last address, netip.AddrPort text ("" none)
//	Str    forwarder node id ("" direct)
//	Bool   will; when set: Str topic, Bytes payload, Uint8 QoS, Bool retain
//	Uint16 next MsgId
//	Uint16 next topic id
//	Count  topics; each: Uint16 id, Str name, Uint8 origin (0 client, 1 gateway, 2 subscribe)
//	Count  subscriptions; each: Str filter, Uint8 granted QoS, Uint8 topic id type
//	Count  QoS 2 MsgIds awaiting PUBREL; each: Uint16
//	Bool   message in flight; when set: Uint8 stage (0 REGISTER, 1 PUBLISH, 2 PUBREL),
//	       Uint16 MsgId, Uint16 topic id, Uint8 topic id type, Bool reregistered, message
//	Count  buffered messages; each: message
//
//	message: Str topic, Bytes payload, Uint8 QoS, Bool retain
//
// Every value has one encoding (the decoder refuses out-of-range values,
// duplicates and a non-canonical address), so decode and encode round-trip
// byte for byte (FuzzDecodeSessionRecord).

// appendSessionRecord appends r's encoding to buf.
func appendSessionRecord(buf []byte, r *sessionRecord) ([]byte, error) {
	e := store.NewEncoder(buf, sessionRecordVersion)
	e.Str(r.ID)
	e.Bool(r.Clean)
	e.Uint8(uint8(r.State))
	e.Time(r.LastSeen)
	e.Time(r.Since)
	e.Uint16(r.Duration)
	e.Uint64(uint64(max(r.Keepalive, 0)))
	addr := ""
	if r.Addr.IsValid() {
		addr = r.Addr.String()
	}
	e.Str(addr)
	e.Str(r.Node)
	e.Bool(r.Will != nil)
	if w := r.Will; w != nil {
		e.Str(w.Topic)
		e.Bytes(w.Payload)
		e.Uint8(w.QoS)
		e.Bool(w.Retain)
	}
	e.Uint16(r.NextMsgID)
	e.Uint16(r.NextTopic)
	e.Count(len(r.Topics))
	for _, t := range r.Topics {
		e.Uint16(t.ID)
		e.Str(t.Name)
		e.Uint8(uint8(t.Origin))
	}
	e.Count(len(r.Subs))
	for _, s := range r.Subs {
		e.Str(s.Filter)
		e.Uint8(s.QoS)
		e.Uint8(uint8(s.IDType))
	}
	e.Count(len(r.AwaitRel))
	for _, id := range r.AwaitRel {
		e.Uint16(id)
	}
	e.Bool(r.Out != nil)
	if o := r.Out; o != nil {
		e.Uint8(uint8(o.Stage))
		e.Uint16(o.MsgID)
		e.Uint16(o.TopicID)
		e.Uint8(uint8(o.IDType))
		e.Bool(o.Reregistered)
		encodeMessage(&e, o.Msg)
	}
	e.Count(len(r.Queue))
	for _, m := range r.Queue {
		encodeMessage(&e, m)
	}
	return e.Finish()
}

func encodeMessage(e *store.Encoder, m udpgw.Message) {
	e.Str(m.Topic)
	e.Bytes(m.Payload)
	e.Uint8(m.QoS)
	e.Bool(m.Retain)
}

// decodeSessionRecord reads a record written by appendSessionRecord (any
// version up to sessionRecordVersion). Errors wrap the store's record
// sentinels (store.ErrTruncated, ErrTrailing, ErrRecordVersion, ErrBadValue).
func decodeSessionRecord(b []byte) (sessionRecord, error) {
	d := store.NewDecoder(b, sessionRecordVersion)
	var r sessionRecord
	bad := func(format string, args ...any) {
		// A value that decodes but makes no sense (a duplicate topic id, a
		// bad client id) is store.ErrBadValue too.
		d.Fail(fmt.Errorf("%w: "+format, append([]any{store.ErrBadValue}, args...)...))
	}
	r.ID = d.Str()
	if err := checkClientID(r.ID); err != nil && d.Err() == nil {
		bad("%v", err)
	}
	r.Clean = d.Bool()
	if r.State = recordState(d.Uint8()); r.State >= numRecordStates {
		bad("state %d", r.State)
	}
	r.LastSeen = d.Time()
	r.Since = d.Time()
	r.Duration = d.Uint16()
	if ka := d.Uint64(); ka > math.MaxInt64 {
		bad("keepalive %d", ka)
	} else {
		r.Keepalive = time.Duration(ka)
	}
	if addr := d.Str(); addr != "" && d.Err() == nil {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil || ap.String() != addr {
			bad("address %q", addr)
		}
		r.Addr = ap
	}
	r.Node = d.Str()
	if d.Bool() {
		w := &session.Message{Topic: d.Str(), Payload: d.Bytes(), QoS: d.Uint8(), Retain: d.Bool()}
		if w.QoS > 2 {
			bad("will QoS %d", w.QoS)
		}
		r.Will = w
	}
	r.NextMsgID = d.Uint16()
	r.NextTopic = d.Uint16()
	if n := d.Count(); n > 0 {
		ids, names := make(map[uint16]bool, n), make(map[string]bool, n)
		for range n {
			t := recordTopic{ID: d.Uint16(), Name: d.Str(), Origin: regOrigin(d.Uint8())}
			if d.Err() != nil {
				break
			}
			switch {
			case t.ID == 0 || t.ID == 0xFFFF: // reserved (§5.3.11)
				bad("topic id %#04x", t.ID)
			case ids[t.ID] || names[t.Name]:
				bad("topic %d %q registered twice", t.ID, t.Name)
			case t.Origin >= numRegOrigins:
				bad("topic origin %d", t.Origin)
			case checkTopicName(t.Name) != nil:
				bad("topic name %q", t.Name)
			}
			ids[t.ID], names[t.Name] = true, true
			r.Topics = append(r.Topics, t)
		}
	}
	if n := d.Count(); n > 0 {
		filters := make(map[string]bool, n)
		for range n {
			s := recordSub{Filter: d.Str(), QoS: d.Uint8(), IDType: mqttsn.TopicIDType(d.Uint8())}
			if d.Err() != nil {
				break
			}
			switch {
			case filters[s.Filter]:
				bad("subscription %q twice", s.Filter)
			case s.QoS > 2 || s.IDType > mqttsn.TopicShort:
				bad("subscription %q: QoS %d, id type %d", s.Filter, s.QoS, s.IDType)
			case udpgw.CheckFilter(s.Filter) != nil:
				bad("filter %q", s.Filter)
			}
			filters[s.Filter] = true
			r.Subs = append(r.Subs, s)
		}
	}
	if n := d.Count(); n > 0 {
		seen := make(map[uint16]bool, n)
		for range n {
			id := d.Uint16()
			if d.Err() != nil {
				break
			}
			if seen[id] {
				bad("MsgId %d awaits PUBREL twice", id)
			}
			seen[id] = true
			r.AwaitRel = append(r.AwaitRel, id)
		}
	}
	if d.Bool() {
		o := &recordOut{Stage: outStage(d.Uint8()), MsgID: d.Uint16(), TopicID: d.Uint16(), IDType: mqttsn.TopicIDType(d.Uint8()), Reregistered: d.Bool()}
		o.Msg = decodeMessage(&d, bad)
		if o.Stage > outRelease || o.IDType > mqttsn.TopicShort {
			bad("message in flight: stage %d, id type %d", o.Stage, o.IDType)
		}
		r.Out = o
	}
	if n := d.Count(); n > 0 {
		for range n {
			m := decodeMessage(&d, bad)
			if d.Err() != nil {
				break
			}
			r.Queue = append(r.Queue, m)
		}
	}
	if err := d.Finish(); err != nil {
		return sessionRecord{}, fmt.Errorf("mqttsn: session record: %w", err)
	}
	return r, nil
}

func decodeMessage(d *store.Decoder, bad func(string, ...any)) udpgw.Message {
	m := udpgw.Message{Topic: d.Str(), Payload: d.Bytes(), QoS: d.Uint8(), Retain: d.Bool()}
	if m.QoS > 2 && d.Err() == nil {
		bad("message QoS %d", m.QoS)
	}
	return m
}
