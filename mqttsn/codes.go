package mqttsn

import (
	"fmt"
	"strconv"
)

// MsgType is the MsgType octet of an MQTT-SN message header.
// MQTT-SN 1.2 §5.2.2, Table 3.
type MsgType uint8

// Message types of MQTT-SN 1.2 (§5.2.2, Table 3). The values not listed
// (0x03, 0x11, 0x19, 0x1E–0xFD, 0xFF) are reserved; Decode rejects them with
// ErrUnknownType.
const (
	MsgAdvertise     MsgType = 0x00 // ADVERTISE, §5.4.1
	MsgSearchGW      MsgType = 0x01 // SEARCHGW, §5.4.2
	MsgGWInfo        MsgType = 0x02 // GWINFO, §5.4.3
	MsgConnect       MsgType = 0x04 // CONNECT, §5.4.4
	MsgConnack       MsgType = 0x05 // CONNACK, §5.4.5
	MsgWillTopicReq  MsgType = 0x06 // WILLTOPICREQ, §5.4.6
	MsgWillTopic     MsgType = 0x07 // WILLTOPIC, §5.4.7
	MsgWillMsgReq    MsgType = 0x08 // WILLMSGREQ, §5.4.8
	MsgWillMsg       MsgType = 0x09 // WILLMSG, §5.4.9
	MsgRegister      MsgType = 0x0A // REGISTER, §5.4.10
	MsgRegack        MsgType = 0x0B // REGACK, §5.4.11
	MsgPublish       MsgType = 0x0C // PUBLISH, §5.4.12
	MsgPuback        MsgType = 0x0D // PUBACK, §5.4.13
	MsgPubcomp       MsgType = 0x0E // PUBCOMP, §5.4.14
	MsgPubrec        MsgType = 0x0F // PUBREC, §5.4.14
	MsgPubrel        MsgType = 0x10 // PUBREL, §5.4.14
	MsgSubscribe     MsgType = 0x12 // SUBSCRIBE, §5.4.15
	MsgSuback        MsgType = 0x13 // SUBACK, §5.4.16
	MsgUnsubscribe   MsgType = 0x14 // UNSUBSCRIBE, §5.4.17
	MsgUnsuback      MsgType = 0x15 // UNSUBACK, §5.4.18
	MsgPingreq       MsgType = 0x16 // PINGREQ, §5.4.19
	MsgPingresp      MsgType = 0x17 // PINGRESP, §5.4.20
	MsgDisconnect    MsgType = 0x18 // DISCONNECT, §5.4.21
	MsgWillTopicUpd  MsgType = 0x1A // WILLTOPICUPD, §5.4.22
	MsgWillTopicResp MsgType = 0x1B // WILLTOPICRESP, §5.4.24
	MsgWillMsgUpd    MsgType = 0x1C // WILLMSGUPD, §5.4.23
	MsgWillMsgResp   MsgType = 0x1D // WILLMSGRESP, §5.4.25
	MsgEncapsulated  MsgType = 0xFE // Encapsulated message, §5.5
)

var msgTypeNames = [...]string{
	MsgAdvertise:     "ADVERTISE",
	MsgSearchGW:      "SEARCHGW",
	MsgGWInfo:        "GWINFO",
	MsgConnect:       "CONNECT",
	MsgConnack:       "CONNACK",
	MsgWillTopicReq:  "WILLTOPICREQ",
	MsgWillTopic:     "WILLTOPIC",
	MsgWillMsgReq:    "WILLMSGREQ",
	MsgWillMsg:       "WILLMSG",
	MsgRegister:      "REGISTER",
	MsgRegack:        "REGACK",
	MsgPublish:       "PUBLISH",
	MsgPuback:        "PUBACK",
	MsgPubcomp:       "PUBCOMP",
	MsgPubrec:        "PUBREC",
	MsgPubrel:        "PUBREL",
	MsgSubscribe:     "SUBSCRIBE",
	MsgSuback:        "SUBACK",
	MsgUnsubscribe:   "UNSUBSCRIBE",
	MsgUnsuback:      "UNSUBACK",
	MsgPingreq:       "PINGREQ",
	MsgPingresp:      "PINGRESP",
	MsgDisconnect:    "DISCONNECT",
	MsgWillTopicUpd:  "WILLTOPICUPD",
	MsgWillTopicResp: "WILLTOPICRESP",
	MsgWillMsgUpd:    "WILLMSGUPD",
	MsgWillMsgResp:   "WILLMSGRESP",
}

