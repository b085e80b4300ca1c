// Package recordtest holds the checks every versioned store record's codec
// passes (the MQTT-SN session, the CoAP observation, the device session
// records): its fixtures encode to their bytes and back, and the fuzz
// property of its decoder, which reads files that may be damaged or written
// by another version.
package recordtest

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/mqttgw/mqttgw/store"
)

// Sentinels are the errors every failed decode of a store record wraps.
var Sentinels = []error{store.ErrTruncated, store.ErrTrailing, store.ErrRecordVersion, store.ErrBadValue}

// Codec is a record type's encoder and decoder.
type Codec[T any] struct {
	Append func(buf []byte, r *T) ([]byte, error)
	Decode func(b []byte) (T, error)
}

// Fixture checks that rec encodes to raw and raw decodes to rec.
func (c Codec[T]) Fixture(t *testing.T, name string, rec T, raw []byte) {
	t.Helper()
	got, err := c.Append(nil, &rec)
	if err != nil {
		t.Fatalf("%s: encode: %v", name, err)
	}
	if !bytes.Equal(got, raw) {
		t.Errorf("%s: encoded\n got % x\nwant % x", name, got, raw)
	}
	back, err := c.Decode(raw)
	if err != nil {
		t.Fatalf("%s: decode: %v", name, err)
	}
	if !reflect.DeepEqual(back, rec) {
		t.Errorf("%s: decoded\n got %+v\nwant %+v", name, back, rec)
	}
}

// Refused checks that raw is refused with an error wrapping want.
func (c Codec[T]) Refused(t *testing.T, name string, raw []byte, want error) {
	t.Helper()
	if _, err := c.Decode(raw); !errors.Is(err, want) {
		t.Errorf("%s: error %v, want %v", name, err, want)
	}
}

// Check is the fuzz property: decoding b never panics and fails only with
// one of Sentinels; a decoded record encodes back to b (one encoding per
// value); every strict prefix of a record is refused.
func (c Codec[T]) Check(t *testing.T, b []byte) {
	t.Helper()
	r, err := c.Decode(b)
	if err != nil {
		for _, s := range Sentinels {
			if errors.Is(err, s) {
				return
			}
		}
		t.Fatalf("error %v wraps no sentinel", err)
	}
	enc, err := c.Append(nil, &r)
	if err != nil {
		t.Fatalf("encode %+v: %v", r, err)
	}
	if !bytes.Equal(enc, b) {
		t.Fatalf("round trip changed the record\n got % x\nwant % x", enc, b)
	}
	for i := range len(b) {
		if _, err := c.Decode(b[:i]); err == nil {
			t.Fatalf("prefix % x of % x decoded", b[:i], b)
		}
	}
}
