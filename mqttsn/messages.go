package mqttsn

// Message is one decoded MQTT-SN message. The concrete types are the
// pointer types below (*Connect, *Publish, ...), one per MsgType; Decode
// returns them and Append accepts them.
//
// Every message starts with the header of MQTT-SN 1.2 §5.2:
//
//	short form (total length ≤ 255):   long form (total length > 255):
//	+--------+---------+------//       +------+--------+---------+------//
//	| Length | MsgType | body          | 0x01 | Length | MsgType | body
//	| 1      | 1       |               | 1    | 2 (BE) | 1       |
//	+--------+---------+------//       +------+--------+---------+------//
//
// Length counts the whole message, header included. Multi-octet integers
// are big-endian. Diagrams below show the body after MsgType, sizes in
// octets.
type Message interface {
	Type() MsgType
}

// Advertise is broadcast by a gateway to announce itself. MQTT-SN 1.2 §5.4.1.
//
//	| GwId 1 | Duration 2 |
type Advertise struct {
	GwID     uint8
	Duration uint16 // seconds until the next ADVERTISE
}

// SearchGW is broadcast by a client looking for a gateway. MQTT-SN 1.2 §5.4.2.
//
//	| Radius 1 |
type SearchGW struct {
	Radius uint8 // broadcast radius in hops
}

// GWInfo answers a SEARCHGW. MQTT-SN 1.2 §5.4.3.
//
//	| GwId 1 | GwAdd n |
//
// GwAdd is present only when a client answers on behalf of a gateway; a
// gateway sends GWINFO without it (GwAdd nil).
type GWInfo struct {
	GwID  uint8
	GwAdd []byte // may alias the decoded datagram
}

// Connect opens a connection. MQTT-SN 1.2 §5.4.4.
//
//	| Flags 1 | ProtocolId 1 | Duration 2 | ClientId n |
//
// Only Flags.Will and Flags.CleanSession have a meaning; the other flag bits
// are kept as received. ProtocolID must be 0x01 (Decode fails otherwise with
// ErrBadProtocolID); Append writes 0x01 when it is 0. The codec does not
// enforce the 1–23 octet ClientId length of the specification: that is the
// gateway's policy (see ClientIDMaxLen).
type Connect struct {
	Flags      Flags
	ProtocolID uint8  // always ProtocolID12 when decoded
	Duration   uint16 // keep-alive period in seconds
	ClientID   string
}

// ProtocolID12 is the ProtocolId of MQTT-SN 1.2 (§5.3.8).
const ProtocolID12 = 0x01

// ClientIDMaxLen is the longest ClientId MQTT-SN 1.2 allows (§5.3.1).
const ClientIDMaxLen = 23

// Connack answers a CONNECT. MQTT-SN 1.2 §5.4.5.
//
//	| ReturnCode 1 |
type Connack struct {
	ReturnCode ReturnCode
}

// WillTopicReq asks a connecting client for its will topic. MQTT-SN 1.2 §5.4.6.
//
//	(empty body)
type WillTopicReq struct{}

// WillTopic carries the will topic during CONNECT. MQTT-SN 1.2 §5.4.7.
//
//	| Flags 1 | WillTopic n |    or an empty body
//
// Flags.QoS and Flags.Retain are the will's; other bits are kept as received.
// An empty WILLTOPIC (2 octets, no Flags, no topic) deletes the will: it
// decodes to the zero WillTopic, and the zero WillTopic (zero Flags, empty
// Topic) encodes to it.
type WillTopic struct {
	Flags Flags
	Topic string
}

// WillMsgReq asks a connecting client for its will message. MQTT-SN 1.2 §5.4.8.
//
//	(empty body)
type WillMsgReq struct{}

// WillMsg carries the will message during CONNECT. MQTT-SN 1.2 §5.4.9.
//
//	| WillMsg n |
type WillMsg struct {
	WillMsg []byte // may alias the decoded datagram
}

// Register maps a topic name to a topic id, in either direction.
// MQTT-SN 1.2 §5.4.10, §6.5.
//
//	| TopicId 2 | MsgId 2 | TopicName n |
//
// A client sends TopicID 0; the gateway fills in the id it assigns.
type Register struct {
	TopicID   uint16
	MsgID     uint16
	TopicName string
}

// Regack answers a REGISTER. MQTT-SN 1.2 §5.4.11.
//
//	| TopicId 2 | MsgId 2 | ReturnCode 1 |
type Regack struct {
	TopicID    uint16
	MsgID      uint16
	ReturnCode ReturnCode
}

// Publish carries application data. MQTT-SN 1.2 §5.4.12.
//
//	| Flags 1 | TopicId 2 | MsgId 2 | Data n |
//
// Flags.TopicIDType says how to read TopicID: a registered id, a predefined
// id, or a short topic name (two characters, see ShortTopicName). MsgID is 0
// for QoS 0 and -1.
type Publish struct {
	Flags   Flags
	TopicID uint16
	MsgID   uint16
	Data    []byte // may alias the decoded datagram
}

