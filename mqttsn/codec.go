package mqttsn

import (
	"encoding/binary"
	"fmt"
)

// MaxLength is the largest value of the Length field, hence the longest
// message (the 3-octet form, MQTT-SN 1.2 §5.2.1).
const MaxLength = 0xFFFF

// longLengthMark is the first octet of the 3-octet Length form (§5.2.1).
const longLengthMark = 0x01

// Decode decodes exactly one MQTT-SN message from a datagram.
//
// The Length field must equal len(b): a shorter datagram fails with
// ErrTruncated and trailing octets with ErrLengthMismatch. The one exception
// is the forwarder encapsulation (§5.5), whose Length covers only its own
// header; the inner message must then fill the rest of b exactly.
//
// Both forms of the Length field are accepted, the 3-octet one even for a
// short message. Byte slices in the result (Publish.Data, WillMsg.WillMsg,
// WillMsgUpd.WillMsg, GWInfo.GwAdd, Encapsulated.WirelessNodeID) alias b and
// are nil when empty; strings are copies. Decode never panics, and allocates
// at most the message struct plus its strings (a Decoder decodes the same
// without allocating for the per-datagram types).
//
// Errors wrap one of the sentinels of errors.go:
// "mqttsn: decode PUBLISH: truncated message".
func Decode(b []byte) (Message, error) {
	return decodeWith(nil, b)
}

// decodeWith is Decode, or Decoder.Decode when d is not nil.
func decodeWith(d *Decoder, b []byte) (Message, error) {
	m, t, known, err := decode(d, b, true)
	if err != nil {
		if !known {
			return nil, fmt.Errorf("mqttsn: decode: %w", err)
		}
		return nil, fmt.Errorf("mqttsn: decode %s: %w", t, err)
	}
	return m, nil
}

// header parses the Length and MsgType fields (§5.2). hdr is the header size,
// 2 or 4; known is false when b is too short to hold a MsgType.
func header(b []byte) (length, hdr int, t MsgType, known bool) {
	if len(b) < 2 {
		return 0, 0, 0, false
	}
	if b[0] == longLengthMark {
		if len(b) < 4 {
			return 0, 0, 0, false
		}
		return int(binary.BigEndian.Uint16(b[1:3])), 4, MsgType(b[3]), true
	}
	return int(b[0]), 2, MsgType(b[1]), true
}

// decode is Decode without the error prefix. outer is false for the message
// inside an encapsulation, which may not be encapsulated again. d is nil for
// Decode, which allocates every message.
func decode(d *Decoder, b []byte, outer bool) (m Message, t MsgType, known bool, err error) {
	length, hdr, t, known := header(b)
	if !known {
		return nil, 0, false, ErrTruncated
	}
	if !t.Known() {
		return nil, t, true, ErrUnknownType
	}
	if t == MsgEncapsulated {
		if !outer {
			return nil, t, true, ErrNestedEncapsulation
		}
		m, err := decodeEncapsulated(d, b, length, hdr)
		return m, t, true, err
	}
	switch {
	case length > len(b):
		return nil, t, true, ErrTruncated
	case length < len(b):
		return nil, t, true, ErrLengthMismatch
	}
	m, err = decodeBody(d, t, b[hdr:])
	return m, t, true, err
}

// decodeEncapsulated decodes a forwarder encapsulation. MQTT-SN 1.2 §5.5:
// Length counts Length, MsgType, Ctrl and WirelessNodeId; the inner message
// follows.
func decodeEncapsulated(d *Decoder, b []byte, length, hdr int) (Message, error) {
	switch {
	case length < hdr+1: // no room for Ctrl
		return nil, ErrLengthMismatch
	case length >= len(b): // no inner message
		return nil, ErrTruncated
	}
	inner, it, known, err := decode(d, b[length:], false)
	if err != nil {
		if !known {
			return nil, fmt.Errorf("inner message: %w", err)
		}
		return nil, fmt.Errorf("inner %s: %w", it, err)
	}
	return &Encapsulated{
		Ctrl:           b[hdr],
		WirelessNodeID: orNil(b[hdr+1 : length]),
		Inner:          inner,
	}, nil
}