// Known reports whether t is a message type defined by MQTT-SN 1.2.
func (t MsgType) Known() bool {
	if t == MsgEncapsulated {
		return true
	}
	return int(t) < len(msgTypeNames) && msgTypeNames[t] != ""
}

// String returns the specification's name of the type ("PUBLISH"), or
// "MsgType(0x03)" for a reserved value.
func (t MsgType) String() string {
	if t == MsgEncapsulated {
		return "ENCAPSULATED"
	}
	if t.Known() {
		return msgTypeNames[t]
	}
	return fmt.Sprintf("MsgType(0x%02X)", uint8(t))
}

// ReturnCode is the ReturnCode octet of CONNACK, REGACK, PUBACK, SUBACK,
// WILLTOPICRESP and WILLMSGRESP. MQTT-SN 1.2 §5.3.10, Table 5.
//
// Every code other than Accepted is a rejection and satisfies error, so a
// caller can return it directly and test for it with errors.Is.
type ReturnCode uint8

// Return codes of MQTT-SN 1.2 (§5.3.10). 0x04–0xFF are reserved.
const (
	Accepted       ReturnCode = 0x00 // accepted
	Congestion     ReturnCode = 0x01 // rejected: congestion
	InvalidTopicID ReturnCode = 0x02 // rejected: invalid topic ID
	NotSupported   ReturnCode = 0x03 // rejected: not supported
)

// String describes the code as the specification does ("rejected:
// congestion").
func (c ReturnCode) String() string {
	switch c {
	case Accepted:
		return "accepted"
	case Congestion:
		return "rejected: congestion"
	case InvalidTopicID:
		return "rejected: invalid topic ID"
	case NotSupported:
		return "rejected: not supported"
	}
	return fmt.Sprintf("ReturnCode(0x%02X)", uint8(c))
}

// Error makes a rejection code usable as an error. Use Err to turn a code
// into an error that is nil for Accepted.
func (c ReturnCode) Error() string { return c.String() }

// Err returns nil for Accepted and c itself for any other code.
func (c ReturnCode) Err() error {
	if c == Accepted {
		return nil
	}
	return c
}

// TopicIDType is the TopicIdType field of Flags (bits 1–0).
// MQTT-SN 1.2 §5.3.4, §3 (topic ids), §6.7.
type TopicIDType uint8

// Topic id types. TopicReserved (0b11) is rejected by Decode in PUBLISH,
// SUBSCRIBE and UNSUBSCRIBE with ErrReservedTopicIDType.
const (
	// TopicNormal: a topic id registered with REGISTER, or (SUBSCRIBE,
	// UNSUBSCRIBE) a topic name carried in full.
	TopicNormal TopicIDType = 0
	// TopicPredefined: a topic id agreed out of band. §6.7.
	TopicPredefined TopicIDType = 1
	// TopicShort: a two-character topic name carried in the two topic id
	// octets. §6.7.
	TopicShort TopicIDType = 2
	// TopicReserved is the reserved value 0b11.
	TopicReserved TopicIDType = 3
)

// String returns "normal", "predefined", "short" or "reserved".
func (t TopicIDType) String() string {
	switch t {
	case TopicNormal:
		return "normal"
	case TopicPredefined:
		return "predefined"
	case TopicShort:
		return "short"
	case TopicReserved:
		return "reserved"
	}
	return "TopicIDType(" + strconv.Itoa(int(t)) + ")"
}

// QoS is an MQTT-SN quality of service level: -1, 0, 1 or 2.
// MQTT-SN 1.2 §5.3.4 (flag bits 11 mean -1), §6.8 (QoS -1).
type QoS int8