// Puback answers a PUBLISH at QoS 1, or rejects one at any QoS.
// MQTT-SN 1.2 §5.4.13.
//
//	| TopicId 2 | MsgId 2 | ReturnCode 1 |
type Puback struct {
	TopicID    uint16
	MsgID      uint16
	ReturnCode ReturnCode
}

// Pubrec is the first answer to a QoS 2 PUBLISH. MQTT-SN 1.2 §5.4.14.
//
//	| MsgId 2 |
type Pubrec struct {
	MsgID uint16
}

// Pubrel answers a PUBREC. MQTT-SN 1.2 §5.4.14.
//
//	| MsgId 2 |
type Pubrel struct {
	MsgID uint16
}

// Pubcomp answers a PUBREL and ends a QoS 2 exchange. MQTT-SN 1.2 §5.4.14.
//
//	| MsgId 2 |
type Pubcomp struct {
	MsgID uint16
}

// Subscribe asks for messages on a topic. MQTT-SN 1.2 §5.4.15.
//
//	| Flags 1 | MsgId 2 | TopicName n  or  TopicId 2 |
//
// With Flags.TopicIDType TopicNormal the topic is the filter TopicName (which
// may contain wildcards) and TopicID must be 0. With TopicPredefined and
// TopicShort the topic is the two octets in TopicID — for a short name the
// two characters, as in PUBLISH (see ShortTopicID) — and TopicName must be
// empty. Append fails with ErrInvalidMessage otherwise.
type Subscribe struct {
	Flags     Flags
	MsgID     uint16
	TopicName string
	TopicID   uint16
}

// Suback answers a SUBSCRIBE. MQTT-SN 1.2 §5.4.16.
//
//	| Flags 1 | TopicId 2 | MsgId 2 | ReturnCode 1 |
//
// Flags.QoS is the granted QoS. TopicID is 0 for a wildcard filter or a
// short topic name.
type Suback struct {
	Flags      Flags
	TopicID    uint16
	MsgID      uint16
	ReturnCode ReturnCode
}

// Unsubscribe ends a subscription. MQTT-SN 1.2 §5.4.17.
//
//	| Flags 1 | MsgId 2 | TopicName n  or  TopicId 2 |
//
// The topic fields follow the rules of Subscribe.
type Unsubscribe struct {
	Flags     Flags
	MsgID     uint16
	TopicName string
	TopicID   uint16
}

// Unsuback answers an UNSUBSCRIBE. MQTT-SN 1.2 §5.4.18.
//
//	| MsgId 2 |
type Unsuback struct {
	MsgID uint16
}

// Pingreq checks liveness; with a ClientID it wakes a sleeping client, which
// then receives its buffered messages. MQTT-SN 1.2 §5.4.19, §6.14.
//
//	| ClientId n (optional) |
type Pingreq struct {
	ClientID string // empty: no ClientId field
}

// Pingresp answers a PINGREQ; to an awake sleeping client it means "no more
// buffered messages". MQTT-SN 1.2 §5.4.20.
//
//	(empty body)
type Pingresp struct{}

// Disconnect ends a connection or, with a Duration, starts a sleep.
// MQTT-SN 1.2 §5.4.21, §6.14.
//
//	| Duration 2 (optional) |
//
// HasDuration says whether the Duration field is present (a gateway's
// DISCONNECT never has it). Append fails with ErrInvalidMessage if Duration
// is non-zero while HasDuration is false.
type Disconnect struct {
	Duration    uint16 // sleep duration in seconds
	HasDuration bool
}

// WillTopicUpd replaces the will topic of a connected client.
// MQTT-SN 1.2 §5.4.22, §6.4.
//
//	| Flags 1 | WillTopic n |    or an empty body
//
// As with WillTopic, the empty message (the zero value) deletes the will.
type WillTopicUpd struct {
	Flags Flags
	Topic string
}

// WillTopicResp answers a WILLTOPICUPD. MQTT-SN 1.2 §5.4.24.
//
//	| ReturnCode 1 |
type WillTopicResp struct {
	ReturnCode ReturnCode
}

// WillMsgUpd replaces the will message of a connected client.
// MQTT-SN 1.2 §5.4.23, §6.4.
//
//	| WillMsg n |
type WillMsgUpd struct {
	WillMsg []byte // may alias the decoded datagram
}

// WillMsgResp answers a WILLMSGUPD. MQTT-SN 1.2 §5.4.25.
//
//	| ReturnCode 1 |
type WillMsgResp struct {
	ReturnCode ReturnCode
}

// Encapsulated is a message relayed by a forwarder. MQTT-SN 1.2 §5.5.
//
//	+--------+------+------+----------------+--------------------------+
//	| Length | 0xFE | Ctrl | WirelessNodeId | MQTT-SN message          |
//	| 1      | 1    | 1    | n              | with its own header      |
//	+--------+------+------+----------------+--------------------------+
//
// Unlike every other message, Length counts only the encapsulation header
// (up to the end of WirelessNodeId); the inner message follows and fills the
// rest of the datagram. Ctrl bits 1–0 are the broadcast radius (gateway to
// forwarder); the other bits are reserved and kept as received. Inner is
// the decoded inner message; it is never itself an *Encapsulated.
type Encapsulated struct {
	Ctrl           uint8
	WirelessNodeID []byte // may alias the decoded datagram
	Inner          Message
}

