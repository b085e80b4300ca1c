package mqttsn

import "errors"

// Codec errors. Decode and Append wrap them with the message type, e.g.
// "mqttsn: decode PUBLISH: truncated message"; test with errors.Is.
var (
	// ErrTruncated: the datagram is shorter than its Length field, or ends before a field is complete.
	ErrTruncated = errors.New("truncated message")
	// ErrLengthMismatch: the datagram is longer than its Length field, or Length is smaller than the header.
	ErrLengthMismatch = errors.New("length field does not match datagram size")
	// ErrExtraOctets: a message whose fields have fixed sizes carries more octets than those fields.
	ErrExtraOctets = errors.New("extra octets after the last field")
	// ErrUnknownType: the MsgType octet is reserved in MQTT-SN 1.2, or Append got a type it does not know.
	ErrUnknownType = errors.New("unknown message type")
	// ErrBadProtocolID: a CONNECT carries a ProtocolId other than 0x01.
	ErrBadProtocolID = errors.New("protocol ID is not 0x01")
	// ErrReservedTopicIDType: PUBLISH, SUBSCRIBE or UNSUBSCRIBE uses the reserved TopicIdType 0b11.
	ErrReservedTopicIDType = errors.New("reserved topic ID type")
	// ErrNestedEncapsulation: an encapsulated message contains another encapsulated message.
	ErrNestedEncapsulation = errors.New("nested encapsulation")
	// ErrTooLong: the encoded message would exceed 65535 octets, the largest Length.
	ErrTooLong = errors.New("message longer than 65535 octets")
	// ErrBadQoS: a QoS value is not -1, 0, 1 or 2, or is not allowed in this place.
	ErrBadQoS = errors.New("invalid QoS")
	// ErrBadTopicIDType: a TopicIDType value does not fit in two bits, or is not allowed in this place.
	ErrBadTopicIDType = errors.New("invalid topic ID type")
	// ErrInvalidMessage: Append got a message whose fields contradict each other (see the field's doc).
	ErrInvalidMessage = errors.New("inconsistent message fields")
	// ErrShortTopicName: a short topic name is not exactly two octets long.
	ErrShortTopicName = errors.New("short topic name must be two octets")
)

// Client errors.
var (
	// ErrClosed: the Client was closed before or during the call.
	ErrClosed = errors.New("client closed")
	// ErrNoResponse: the gateway did not answer the first transmission nor MaxRetries retransmissions.
	ErrNoResponse = errors.New("no response from gateway")
	// ErrRefused: the gateway's host answered with ICMP port unreachable: nothing listens at its address (errors.Is with syscall.ECONNREFUSED holds too).
	ErrRefused = errors.New("port unreachable: nothing listens there")
)
