package store

import (
	"fmt"
	"time"
)

// Message is one upstream publish in the store-and-forward queue: what the
// gateway will publish to the broker once it is back, and whose device it
// came from.
type Message struct {
	// Seq is the message's place in the queue, given by Append: 1, 2, 3 ...
	// in the order of the appends, never reused, also after a restart. It is
	// the record's key, not part of its encoding.
	Seq uint64
	// Device and Listener say whose publish it is (the device's id in the
	// session registry, the listener's name), for per-device replay order
	// and for counting.
	Device, Listener string
	// Topic, Payload, QoS and Retain are the MQTT publish as mapping made it.
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	// Enqueued is when the gateway took the publish, from the caller's clock
	// (the store reads no clock), kept to Unix nanoseconds in UTC.
	Enqueued time.Time
}

// messageVersion is the version of the message record this build writes and
// the newest it reads.
const messageVersion = 1

// Message record, version 1 (the record format is in record.go):
//
//	 0      version = 1
//	 1      flags: bits 0-1 QoS (0, 1 or 2), bit 2 Retain, bits 3-7 zero
//	 2- 9   Enqueued: int64 Unix nanoseconds, big-endian, 0 = zero Time
//	10-11   Device length D, then D octets
//	 ...    Listener: Uint16 length + octets
//	 ...    Topic: Uint16 length + octets (an MQTT topic is at most 65535 octets)
//	 ...    Payload: Uint32 length + octets
//
// The fixed part is 1+1+8+2+2+2+4 = 20 octets (messageOverhead).
const (
	flagQoSMask  = 0x03
	flagRetain   = 0x04
	flagReserved = 0xF8

	messageOverhead = 20
)

// AppendMessage appends m's record to buf (which may be nil); m.Seq is not
// part of it. A QoS above 2, a Device, Listener or Topic longer than 65535
// octets, or an Enqueued outside the years 1677 to 2262 is an error.
func AppendMessage(buf []byte, m Message) ([]byte, error) {
	out, err := appendMessage(buf, m)
	if err != nil {
		return nil, fmt.Errorf("store: encode message: %w", err)
	}
	return out, nil
}

func appendMessage(buf []byte, m Message) ([]byte, error) {
	if m.QoS > 2 {
		return nil, fmt.Errorf("QoS %d: %w", m.QoS, ErrBadValue)
	}
	flags := m.QoS
	if m.Retain {
		flags |= flagRetain
	}
	e := NewEncoder(buf, messageVersion)
	e.Uint8(flags)
	e.Time(m.Enqueued)
	e.Str(m.Device)
	e.Str(m.Listener)
	e.Str(m.Topic)
	e.Bytes(m.Payload)
	return e.Finish()
}

// DecodeMessage decodes one message record (Seq stays 0: it is the key). It
// never panics: hostile or damaged bytes give an error wrapping ErrTruncated,
// ErrTrailing, ErrRecordVersion or ErrBadValue. The Message shares no memory
// with b.
func DecodeMessage(b []byte) (Message, error) {
	m, err := decodeMessage(b)
	if err != nil {
		return Message{}, fmt.Errorf("store: decode message: %w", err)
	}
	return m, nil
}

func decodeMessage(b []byte) (Message, error) {
	d := NewDecoder(b, messageVersion)
	flags := messageFlags(&d)
	m := Message{QoS: flags & flagQoSMask, Retain: flags&flagRetain != 0}
	m.Enqueued = d.Time()
	m.Device = d.Str()
	m.Listener = d.Str()
	m.Topic = d.Str()
	m.Payload = d.Bytes()
	if err := d.Finish(); err != nil {
		return Message{}, err
	}
	return m, nil
}

func messageFlags(d *Decoder) byte {
	flags := d.Uint8()
	if d.Err() == nil && (flags&flagReserved != 0 || flags&flagQoSMask == 3) {
		d.Fail(fmt.Errorf("flags %#02x: %w", flags, ErrBadValue))
	}
	return flags
}

// checkMessage is decodeMessage without building the Message: Open checks
// every queue record with it, without copying their payloads. FuzzDecodeMessage
// checks that both agree.
func checkMessage(b []byte) error {
	d := NewDecoder(b, messageVersion)
	messageFlags(&d)
	d.Uint64() // Enqueued
	d.skip(int(d.Uint16()), "device")
	d.skip(int(d.Uint16()), "listener")
	d.skip(int(d.Uint16()), "topic")
	d.skip(int(d.Uint32()), "payload")
	return d.Finish()
}