// orNil returns b, or nil when b is empty, so that decoded empty fields
// compare equal to unset ones.
func orNil(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// exact checks that a fixed-size body has exactly n octets.
func exact(body []byte, n int) error {
	switch {
	case len(body) < n:
		return ErrTruncated
	case len(body) > n:
		return ErrExtraOctets
	}
	return nil
}

func u16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }

// decodeBody decodes the body after MsgType of every type but the
// encapsulation. Section numbers and layouts are beside the types in
// messages.go. The per-datagram types go into d's storage (see Decoder),
// which d.reuse* returns, or a new struct when d is nil; d.str copies a
// string.
func decodeBody(d *Decoder, t MsgType, body []byte) (Message, error) {
	switch t {
	case MsgAdvertise: // §5.4.1 GwId(1) Duration(2)
		if err := exact(body, 3); err != nil {
			return nil, err
		}
		return &Advertise{GwID: body[0], Duration: u16(body[1:])}, nil

	case MsgSearchGW: // §5.4.2 Radius(1)
		if err := exact(body, 1); err != nil {
			return nil, err
		}
		return &SearchGW{Radius: body[0]}, nil

	case MsgGWInfo: // §5.4.3 GwId(1) GwAdd(n)
		if len(body) < 1 {
			return nil, ErrTruncated
		}
		return &GWInfo{GwID: body[0], GwAdd: orNil(body[1:])}, nil

	case MsgConnect: // §5.4.4 Flags(1) ProtocolId(1) Duration(2) ClientId(n)
		if len(body) < 4 {
			return nil, ErrTruncated
		}
		if body[1] != ProtocolID12 {
			return nil, ErrBadProtocolID
		}
		return &Connect{
			Flags:      parseFlags(body[0]),
			ProtocolID: body[1],
			Duration:   u16(body[2:]),
			ClientID:   d.str(body[4:]),
		}, nil

	case MsgConnack: // §5.4.5 ReturnCode(1)
		if err := exact(body, 1); err != nil {
			return nil, err
		}
		return &Connack{ReturnCode: ReturnCode(body[0])}, nil

	case MsgWillTopicReq: // §5.4.6 empty
		if err := exact(body, 0); err != nil {
			return nil, err
		}
		return &WillTopicReq{}, nil

	case MsgWillTopic: // §5.4.7 [Flags(1) WillTopic(n)]
		if len(body) == 0 {
			return &WillTopic{}, nil
		}
		return &WillTopic{Flags: parseFlags(body[0]), Topic: d.str(body[1:])}, nil

	case MsgWillMsgReq: // §5.4.8 empty
		if err := exact(body, 0); err != nil {
			return nil, err
		}
		return &WillMsgReq{}, nil

	case MsgWillMsg: // §5.4.9 WillMsg(n)
		return &WillMsg{WillMsg: orNil(body)}, nil

	case MsgRegister: // §5.4.10 TopicId(2) MsgId(2) TopicName(n)
		if len(body) < 4 {
			return nil, ErrTruncated
		}
		m := d.reuseRegister()
		*m = Register{TopicID: u16(body), MsgID: u16(body[2:]), TopicName: d.str(body[4:])}
		return m, nil

	case MsgRegack: // §5.4.11 TopicId(2) MsgId(2) ReturnCode(1)
		if err := exact(body, 5); err != nil {
			return nil, err
		}
		m := d.reuseRegack()
		*m = Regack{TopicID: u16(body), MsgID: u16(body[2:]), ReturnCode: ReturnCode(body[4])}
		return m, nil

	case MsgPublish: // §5.4.12 Flags(1) TopicId(2) MsgId(2) Data(n)
		if len(body) < 5 {
			return nil, ErrTruncated
		}
		f := parseFlags(body[0])
		if f.TopicIDType == TopicReserved {
			return nil, ErrReservedTopicIDType
		}
		m := d.reusePublish()
		*m = Publish{Flags: f, TopicID: u16(body[1:]), MsgID: u16(body[3:]), Data: orNil(body[5:])}
		return m, nil

	case MsgPuback: // §5.4.13 TopicId(2) MsgId(2) ReturnCode(1)
		if err := exact(body, 5); err != nil {
			return nil, err
		}
		m := d.reusePuback()
		*m = Puback{TopicID: u16(body), MsgID: u16(body[2:]), ReturnCode: ReturnCode(body[4])}
		return m, nil

	case MsgPubcomp, MsgPubrec, MsgPubrel, MsgUnsuback: // §5.4.14, §5.4.18 MsgId(2)
		if err := exact(body, 2); err != nil {
			return nil, err
		}
		id := u16(body)
		switch t {
		case MsgPubcomp:
			m := d.reusePubcomp()
			*m = Pubcomp{MsgID: id}
			return m, nil
		case MsgPubrec:
			m := d.reusePubrec()
			*m = Pubrec{MsgID: id}
			return m, nil
		case MsgPubrel:
			m := d.reusePubrel()
			*m = Pubrel{MsgID: id}
			return m, nil
		default:
			return &Unsuback{MsgID: id}, nil
		}

	case MsgSubscribe, MsgUnsubscribe: // §5.4.15, §5.4.17 Flags(1) MsgId(2) TopicName(n) | TopicId(2)
		f, id, name, topicID, err := decodeTopicRequest(d, body)
		if err != nil {
			return nil, err
		}
		if t == MsgSubscribe {
			return &Subscribe{Flags: f, MsgID: id, TopicName: name, TopicID: topicID}, nil
		}
		return &Unsubscribe{Flags: f, MsgID: id, TopicName: name, TopicID: topicID}, nil

	case MsgSuback: // §5.4.16 Flags(1) TopicId(2) MsgId(2) ReturnCode(1)
		if err := exact(body, 6); err != nil {
			return nil, err
		}
		return &Suback{
			Flags:      parseFlags(body[0]),
			TopicID:    u16(body[1:]),
			MsgID:      u16(body[3:]),
			ReturnCode: ReturnCode(body[5]),
		}, nil

	case MsgPingreq: // §5.4.19 [ClientId(n)]
		m := d.reusePingreq()
		*m = Pingreq{ClientID: d.str(body)}
		return m, nil

	case MsgPingresp: // §5.4.20 empty
		if err := exact(body, 0); err != nil {
			return nil, err
		}
		m := d.reusePingresp()
		*m = Pingresp{}
		return m, nil

	case MsgDisconnect: // §5.4.21 [Duration(2)]
		switch len(body) {
		case 0:
			return &Disconnect{}, nil
		case 1:
			return nil, ErrTruncated
		case 2:
			return &Disconnect{Duration: u16(body), HasDuration: true}, nil
		}
		return nil, ErrExtraOctets

	case MsgWillTopicUpd: // §5.4.22 [Flags(1) WillTopic(n)]
		if len(body) == 0 {
			return &WillTopicUpd{}, nil
		}
		return &WillTopicUpd{Flags: parseFlags(body[0]), Topic: d.str(body[1:])}, nil

	case MsgWillTopicResp: // §5.4.24 ReturnCode(1)
		if err := exact(body, 1); err != nil {
			return nil, err
		}
		return &WillTopicResp{ReturnCode: ReturnCode(body[0])}, nil

	case MsgWillMsgUpd: // §5.4.23 WillMsg(n)
		return &WillMsgUpd{WillMsg: orNil(body)}, nil

	case MsgWillMsgResp: // §5.4.25 ReturnCode(1)
		if err := exact(body, 1); err != nil {
			return nil, err
		}
		return &WillMsgResp{ReturnCode: ReturnCode(body[0])}, nil
	}
	return nil, ErrUnknownType
}

