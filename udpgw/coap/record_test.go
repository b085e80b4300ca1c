package coap

import (
	"bytes"
	"flag"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/mqttgw/mqttgw/internal/fuzzcorpus"
	"github.com/mqttgw/mqttgw/internal/recordtest"
	"github.com/mqttgw/mqttgw/store"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzDecodeObservationRecord from the record fixtures")

// obsRecordFixture is one observation record and its canonical encoding,
// shared by the encode and decode tests and the fuzz seeds (testdata/fuzz).
type obsRecordFixture struct {
	name string
	rec  observationRecord
	raw  []byte
}

var obsRecordFixtures = []obsRecordFixture{
	{
		name: "anonymous_bare",
		rec:  observationRecord{Device: "10.0.0.7:5683", Filter: "t"},
		raw: []byte{
			0x01,       // version 1
			0x00, 0x0D, // device name: 13 octets,
			'1', '0', '.', '0', '.', '0', '.', '7', ':', '5', '6', '8', '3', //   "10.0.0.7:5683" (an anonymous device is its address)
			0x00, 0x00, 0x00, 0x00, // token: empty (RFC 7252 §5.3.1 allows it)
			0x00, 0x01, 't', // filter "t"
			0x00,                   // QoS 0
			0x00, 0x00, 0x00, 0x00, // sequence base 0
			0x00, 0x00, // no proven address
		},
	},
	{
		name: "named_wildcard_proven",
		rec: observationRecord{Device: "node7", Token: []byte{0xCA, 0xFE}, Filter: "house/+/temp", QoS: 1, Seq: seqMask,
			Addr: netip.MustParseAddrPort("[::1]:40000")},
		raw: []byte{
			0x01,                                // version 1
			0x00, 0x05, 'n', 'o', 'd', 'e', '7', // device name "node7" (its client id)
			0x00, 0x00, 0x00, 0x02, 0xCA, 0xFE, // token CA FE
			0x00, 0x0C, 'h', 'o', 'u', 's', 'e', '/', '+', '/', 't', 'e', 'm', 'p', // filter "house/+/temp"
			0x01,                   // QoS 1
			0x00, 0xFF, 0xFF, 0xFF, // sequence base 2^24-1, the largest Observe value (RFC 7641 §4.4)
			0x00, 0x0B, '[', ':', ':', '1', ']', ':', '4', '0', '0', '0', '0', // proven address "[::1]:40000"
		},
	},
}

func withByte(b []byte, i int, v byte) []byte {
	c := bytes.Clone(b)
	c[i] = v
	return c
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

var obsBare = obsRecordFixtures[0].raw

// obsRecordDecodeErrors are records the decoder must refuse, with the
// sentinel. Offsets in obsBare: device 1–15, token 16–19, filter 20–22, QoS
// 23, sequence 24–27, address 28–29.
var obsRecordDecodeErrors = []struct {
	name string
	raw  []byte
	want error
}{
	{"empty", nil, store.ErrTruncated},
	{"version_2", withByte(obsBare, 0, 0x02), store.ErrRecordVersion},
	{"truncated", obsBare[:len(obsBare)-1], store.ErrTruncated},
	{"trailing", append(bytes.Clone(obsBare), 0x00), store.ErrTrailing},
	{"empty_device", concat([]byte{0x01, 0x00, 0x00}, obsBare[16:]), store.ErrBadValue},
	// A 9-octet token: TKL 9 is reserved (RFC 7252 §3).
	{"token_9", concat(obsBare[:16], []byte{0, 0, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9}, obsBare[20:]), store.ErrBadValue},
	{"filter_empty", concat(obsBare[:20], []byte{0x00, 0x00}, obsBare[23:]), store.ErrBadValue},
	// '#' before the last level is no MQTT filter.
	{"filter_bad", concat(obsBare[:20], []byte{0x00, 0x05, 'a', '/', '#', '/', 'b'}, obsBare[23:]), store.ErrBadValue},
	{"qos_3", withByte(obsBare, 23, 0x03), store.ErrBadValue},
	// 2^24: beyond the 24 bits of an Observe value.
	{"seq_25_bits", withByte(obsBare, 24, 0x01), store.ErrBadValue},
	// "1.2.3.4:05" parses, but is not how it is written.
	{"address_not_canonical", concat(obsBare[:28], []byte{0x00, 0x0A, '1', '.', '2', '.', '3', '.', '4', ':', '0', '5'}), store.ErrBadValue},
}

func TestObservationRecordFixtures(t *testing.T) {
	for _, fx := range obsRecordFixtures {
		observationCodec.Fixture(t, fx.name, fx.rec, fx.raw)
	}
}

func TestObservationRecordRefused(t *testing.T) {
	for _, tc := range obsRecordDecodeErrors {
		observationCodec.Refused(t, tc.name, tc.raw, tc.want)
	}
}

// observationCodec is the record's codec for the shared checks.
var observationCodec = recordtest.Codec[observationRecord]{Append: appendObservationRecord, Decode: decodeObservationRecord}

// FuzzDecodeObservationRecord checks that decodeObservationRecord, which
// reads a file that may be damaged or written by another version, never
// panics, fails only with a store sentinel, that a decoded record encodes
// back to the same bytes (one encoding per value), and that every strict
// prefix of a record is refused.
//
// Seeds: every obsRecordFixtures entry ("ok_<name>", commented field by field
// above) and every obsRecordDecodeErrors entry ("err_<name>"), stored in
// testdata/fuzz/FuzzDecodeObservationRecord.
func FuzzDecodeObservationRecord(f *testing.F) {
	for _, fx := range obsRecordFixtures {
		f.Add(fx.raw)
	}
	for _, tc := range obsRecordDecodeErrors {
		f.Add(tc.raw)
	}
	f.Fuzz(observationCodec.Check)
}

// TestFuzzCorpusMatchesRecords keeps testdata/fuzz/FuzzDecodeObservationRecord
// in step with the tables: `go test ./udpgw/coap -run
// TestFuzzCorpusMatchesRecords -update-corpus` after changing them.
func TestFuzzCorpusMatchesRecords(t *testing.T) {
	want := map[string][]byte{}
	for _, fx := range obsRecordFixtures {
		want["ok_"+fx.name] = fuzzcorpus.File(fx.raw)
	}
	for _, tc := range obsRecordDecodeErrors {
		want["err_"+tc.name] = fuzzcorpus.File(tc.raw)
	}
	fuzzcorpus.Check(t, filepath.Join("testdata", "fuzz", "FuzzDecodeObservationRecord"), want, *updateCorpus)
}
