package mqttsn

import (
	"bytes"
	"flag"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/fuzzcorpus"
	"github.com/mqttgw/mqttgw/internal/recordtest"
	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/store"
	"github.com/mqttgw/mqttgw/udpgw"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzDecodeSessionRecord from the record fixtures")

// recT0 is the time in the fixtures: 2025-01-02T03:04:05Z, Unix nanoseconds
// 1735787045000000000 = 0x1816C11EEEF33200.
var recT0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// recordFixture is one session record and its canonical encoding, shared by
// the encode and decode tests and the fuzz seeds (testdata/fuzz).
type recordFixture struct {
	name string
	rec  sessionRecord
	raw  []byte
}

var recordFixtures = []recordFixture{
	{
		name: "disconnected_bare",
		rec:  sessionRecord{ID: "d1", State: recDisconnected, LastSeen: recT0, Since: recT0},
		raw: []byte{
			0x01,                 // version 1
			0x00, 0x02, 'd', '1', // client id "d1"
			0x00,                                           // clean false
			0x02,                                           // state disconnected
			0x18, 0x16, 0xC1, 0x1E, 0xEE, 0xF3, 0x32, 0x00, // last seen recT0
			0x18, 0x16, 0xC1, 0x1E, 0xEE, 0xF3, 0x32, 0x00, // since recT0
			0x00, 0x00, // Duration 0
			0, 0, 0, 0, 0, 0, 0, 0, // keepalive 0
			0x00, 0x00, // address "" (none)
			0x00, 0x00, // node ""
			0x00,       // no will
			0x00, 0x00, // next MsgId 0
			0x00, 0x00, // next topic id 0
			0, 0, 0, 0, // 0 topics
			0, 0, 0, 0, // 0 subscriptions
			0, 0, 0, 0, // 0 MsgIds awaiting PUBREL
			0x00,       // nothing in flight
			0, 0, 0, 0, // 0 buffered
		},
	},
	{
		name: "asleep_full",
		rec: sessionRecord{
			ID: "s", State: recAsleep, LastSeen: recT0, Duration: 60, Keepalive: time.Hour,
			Addr:      netip.MustParseAddrPort("10.0.0.7:1884"),
			Will:      &session.Message{Topic: "w", Payload: []byte("bye"), QoS: 1, Retain: true},
			NextMsgID: 9, NextTopic: 2,
			Topics:   []recordTopic{{ID: 1, Name: "a/b", Origin: regClient}, {ID: 2, Name: "c", Origin: regGateway}},
			Subs:     []recordSub{{Filter: "c/#", QoS: 1, IDType: mqttsn.TopicNormal}},
			AwaitRel: []uint16{7},
			Out:      &recordOut{Stage: outPublish, MsgID: 9, TopicID: 2, IDType: mqttsn.TopicNormal, Msg: udpgw.Message{Topic: "c", Payload: []byte("x"), QoS: 1}},
			Queue:    []udpgw.Message{{Topic: "c/d", Payload: []byte("yz"), QoS: 2, Retain: true}},
		},
		raw: []byte{
			0x01,            // version 1
			0x00, 0x01, 's', // client id "s"
			0x00,                                           // clean false
			0x01,                                           // state asleep
			0x18, 0x16, 0xC1, 0x1E, 0xEE, 0xF3, 0x32, 0x00, // last seen recT0
			0, 0, 0, 0, 0, 0, 0, 0, // since: zero time
			0x00, 0x3C, // Duration 60 s
			0x00, 0x00, 0x03, 0x46, 0x30, 0xB8, 0xA0, 0x00, // keepalive 1h in ns
			0x00, 0x0D, '1', '0', '.', '0', '.', '0', '.', '7', ':', '1', '8', '8', '4', // address "10.0.0.7:1884"
			0x00, 0x00, // node ""
			0x01,            // will:
			0x00, 0x01, 'w', //   topic "w"
			0x00, 0x00, 0x00, 0x03, 'b', 'y', 'e', //   payload "bye"
			0x01,       //   QoS 1
			0x01,       //   retain
			0x00, 0x09, // next MsgId 9
			0x00, 0x02, // next topic id 2
			0x00, 0x00, 0x00, 0x02, // 2 topics:
			0x00, 0x01, 0x00, 0x03, 'a', '/', 'b', 0x00, //   1 "a/b", by the client
			0x00, 0x02, 0x00, 0x01, 'c', 0x01, //   2 "c", by the gateway
			0x00, 0x00, 0x00, 0x01, // 1 subscription:
			0x00, 0x03, 'c', '/', '#', 0x01, 0x00, //   "c/#", QoS 1, normal
			0x00, 0x00, 0x00, 0x01, // 1 MsgId awaiting PUBREL:
			0x00, 0x07, //   7
			0x01,       // in flight:
			0x01,       //   stage PUBLISH
			0x00, 0x09, //   MsgId 9
			0x00, 0x02, //   topic id 2
			0x00,            //   normal
			0x00,            //   not reregistered
			0x00, 0x01, 'c', //   topic "c"
			0x00, 0x00, 0x00, 0x01, 'x', //   payload "x"
			0x01,                   //   QoS 1
			0x00,                   //   no retain
			0x00, 0x00, 0x00, 0x01, // 1 buffered:
			0x00, 0x03, 'c', '/', 'd', //   topic "c/d"
			0x00, 0x00, 0x00, 0x02, 'y', 'z', //   payload "yz"
			0x02, //   QoS 2
			0x01, //   retain
		},
	},
	{
		name: "active_forwarded_ipv6",
		rec: sessionRecord{ID: "f", State: recActive, LastSeen: recT0, Duration: 60, Keepalive: time.Minute,
			Addr: netip.MustParseAddrPort("[::1]:9"), Node: "\x01"},
		raw: []byte{
			0x01,            // version 1
			0x00, 0x01, 'f', // client id "f"
			0x00,                                           // clean false
			0x00,                                           // state active
			0x18, 0x16, 0xC1, 0x1E, 0xEE, 0xF3, 0x32, 0x00, // last seen recT0
			0, 0, 0, 0, 0, 0, 0, 0, // since: zero time
			0x00, 0x3C, // Duration 60 s
			0x00, 0x00, 0x00, 0x0D, 0xF8, 0x47, 0x58, 0x00, // keepalive 1 min in ns
			0x00, 0x07, '[', ':', ':', '1', ']', ':', '9', // address "[::1]:9"
			0x00, 0x01, 0x01, // node: wireless node id 0x01 (MQTT-SN 1.2 §5.5)
			0x00,       // no will
			0x00, 0x00, // next MsgId 0
			0x00, 0x00, // next topic id 0
			0, 0, 0, 0, // 0 topics
			0, 0, 0, 0, // 0 subscriptions
			0, 0, 0, 0, // 0 MsgIds awaiting PUBREL
			0x00,       // nothing in flight
			0, 0, 0, 0, // 0 buffered
		},
	},
}

// withByte returns b with b[i] set to v.
func withByte(b []byte, i int, v byte) []byte {
	c := bytes.Clone(b)
	c[i] = v
	return c
}

var bare = recordFixtures[0].raw

// recordDecodeErrors are records every decoder must refuse, with the sentinel.
var recordDecodeErrors = []struct {
	name string
	raw  []byte
	want error
}{
	{"empty", nil, store.ErrTruncated},
	{"version_2", withByte(bare, 0, 0x02), store.ErrRecordVersion},
	{"truncated", bare[:len(bare)-1], store.ErrTruncated},
	{"trailing", append(bytes.Clone(bare), 0x00), store.ErrTrailing},
	{"state_3", withByte(bare, 6, 0x03), store.ErrBadValue},
	{"clean_2", withByte(bare, 5, 0x02), store.ErrBadValue},
	{"empty_client_id", append([]byte{0x01, 0x00, 0x00}, bare[5:]...), store.ErrBadValue},
	{"client_id_nul", withByte(bare, 3, 0x00), store.ErrBadValue},
	// The keepalive's top bit set: not a time.Duration.
	{"keepalive_negative", withByte(bare, 25, 0x80), store.ErrBadValue},
	// Address "1.2.3.4:05": parses, but is not how it is written.
	{"address_not_canonical", append(append(bytes.Clone(bare[:33]), 0x00, 0x0A, '1', '.', '2', '.', '3', '.', '4', ':', '0', '5'), bare[35:]...), store.ErrBadValue},
	// Topic 0x0000 is reserved (§5.3.11).
	{"topic_id_0", append(append(bytes.Clone(bare[:42]), 0, 0, 0, 1, 0x00, 0x00, 0x00, 0x01, 'a', 0x00), bare[46:]...), store.ErrBadValue},
	// One id twice.
	{"topic_twice", append(append(bytes.Clone(bare[:42]), 0, 0, 0, 2, 0x00, 0x01, 0x00, 0x01, 'a', 0x00, 0x00, 0x01, 0x00, 0x01, 'b', 0x00), bare[46:]...), store.ErrBadValue},
	// A subscription at QoS 3.
	{"sub_qos_3", append(append(bytes.Clone(bare[:46]), 0, 0, 0, 1, 0x00, 0x01, 'a', 0x03, 0x00), bare[50:]...), store.ErrBadValue},
	// A count of 2³²-1 topics with a few octets left.
	{"count_huge", append(bytes.Clone(bare[:42]), 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0), store.ErrBadValue},
}

func TestSessionRecordFixtures(t *testing.T) {
	for _, fx := range recordFixtures {
		sessionCodec.Fixture(t, fx.name, fx.rec, fx.raw)
	}
}

func TestSessionRecordRefused(t *testing.T) {
	for _, tc := range recordDecodeErrors {
		sessionCodec.Refused(t, tc.name, tc.raw, tc.want)
	}
}

// sessionCodec is the record's codec for the shared checks.
var sessionCodec = recordtest.Codec[sessionRecord]{Append: appendSessionRecord, Decode: decodeSessionRecord}

// FuzzDecodeSessionRecord checks that decodeSessionRecord, which reads a file
// that may be damaged or written by another version, never panics, fails only
// with a store sentinel, that a decoded record encodes back to the same bytes
// (one encoding per value), and that every strict prefix of a record is
// refused.
//
// Seeds: every recordFixtures entry ("ok_<name>", commented field by field
// above) and every recordDecodeErrors entry ("err_<name>"), stored in
// testdata/fuzz/FuzzDecodeSessionRecord.
func FuzzDecodeSessionRecord(f *testing.F) {
	for _, fx := range recordFixtures {
		f.Add(fx.raw)
	}
	for _, tc := range recordDecodeErrors {
		f.Add(tc.raw)
	}
	f.Fuzz(sessionCodec.Check)
}

// TestFuzzCorpusMatchesRecords keeps testdata/fuzz/FuzzDecodeSessionRecord in
// step with the tables: `go test ./udpgw/mqttsn -run
// TestFuzzCorpusMatchesRecords -update-corpus` after changing them.
func TestFuzzCorpusMatchesRecords(t *testing.T) {
	want := map[string][]byte{}
	for _, fx := range recordFixtures {
		want["ok_"+fx.name] = fuzzcorpus.File(fx.raw)
	}
	for _, tc := range recordDecodeErrors {
		want["err_"+tc.name] = fuzzcorpus.File(tc.raw)
	}
	fuzzcorpus.Check(t, filepath.Join("testdata", "fuzz", "FuzzDecodeSessionRecord"), want, *updateCorpus)
}