// decodeTopicRequest decodes the common body of SUBSCRIBE and UNSUBSCRIBE
// (§5.4.15, §5.4.17): a topic name for TopicNormal, two octets otherwise.
func decodeTopicRequest(d *Decoder, body []byte) (f Flags, msgID uint16, name string, topicID uint16, err error) {
	if len(body) < 3 {
		return f, 0, "", 0, ErrTruncated
	}
	f = parseFlags(body[0])
	msgID = u16(body[1:])
	switch f.TopicIDType {
	case TopicNormal:
		return f, msgID, d.str(body[3:]), 0, nil
	case TopicPredefined, TopicShort:
		if err := exact(body[3:], 2); err != nil {
			return f, 0, "", 0, err
		}
		return f, msgID, "", u16(body[3:]), nil
	}
	return f, 0, "", 0, ErrReservedTopicIDType
}

// Append encodes m and appends it to dst. It picks the 1-octet Length form
// when the whole message fits in 255 octets, else the 3-octet form; a message
// longer than MaxLength fails with ErrTooLong. On error dst is returned
// unchanged (same length). m must be one of this package's message pointers,
// not nil (another type fails with ErrUnknownType). Errors read
// "mqttsn: encode PUBLISH: invalid QoS".
//
// Append allocates nothing when dst has room, and m does not escape: a
// caller may pass &Puback{...} built on its stack. (Append never calls a
// method through the Message interface, which would move m to the heap.)
func Append(dst []byte, m Message) ([]byte, error) {
	if m == nil {
		return dst, fmt.Errorf("mqttsn: encode: nil message: %w", ErrInvalidMessage)
	}
	t, ok := TypeOf(m)
	if !ok {
		return dst, fmt.Errorf("mqttsn: encode: %w", ErrUnknownType)
	}
	out, err := appendMessage(dst, m, t, true)
	if err != nil {
		return dst, fmt.Errorf("mqttsn: encode %s: %w", t, err)
	}
	return out, nil
}

