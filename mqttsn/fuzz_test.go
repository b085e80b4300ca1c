package mqttsn

import (
	"bytes"
	"errors"
	"flag"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/mqttgw/mqttgw/internal/fuzzcorpus"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzDecode from the fixture and error tables")

// sentinels are the errors every Decode failure must wrap.
var sentinels = []error{
	ErrTruncated, ErrLengthMismatch, ErrExtraOctets, ErrUnknownType,
	ErrBadProtocolID, ErrReservedTopicIDType, ErrNestedEncapsulation,
}

// FuzzDecode checks that Decode never panics, that every failure wraps a
// sentinel, that a decoded message survives Append and Decode unchanged, and
// that every strict prefix of an encoding is rejected. It also checks that a
// Decoder that decoded every fixture before decodes the input exactly as
// Decode does (same message, same error text), and that its message keeps
// nothing of the earlier datagrams: they are overwritten, and the message
// must not change.
//
// Seeds: every fixture (valid messages, each commented field by field in
// fixtures_test.go) and every decodeErrors case (commented in
// codec_test.go), added here and also stored as files in
// testdata/fuzz/FuzzDecode named "ok_<fixture>" and "err_<case>".
func FuzzDecode(f *testing.F) {
	for _, fx := range fixtures {
		f.Add(fx.raw)
	}
	for _, tc := range decodeErrors {
		f.Add(tc.raw)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		d, clobber := primedDecoder(t)
		dm, _ := sameDecode(t, d, b)
		clobber()
		if !reflect.DeepEqual(dm, m) {
			t.Fatalf("Decoder's message changed with the earlier datagrams\n got %#v\nwant %#v", dm, m)
		}
		if err != nil {
			if m != nil {
				t.Fatalf("Decode returned %#v with error %v", m, err)
			}
			for _, s := range sentinels {
				if errors.Is(err, s) {
					return
				}
			}
			t.Fatalf("error %v wraps no sentinel", err)
		}
		enc, err := Append(nil, m)
		if err != nil {
			t.Fatalf("Append(%#v): %v", m, err)
		}
		if len(enc) > len(b) {
			t.Fatalf("canonical encoding (%d octets) longer than input (%d)", len(enc), len(b))
		}
		m2, err := Decode(enc)
		if err != nil {
			t.Fatalf("Decode(Append(m)) = %v\nm = %#v\nencoding % x", err, m, enc)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the message\n got %#v\nwant %#v", m2, m)
		}
		enc2, err := Append(nil, m2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable: % x then % x (%v)", enc, enc2, err)
		}
		for i := range len(enc) {
			if p, err := Decode(enc[:i]); err == nil {
				t.Fatalf("prefix % x of % x decoded to %#v", enc[:i], enc, p)
			}
		}
	})
}

// TestFuzzCorpusMatchesFixtures checks that testdata/fuzz/FuzzDecode holds a
// seed file for every fixture and error case, with the same bytes. Run
// `go test ./mqttsn/ -run TestFuzzCorpusMatchesFixtures -update-corpus` after
// changing the tables. Extra files (inputs saved by `go test -fuzz`) are left
// alone.
func TestFuzzCorpusMatchesFixtures(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	want := map[string][]byte{}
	for _, fx := range fixtures {
		want["ok_"+fx.name] = fuzzcorpus.File(fx.raw)
	}
	for _, tc := range decodeErrors {
		want["err_"+tc.name] = fuzzcorpus.File(tc.raw)
	}
	fuzzcorpus.Check(t, dir, want, *updateCorpus)
}
