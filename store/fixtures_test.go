package store

import (
	"strings"
	"time"
)

// messageFixture is one valid message and its record. The table is shared by
// the encode and decode tests and the fuzz seed corpus (f.Add in
// FuzzDecodeMessage and the files in testdata/fuzz/FuzzDecodeMessage, which
// TestFuzzCorpusMatchesFixtures keeps in sync).
type messageFixture struct {
	name string
	msg  Message
	raw  []byte
}

// t0 is 2025-01-02T03:04:05.000000006Z = 0x1816C11EEEF33206 ns after the epoch.
var t0 = time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)

var messageFixtures = []messageFixture{
	{
		name: "qos1",
		msg:  Message{Device: "d1", Listener: "sn", Topic: "a/b", Payload: []byte("hi"), QoS: 1, Enqueued: t0},
		raw: []byte{
			0x01,                                           // version 1
			0x01,                                           // flags: QoS 1
			0x18, 0x16, 0xC1, 0x1E, 0xEE, 0xF3, 0x32, 0x06, // Enqueued t0 in Unix ns
			0x00, 0x02, 'd', '1', // Device "d1"
			0x00, 0x02, 's', 'n', // Listener "sn"
			0x00, 0x03, 'a', '/', 'b', // Topic "a/b"
			0x00, 0x00, 0x00, 0x02, 'h', 'i', // Payload "hi"
		},
	},
	{
		name: "qos2_retain",
		msg:  Message{Device: "d", Listener: "l", Topic: "t", Payload: []byte{0x00, 0xFF}, QoS: 2, Retain: true, Enqueued: t0},
		raw: []byte{
			0x01,                                           // version 1
			0x06,                                           // flags: QoS 2 | Retain
			0x18, 0x16, 0xC1, 0x1E, 0xEE, 0xF3, 0x32, 0x06, // Enqueued t0
			0x00, 0x01, 'd', // Device "d"
			0x00, 0x01, 'l', // Listener "l"
			0x00, 0x01, 't', // Topic "t"
			0x00, 0x00, 0x00, 0x02, 0x00, 0xFF, // Payload 00 FF
		},
	},
	{
		name: "empty",
		msg:  Message{},
		raw: []byte{
			0x01,                                           // version 1
			0x00,                                           // flags: QoS 0
			0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // Enqueued: zero Time
			0x00, 0x00, // Device ""
			0x00, 0x00, // Listener ""
			0x00, 0x00, // Topic ""
			0x00, 0x00, 0x00, 0x00, // Payload empty (decodes as nil)
		},
	},
	{
		name: "before_epoch",
		msg:  Message{Topic: "x", QoS: 1, Enqueued: time.Unix(0, -1).UTC()},
		raw: []byte{
			0x01,                                           // version 1
			0x01,                                           // flags: QoS 1
			0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, // Enqueued: 1 ns before the epoch (int64 -1)
			0x00, 0x00, // Device ""
			0x00, 0x00, // Listener ""
			0x00, 0x01, 'x', // Topic "x"
			0x00, 0x00, 0x00, 0x00, // Payload empty
		},
	},
	{
		name: "long_topic",
		msg:  Message{Topic: strings.Repeat("t", 300), QoS: 1},
		raw: append(append([]byte{
			0x01,                                           // version 1
			0x01,                                           // flags: QoS 1
			0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // Enqueued: zero Time
			0x00, 0x00, // Device ""
			0x00, 0x00, // Listener ""
			0x01, 0x2C, // Topic length 300, then 300 × 't'
		}, strings.Repeat("t", 300)...),
			0x00, 0x00, 0x00, 0x00, // Payload empty
		),
	},
}

// messageDecodeErrors are records DecodeMessage must refuse, with the
// sentinel it must wrap. They are seeds of FuzzDecodeMessage too ("err_<name>").
var messageDecodeErrors = []struct {
	name string
	raw  []byte
	want error
}{
	{"empty", []byte{}, ErrTruncated},
	{"version_0", []byte{0x00, 0x01}, ErrRecordVersion},
	{"version_2", append([]byte{0x02}, messageFixtures[0].raw[1:]...), ErrRecordVersion},
	{"qos_3", []byte{
		0x01, // version 1
		0x03, // flags: QoS 3, reserved
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	}, ErrBadValue},
	{"reserved_flag", []byte{
		0x01, // version 1
		0x09, // flags: QoS 1 | bit 3, reserved
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	}, ErrBadValue},
	{"only_header", []byte{0x01, 0x01}, ErrTruncated},
	{"string_past_end", []byte{
		0x01,                   // version 1
		0x01,                   // flags: QoS 1
		0, 0, 0, 0, 0, 0, 0, 0, // Enqueued
		0x00, 0x05, 'a', // Device length 5, one octet present
	}, ErrTruncated},
	{"payload_4GiB", []byte{
		0x01,                   // version 1
		0x01,                   // flags: QoS 1
		0, 0, 0, 0, 0, 0, 0, 0, // Enqueued
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // Device, Listener, Topic ""
		0xFF, 0xFF, 0xFF, 0xFF, // Payload length 2³²-1, nothing follows: no allocation
	}, ErrTruncated},
	{"trailing", append(append([]byte{}, messageFixtures[2].raw...), 0x00), ErrTrailing},
}