// appendMessage is Append without the error prefix; t is TypeOf(m).
func appendMessage(dst []byte, m Message, t MsgType, outer bool) ([]byte, error) {
	start := len(dst)
	// Reserve the short header; finishHeader widens it if needed.
	dst = append(dst, 0, byte(t))
	var err error
	switch v := m.(type) {
	case *Advertise:
		dst = append(dst, v.GwID)
		dst = binary.BigEndian.AppendUint16(dst, v.Duration)
	case *SearchGW:
		dst = append(dst, v.Radius)
	case *GWInfo:
		dst = append(dst, v.GwID)
		dst = append(dst, v.GwAdd...)
	case *Connect:
		pid := v.ProtocolID
		if pid == 0 {
			pid = ProtocolID12
		}
		if pid != ProtocolID12 {
			return dst[:start], ErrBadProtocolID
		}
		if dst, err = appendFlags(dst, v.Flags); err != nil {
			return dst[:start], err
		}
		dst = append(dst, pid)
		dst = binary.BigEndian.AppendUint16(dst, v.Duration)
		dst = append(dst, v.ClientID...)
	case *Connack:
		dst = append(dst, byte(v.ReturnCode))
	case *WillTopicReq, *WillMsgReq, *Pingresp:
		// empty body
	case *WillTopic:
		if dst, err = appendWillTopic(dst, v.Flags, v.Topic); err != nil {
			return dst[:start], err
		}
	case *WillMsg:
		dst = append(dst, v.WillMsg...)
	case *Register:
		dst = binary.BigEndian.AppendUint16(dst, v.TopicID)
		dst = binary.BigEndian.AppendUint16(dst, v.MsgID)
		dst = append(dst, v.TopicName...)
	case *Regack:
		dst = binary.BigEndian.AppendUint16(dst, v.TopicID)
		dst = binary.BigEndian.AppendUint16(dst, v.MsgID)
		dst = append(dst, byte(v.ReturnCode))
	case *Publish:
		if v.Flags.TopicIDType == TopicReserved {
			return dst[:start], ErrReservedTopicIDType
		}
		if dst, err = appendFlags(dst, v.Flags); err != nil {
			return dst[:start], err
		}
		dst = binary.BigEndian.AppendUint16(dst, v.TopicID)
		dst = binary.BigEndian.AppendUint16(dst, v.MsgID)
		dst = append(dst, v.Data...)
	case *Puback:
		dst = binary.BigEndian.AppendUint16(dst, v.TopicID)
		dst = binary.BigEndian.AppendUint16(dst, v.MsgID)
		dst = append(dst, byte(v.ReturnCode))
	case *Pubrec:
		dst = binary.BigEndian.AppendUint16(dst, v.MsgID)
	case *Pubrel:
		dst = binary.BigEndian.AppendUint16(dst, v.MsgID)
	case *Pubcomp:
		dst = binary.BigEndian.AppendUint16(dst, v.MsgID)
	case *Subscribe:
		if dst, err = appendTopicRequest(dst, v.Flags, v.MsgID, v.TopicName, v.TopicID); err != nil {
			return dst[:start], err
		}
	case *Suback:
		if dst, err = appendFlags(dst, v.Flags); err != nil {
			return dst[:start], err
		}
		dst = binary.BigEndian.AppendUint16(dst, v.TopicID)
		dst = binary.BigEndian.AppendUint16(dst, v.MsgID)
		dst = append(dst, byte(v.ReturnCode))
	case *Unsubscribe:
		if dst, err = appendTopicRequest(dst, v.Flags, v.MsgID, v.TopicName, v.TopicID); err != nil {
			return dst[:start], err
		}
	case *Unsuback:
		dst = binary.BigEndian.AppendUint16(dst, v.MsgID)
	case *Pingreq:
		dst = append(dst, v.ClientID...)
	case *Disconnect:
		if v.HasDuration {
			dst = binary.BigEndian.AppendUint16(dst, v.Duration)
		} else if v.Duration != 0 {
			return dst[:start], ErrInvalidMessage
		}
	case *WillTopicUpd:
		if dst, err = appendWillTopic(dst, v.Flags, v.Topic); err != nil {
			return dst[:start], err
		}
	case *WillTopicResp:
		dst = append(dst, byte(v.ReturnCode))
	case *WillMsgUpd:
		dst = append(dst, v.WillMsg...)
	case *WillMsgResp:
		dst = append(dst, byte(v.ReturnCode))
	case *Encapsulated:
		if !outer {
			return dst[:start], ErrNestedEncapsulation
		}
		if v.Inner == nil {
			return dst[:start], ErrInvalidMessage
		}
		it, ok := TypeOf(v.Inner)
		if !ok {
			return dst[:start], fmt.Errorf("inner message: %w", ErrUnknownType)
		}
		dst = append(dst, v.Ctrl)
		dst = append(dst, v.WirelessNodeID...)
		if dst, err = finishHeader(dst, start); err != nil {
			return dst[:start], err
		}
		// §5.5: the inner message follows the header Length counts.
		if dst, err = appendMessage(dst, v.Inner, it, false); err != nil {
			return dst[:start], fmt.Errorf("inner %s: %w", it, err)
		}
		return dst, nil
	default:
		return dst[:start], ErrUnknownType
	}
	if dst, err = finishHeader(dst, start); err != nil {
		return dst[:start], err
	}
	return dst, nil
}