// QoS levels.
const (
	QoSMinusOne QoS = -1 // fire and forget without a connection, §6.8
	QoS0        QoS = 0  // at most once
	QoS1        QoS = 1  // at least once
	QoS2        QoS = 2  // exactly once
)

// Valid reports whether q is one of -1, 0, 1, 2.
func (q QoS) Valid() bool { return q >= -1 && q <= 2 }

// String returns "-1", "0", "1" or "2" (or "QoS(n)" for an invalid value).
func (q QoS) String() string {
	if q.Valid() {
		return strconv.Itoa(int(q))
	}
	return "QoS(" + strconv.Itoa(int(q)) + ")"
}

// Flags is the Flags octet of CONNECT, WILLTOPIC, PUBLISH, SUBSCRIBE, SUBACK,
// UNSUBSCRIBE and WILLTOPICUPD. MQTT-SN 1.2 §5.3.4, Table 4:
//
//	  7     6  5     4       3        2          1  0
//	+-----+-------+--------+------+--------------+-------------+
//	| DUP |  QoS  | Retain | Will | CleanSession | TopicIdType |
//	+-----+-------+--------+------+--------------+-------------+
//
// QoS bits 00, 01, 10, 11 mean 0, 1, 2, -1. Every bit pattern decodes to a
// distinct Flags value, so flags survive a decode/encode round trip even in
// messages where the specification says a bit is unused.
type Flags struct {
	DUP          bool        // bit 7: retransmission of PUBLISH or SUBSCRIBE
	QoS          QoS         // bits 6–5
	Retain       bool        // bit 4
	Will         bool        // bit 3: CONNECT asks for the will exchange
	CleanSession bool        // bit 2
	TopicIDType  TopicIDType // bits 1–0
}

const (
	flagDUP          = 0x80
	flagQoSMask      = 0x60
	flagRetain       = 0x10
	flagWill         = 0x08
	flagCleanSession = 0x04
	flagTopicIDMask  = 0x03
)

// parseFlags decodes a Flags octet. It never fails: the reserved topic id
// type is checked by the messages that use the field.
func parseFlags(b byte) Flags {
	f := Flags{
		DUP:          b&flagDUP != 0,
		Retain:       b&flagRetain != 0,
		Will:         b&flagWill != 0,
		CleanSession: b&flagCleanSession != 0,
		TopicIDType:  TopicIDType(b & flagTopicIDMask),
	}
	switch (b & flagQoSMask) >> 5 {
	case 0:
		f.QoS = QoS0
	case 1:
		f.QoS = QoS1
	case 2:
		f.QoS = QoS2
	case 3:
		f.QoS = QoSMinusOne
	}
	return f
}

// octet encodes f, or fails with ErrBadQoS or ErrBadTopicIDType for values
// that have no bit pattern.
func (f Flags) octet() (byte, error) {
	var b byte
	switch f.QoS {
	case QoS0:
	case QoS1:
		b |= 1 << 5
	case QoS2:
		b |= 2 << 5
	case QoSMinusOne:
		b |= 3 << 5
	default:
		return 0, ErrBadQoS
	}
	if f.TopicIDType > TopicReserved {
		return 0, ErrBadTopicIDType
	}
	b |= byte(f.TopicIDType)
	if f.DUP {
		b |= flagDUP
	}
	if f.Retain {
		b |= flagRetain
	}
	if f.Will {
		b |= flagWill
	}
	if f.CleanSession {
		b |= flagCleanSession
	}
	return b, nil
}

// ShortTopicID packs a two-character short topic name into the 16-bit value
// carried in the TopicId field (first character in the high octet).
// MQTT-SN 1.2 §3, §6.7. The name must be exactly two octets long.
func ShortTopicID(name string) (uint16, error) {
	if len(name) != 2 {
		return 0, fmt.Errorf("mqttsn: short topic name %q: %w", name, ErrShortTopicName)
	}
	return uint16(name[0])<<8 | uint16(name[1]), nil
}

// ShortTopicName is the inverse of ShortTopicID: the two characters carried
// in a TopicId field whose TopicIdType is TopicShort.
func ShortTopicName(id uint16) string {
	return string([]byte{byte(id >> 8), byte(id)})
}
