package gateway

import (
	"bytes"
	"flag"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/fuzzcorpus"
	"github.com/mqttgw/mqttgw/internal/recordtest"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/store"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzDecodeDeviceRecord from the record fixtures")

// recT0 is the time in the fixtures: 2025-01-02T03:04:05Z, Unix nanoseconds
// 1735787045000000000 = 0x1816C11EEEF33200.
var recT0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// deviceRecordFixture is one device session record and its canonical
// encoding, shared by the encode and decode tests and the fuzz seeds
// (testdata/fuzz).
type deviceRecordFixture struct {
	name string
	rec  deviceRecord
	raw  []byte
}

var deviceRecordFixtures = []deviceRecordFixture{
	{
		name: "udp_by_ip_no_class",
		rec: deviceRecord{Device: "10.0.0.7", Saved: session.Saved{
			Peer: session.Peer{Addr: netip.MustParseAddrPort("10.0.0.7:5000")}, Created: recT0, LastSeen: recT0}},
		raw: []byte{
			0x01,                                               // version 1
			0x00, 0x08, '1', '0', '.', '0', '.', '0', '.', '7', // device "10.0.0.7" (a rule's default: the sender's IP)
			0x00, 0x00, // no class
			0x00, 0x0D, '1', '0', '.', '0', '.', '0', '.', '7', ':', '5', '0', '0', '0', // last address "10.0.0.7:5000"
			0x18, 0x16, 0xC1, 0x1E, 0xEE, 0xF3, 0x32, 0x00, // created recT0
			0x18, 0x16, 0xC1, 0x1E, 0xEE, 0xF3, 0x32, 0x00, // last seen recT0
			0x00, 0x00, // anonymous: no user
		},
	},
	{
		name: "coap_classed_user_ipv6",
		rec: deviceRecord{Device: "meter-1", Saved: session.Saved{
			Peer:    session.Peer{Addr: netip.MustParseAddrPort("[::1]:5683")},
			Created: recT0, LastSeen: recT0.Add(time.Second), Class: "meters", User: "alice"}},
		raw: []byte{
			0x01,                                          // version 1
			0x00, 0x07, 'm', 'e', 't', 'e', 'r', '-', '1', // device "meter-1" (its CoAP client id)
			0x00, 0x06, 'm', 'e', 't', 'e', 'r', 's', // class "meters"
			0x00, 0x0A, '[', ':', ':', '1', ']', ':', '5', '6', '8', '3', // last address "[::1]:5683"
			0x18, 0x16, 0xC1, 0x1E, 0xEE, 0xF3, 0x32, 0x00, // created recT0
			0x18, 0x16, 0xC1, 0x1F, 0x2A, 0x8D, 0xFC, 0x00, // last seen recT0 + 1 s
			0x00, 0x05, 'a', 'l', 'i', 'c', 'e', // user "alice" (password file)
		},
	},
	{
		name: "no_address_zero_times",
		rec:  deviceRecord{Device: "d"},
		raw: []byte{
			0x01,            // version 1
			0x00, 0x01, 'd', // device "d"
			0x00, 0x00, // no class
			0x00, 0x00, // no address
			0, 0, 0, 0, 0, 0, 0, 0, // created: zero time
			0, 0, 0, 0, 0, 0, 0, 0, // last seen: zero time
			0x00, 0x00, // no user
		},
	},
}

func withByte(b []byte, i int, v byte) []byte {
	c := bytes.Clone(b)
	c[i] = v
	return c
}

var devBare = deviceRecordFixtures[2].raw

// deviceRecordDecodeErrors are records the decoder must refuse, with the
// sentinel. Offsets in devBare: device 1–3, class 4–5, address 6–7, created
// 8–15, last seen 16–23, user 24–25.
var deviceRecordDecodeErrors = []struct {
	name string
	raw  []byte
	want error
}{
	{"empty", nil, store.ErrTruncated},
	{"version_2", withByte(devBare, 0, 0x02), store.ErrRecordVersion},
	{"truncated", devBare[:len(devBare)-1], store.ErrTruncated},
	{"trailing", append(bytes.Clone(devBare), 0x00), store.ErrTrailing},
	{"empty_device", append([]byte{0x01, 0x00, 0x00}, devBare[4:]...), store.ErrBadValue},
	// "1.2.3.4:05" parses, but is not how it is written.
	{"address_not_canonical", bytes.Join([][]byte{devBare[:6], {0x00, 0x0A, '1', '.', '2', '.', '3', '.', '4', ':', '0', '5'}, devBare[8:]}, nil), store.ErrBadValue},
	{"address_garbage", bytes.Join([][]byte{devBare[:6], {0x00, 0x01, 'x'}, devBare[8:]}, nil), store.ErrBadValue},
}

func TestDeviceRecordFixtures(t *testing.T) {
	for _, fx := range deviceRecordFixtures {
		deviceCodec.Fixture(t, fx.name, fx.rec, fx.raw)
	}
}

func TestDeviceRecordRefused(t *testing.T) {
	for _, tc := range deviceRecordDecodeErrors {
		deviceCodec.Refused(t, tc.name, tc.raw, tc.want)
	}
}

// deviceCodec is the record's codec for the shared checks.
var deviceCodec = recordtest.Codec[deviceRecord]{Append: appendDeviceRecord, Decode: decodeDeviceRecord}

// FuzzDecodeDeviceRecord checks that decodeDeviceRecord, which reads a file
// that may be damaged or written by another version, never panics, fails
// only with a store sentinel, that a decoded record encodes back to the same
// bytes (one encoding per value), and that every strict prefix of a record is
// refused.
//
// Seeds: every deviceRecordFixtures entry ("ok_<name>", commented field by
// field above) and every deviceRecordDecodeErrors entry ("err_<name>"),
// stored in testdata/fuzz/FuzzDecodeDeviceRecord.
func FuzzDecodeDeviceRecord(f *testing.F) {
	for _, fx := range deviceRecordFixtures {
		f.Add(fx.raw)
	}
	for _, tc := range deviceRecordDecodeErrors {
		f.Add(tc.raw)
	}
	f.Fuzz(deviceCodec.Check)
}

// TestFuzzCorpusMatchesRecords keeps testdata/fuzz/FuzzDecodeDeviceRecord in
// step with the tables: `go test ./gateway -run TestFuzzCorpusMatchesRecords
// -update-corpus` after changing them.
func TestFuzzCorpusMatchesRecords(t *testing.T) {
	want := map[string][]byte{}
	for _, fx := range deviceRecordFixtures {
		want["ok_"+fx.name] = fuzzcorpus.File(fx.raw)
	}
	for _, tc := range deviceRecordDecodeErrors {
		want["err_"+tc.name] = fuzzcorpus.File(tc.raw)
	}
	fuzzcorpus.Check(t, filepath.Join("testdata", "fuzz", "FuzzDecodeDeviceRecord"), want, *updateCorpus)
}