// finishHeader fills in the Length of the message that starts at dst[start]
// with a 2-octet header reserved, switching to the 3-octet form (§5.2.1) when
// the message is longer than 255 octets.
func finishHeader(dst []byte, start int) ([]byte, error) {
	n := len(dst) - start
	if n <= 0xFF {
		dst[start] = byte(n)
		return dst, nil
	}
	n += 2
	if n > MaxLength {
		return dst, ErrTooLong
	}
	dst = append(dst, 0, 0)
	copy(dst[start+4:], dst[start+2:len(dst)-2])
	t := dst[start+1]
	dst[start] = longLengthMark
	binary.BigEndian.PutUint16(dst[start+1:], uint16(n))
	dst[start+3] = t
	return dst, nil
}

func appendFlags(dst []byte, f Flags) ([]byte, error) {
	b, err := f.octet()
	if err != nil {
		return dst, err
	}
	return append(dst, b), nil
}

// appendWillTopic encodes the body of WILLTOPIC and WILLTOPICUPD (§5.4.7,
// §5.4.22): nothing at all for the zero value, which deletes the will.
func appendWillTopic(dst []byte, f Flags, topic string) ([]byte, error) {
	if f == (Flags{}) && topic == "" {
		return dst, nil
	}
	dst, err := appendFlags(dst, f)
	if err != nil {
		return dst, err
	}
	return append(dst, topic...), nil
}

// appendTopicRequest encodes the body of SUBSCRIBE and UNSUBSCRIBE (§5.4.15,
// §5.4.17).
func appendTopicRequest(dst []byte, f Flags, msgID uint16, name string, topicID uint16) ([]byte, error) {
	switch f.TopicIDType {
	case TopicNormal:
		if topicID != 0 {
			return dst, ErrInvalidMessage
		}
	case TopicPredefined, TopicShort:
		if name != "" {
			return dst, ErrInvalidMessage
		}
	case TopicReserved:
		return dst, ErrReservedTopicIDType
	}
	dst, err := appendFlags(dst, f)
	if err != nil {
		return dst, err
	}
	dst = binary.BigEndian.AppendUint16(dst, msgID)
	if f.TopicIDType == TopicNormal {
		return append(dst, name...), nil
	}
	return binary.BigEndian.AppendUint16(dst, topicID), nil
}