// Radius returns the broadcast radius carried in Ctrl bits 1–0.
func (m *Encapsulated) Radius() uint8 { return m.Ctrl & 0x03 }

// Type returns the message type.
func (*Advertise) Type() MsgType { return MsgAdvertise }

// Type returns the message type.
func (*SearchGW) Type() MsgType { return MsgSearchGW }

// Type returns the message type.
func (*GWInfo) Type() MsgType { return MsgGWInfo }

// Type returns the message type.
func (*Connect) Type() MsgType { return MsgConnect }

// Type returns the message type.
func (*Connack) Type() MsgType { return MsgConnack }

// Type returns the message type.
func (*WillTopicReq) Type() MsgType { return MsgWillTopicReq }

// Type returns the message type.
func (*WillTopic) Type() MsgType { return MsgWillTopic }

// Type returns the message type.
func (*WillMsgReq) Type() MsgType { return MsgWillMsgReq }

// Type returns the message type.
func (*WillMsg) Type() MsgType { return MsgWillMsg }

// Type returns the message type.
func (*Register) Type() MsgType { return MsgRegister }

// Type returns the message type.
func (*Regack) Type() MsgType { return MsgRegack }

// Type returns the message type.
func (*Publish) Type() MsgType { return MsgPublish }

// Type returns the message type.
func (*Puback) Type() MsgType { return MsgPuback }

// Type returns the message type.
func (*Pubrec) Type() MsgType { return MsgPubrec }

// Type returns the message type.
func (*Pubrel) Type() MsgType { return MsgPubrel }

// Type returns the message type.
func (*Pubcomp) Type() MsgType { return MsgPubcomp }

// Type returns the message type.
func (*Subscribe) Type() MsgType { return MsgSubscribe }

// Type returns the message type.
func (*Suback) Type() MsgType { return MsgSuback }

// Type returns the message type.
func (*Unsubscribe) Type() MsgType { return MsgUnsubscribe }

// Type returns the message type.
func (*Unsuback) Type() MsgType { return MsgUnsuback }

// Type returns the message type.
func (*Pingreq) Type() MsgType { return MsgPingreq }

// Type returns the message type.
func (*Pingresp) Type() MsgType { return MsgPingresp }

// Type returns the message type.
func (*Disconnect) Type() MsgType { return MsgDisconnect }

// Type returns the message type.
func (*WillTopicUpd) Type() MsgType { return MsgWillTopicUpd }

// Type returns the message type.
func (*WillTopicResp) Type() MsgType { return MsgWillTopicResp }

// Type returns the message type.
func (*WillMsgUpd) Type() MsgType { return MsgWillMsgUpd }

// Type returns the message type.
func (*WillMsgResp) Type() MsgType { return MsgWillMsgResp }

// Type returns the message type.
func (*Encapsulated) Type() MsgType { return MsgEncapsulated }

// TypeOf is m.Type() for this package's message types, found with a type
// switch instead of a call through the interface, which would make the
// compiler move m to the heap (Append keeps its argument on the caller's
// stack). ok is false for a type of another package.
func TypeOf(m Message) (t MsgType, ok bool) {
	switch m.(type) {
	case *Advertise:
		return MsgAdvertise, true
	case *SearchGW:
		return MsgSearchGW, true
	case *GWInfo:
		return MsgGWInfo, true
	case *Connect:
		return MsgConnect, true
	case *Connack:
		return MsgConnack, true
	case *WillTopicReq:
		return MsgWillTopicReq, true
	case *WillTopic:
		return MsgWillTopic, true
	case *WillMsgReq:
		return MsgWillMsgReq, true
	case *WillMsg:
		return MsgWillMsg, true
	case *Register:
		return MsgRegister, true
	case *Regack:
		return MsgRegack, true
	case *Publish:
		return MsgPublish, true
	case *Puback:
		return MsgPuback, true
	case *Pubrec:
		return MsgPubrec, true
	case *Pubrel:
		return MsgPubrel, true
	case *Pubcomp:
		return MsgPubcomp, true
	case *Subscribe:
		return MsgSubscribe, true
	case *Suback:
		return MsgSuback, true
	case *Unsubscribe:
		return MsgUnsubscribe, true
	case *Unsuback:
		return MsgUnsuback, true
	case *Pingreq:
		return MsgPingreq, true
	case *Pingresp:
		return MsgPingresp, true
	case *Disconnect:
		return MsgDisconnect, true
	case *WillTopicUpd:
		return MsgWillTopicUpd, true
	case *WillTopicResp:
		return MsgWillTopicResp, true
	case *WillMsgUpd:
		return MsgWillMsgUpd, true
	case *WillMsgResp:
		return MsgWillMsgResp, true
	case *Encapsulated:
		return MsgEncapsulated, true
	}
	return 0, false
}
