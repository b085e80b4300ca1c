package store

import (
	"bytes"
	"errors"
	"flag"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/fuzzcorpus"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/Fuzz* from the fixture tables")

// codecSentinels are the errors every decode failure must wrap.
var codecSentinels = []error{ErrTruncated, ErrTrailing, ErrRecordVersion, ErrBadValue}

func wrapsSentinel(err error) bool {
	for _, s := range codecSentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// FuzzDecodeMessage checks that DecodeMessage never panics, that every
// failure wraps a sentinel, that checkMessage (Open's copy-free check) agrees
// with it, that a decoded message encodes back to the same bytes (the
// encoding is canonical), and that every strict prefix of a record is refused.
//
// Seeds: every messageFixtures entry ("ok_<name>", commented field by field
// in fixtures_test.go) and every messageDecodeErrors entry ("err_<name>"),
// added here and stored in testdata/fuzz/FuzzDecodeMessage.
func FuzzDecodeMessage(f *testing.F) {
	for _, fx := range messageFixtures {
		f.Add(fx.raw)
	}
	for _, tc := range messageDecodeErrors {
		f.Add(tc.raw)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMessage(b)
		if cerr := checkMessage(b); (cerr == nil) != (err == nil) {
			t.Fatalf("checkMessage = %v, DecodeMessage = %v", cerr, err)
		}
		if err != nil {
			if !wrapsSentinel(err) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		enc, err := AppendMessage(nil, m)
		if err != nil {
			t.Fatalf("AppendMessage(%#v): %v", m, err)
		}
		if !bytes.Equal(enc, b) {
			t.Fatalf("round trip changed the record\n got % x\nwant % x", enc, b)
		}
		for i := range len(b) {
			if _, err := DecodeMessage(b[:i]); err == nil {
				t.Fatalf("prefix % x of % x decoded", b[:i], b)
			}
		}
	})
}

// The field kinds FuzzDecoder reads, one per schema byte (modulo their count).
const (
	fUint8 = iota
	fBool
	fUint16
	fUint32
	fUint64
	fTime
	fStr
	fBytes
	fCount
	fieldKinds
)

// readFields reads data's fields as schema says, the way an engine's decoder
// would, and returns them; maxVersion 3.
func readFields(schema, data []byte) (version byte, vals []any, err error) {
	d := NewDecoder(data, 3)
	for _, s := range schema {
		switch s % fieldKinds {
		case fUint8:
			vals = append(vals, d.Uint8())
		case fBool:
			vals = append(vals, d.Bool())
		case fUint16:
			vals = append(vals, d.Uint16())
		case fUint32:
			vals = append(vals, d.Uint32())
		case fUint64:
			vals = append(vals, d.Uint64())
		case fTime:
			vals = append(vals, d.Time())
		case fStr:
			vals = append(vals, d.Str())
		case fBytes:
			vals = append(vals, d.Bytes())
		case fCount:
			vals = append(vals, d.Count())
		}
	}
	return d.Version(), vals, d.Finish()
}

// writeFields encodes what readFields read.
func writeFields(version byte, vals []any) ([]byte, error) {
	e := NewEncoder(nil, version)
	for _, v := range vals {
		switch v := v.(type) {
		case uint8:
			e.Uint8(v)
		case bool:
			e.Bool(v)
		case uint16:
			e.Uint16(v)
		case uint32:
			e.Uint32(v)
		case uint64:
			e.Uint64(v)
		case time.Time:
			e.Time(v)
		case string:
			e.Str(v)
		case []byte:
			e.Bytes(v)
		case int:
			e.Count(v)
		}
	}
	return e.Finish()
}

// FuzzDecoder checks the generic record decoder the engines use: reading any
// bytes with any sequence of field reads (schema, one byte per field) never
// panics, fails only with a sentinel, re-encodes what it read to the same
// bytes, and refuses every strict prefix.
//
// Seeds: decoderSeeds, stored in testdata/fuzz/FuzzDecoder.
func FuzzDecoder(f *testing.F) {
	for _, s := range decoderSeeds(f) {
		f.Add(s.schema, s.data)
	}
	f.Fuzz(func(t *testing.T, schema, data []byte) {
		if len(schema) > 64 {
			schema = schema[:64]
		}
		version, vals, err := readFields(schema, data)
		if err != nil {
			if !wrapsSentinel(err) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		enc, err := writeFields(version, vals)
		if err != nil {
			t.Fatalf("re-encoding %v: %v", vals, err)
		}
		if !bytes.Equal(enc, data) {
			t.Fatalf("round trip changed the record\n got % x\nwant % x", enc, data)
		}
		for i := range len(data) {
			if _, _, err := readFields(schema, data[:i]); err == nil {
				t.Fatalf("prefix % x of % x read without error", data[:i], data)
			}
		}
	})
}

type decoderSeed struct {
	name         string
	schema, data []byte
}

// decoderSeeds are the FuzzDecoder seeds: a schema and a record written
// with it by the Encoder.
func decoderSeeds(tb testing.TB) []decoderSeed {
	enc := func(version byte, vals ...any) []byte {
		b, err := writeFields(version, vals)
		if err != nil {
			tb.Fatal(err)
		}
		return b
	}
	return []decoderSeed{
		// An MQTT-SN session: client id, clean flag, a count of 2 registrations
		// (topic id, name), a will time.
		{"ok_session", []byte{fStr, fBool, fCount, fUint16, fStr, fUint16, fStr, fTime},
			enc(1, "client-1", true, 2, uint16(1), "a/b", uint16(2), "c", t0)},
		// A CoAP observation: token bytes, sequence number, path.
		{"ok_observation", []byte{fBytes, fUint32, fStr, fUint64, fUint8},
			enc(2, []byte{0xCA, 0xFE}, uint32(7), "/s/t", uint64(1<<40), uint8(3))},
		// Every field kind once, version 3 (the newest readFields accepts).
		{"ok_all_kinds", []byte{fUint8, fBool, fUint16, fUint32, fUint64, fTime, fStr, fBytes, fCount},
			enc(3, uint8(1), false, uint16(2), uint32(3), uint64(4), time.Time{}, "", []byte(nil), 0)},
		// A version byte newer than the reader's 3.
		{"err_version_4", []byte{fUint8}, []byte{0x04, 0x00}},
		// A count of 2³²-1 with nothing after it.
		{"err_count_huge", []byte{fCount, fStr}, []byte{0x01, 0xFF, 0xFF, 0xFF, 0xFF}},
		// A Bytes length of 2³²-1 with two octets present.
		{"err_bytes_huge", []byte{fBytes}, []byte{0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00}},
		// A bool of 2.
		{"err_bool_2", []byte{fBool}, []byte{0x01, 0x02}},
	}
}

// corpusFile2 is the seed file of a two-[]byte input, in go test's corpus format.
func corpusFile2(a, b []byte) []byte {
	return []byte("go test fuzz v1\n[]byte(" + strconv.Quote(string(a)) + ")\n[]byte(" + strconv.Quote(string(b)) + ")\n")
}

// TestFuzzCorpusMatchesFixtures checks that testdata/fuzz holds a seed file
// for every fixture, error case and decoder seed, with the same bytes. Run
// `go test ./store -run TestFuzzCorpusMatchesFixtures -update-corpus` after
// changing the tables. Extra files (inputs saved by `go test -fuzz`) are left
// alone.
func TestFuzzCorpusMatchesFixtures(t *testing.T) {
	want := map[string][]byte{}
	for _, fx := range messageFixtures {
		want["ok_"+fx.name] = fuzzcorpus.File(fx.raw)
	}
	for _, tc := range messageDecodeErrors {
		want["err_"+tc.name] = fuzzcorpus.File(tc.raw)
	}
	fuzzcorpus.Check(t, filepath.Join("testdata", "fuzz", "FuzzDecodeMessage"), want, *updateCorpus)

	want = map[string][]byte{}
	for _, s := range decoderSeeds(t) {
		want[s.name] = corpusFile2(s.schema, s.data)
	}
	fuzzcorpus.Check(t, filepath.Join("testdata", "fuzz", "FuzzDecoder"), want, *updateCorpus)
}
