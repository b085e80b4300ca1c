package store

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

// sessionV2 is how an engine would use Encoder and Decoder: a record type
// whose version 2 added a field (Sleeping), read by a decoder that knows
// both versions.
type sessionV2 struct {
	ClientID string
	Clean    bool
	Topics   []string // registrations
	Sleeping bool     // since version 2
}

func encodeSession(s sessionV2) ([]byte, error) {
	e := NewEncoder(nil, 2)
	e.Str(s.ClientID)
	e.Bool(s.Clean)
	e.Count(len(s.Topics))
	for _, t := range s.Topics {
		e.Str(t)
	}
	e.Bool(s.Sleeping)
	return e.Finish()
}

func decodeSession(b []byte) (sessionV2, error) {
	d := NewDecoder(b, 2)
	var s sessionV2
	s.ClientID = d.Str()
	s.Clean = d.Bool()
	for n := d.Count(); n > 0 && d.Err() == nil; n-- {
		s.Topics = append(s.Topics, d.Str())
	}
	if d.Version() >= 2 {
		s.Sleeping = d.Bool()
	}
	return s, d.Finish()
}

func TestRecordVersions(t *testing.T) {
	v2 := sessionV2{ClientID: "c1", Clean: true, Topics: []string{"a", "b/c"}, Sleeping: true}
	b, err := encodeSession(v2)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{
		0x02,                 // version 2
		0x00, 0x02, 'c', '1', // ClientID "c1"
		0x01,                   // Clean
		0x00, 0x00, 0x00, 0x02, // Count 2
		0x00, 0x01, 'a', // "a"
		0x00, 0x03, 'b', '/', 'c', // "b/c"
		0x01, // Sleeping (version 2)
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("got  % x\nwant % x", b, want)
	}
	got, err := decodeSession(b)
	if err != nil || got.ClientID != "c1" || !got.Clean || len(got.Topics) != 2 || got.Topics[1] != "b/c" || !got.Sleeping {
		t.Fatalf("decode = %+v, %v", got, err)
	}
	// A version 1 record (no Sleeping) still reads.
	v1 := append([]byte{0x01}, want[1:len(want)-1]...)
	if got, err := decodeSession(v1); err != nil || got.Sleeping || got.ClientID != "c1" {
		t.Fatalf("decode v1 = %+v, %v", got, err)
	}
	// A version 3 record is refused, not misread.
	v3 := append([]byte{0x03}, want[1:]...)
	if _, err := decodeSession(v3); !errors.Is(err, ErrRecordVersion) {
		t.Fatalf("decode v3: %v, want ErrRecordVersion", err)
	}
}

func TestDecoderErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  []byte
		read func(d *Decoder)
		want error
	}{
		{"empty", nil, func(d *Decoder) {}, ErrTruncated},
		{"version_0", []byte{0x00}, func(d *Decoder) {}, ErrRecordVersion},
		{"uint16_short", []byte{0x01, 0x00}, func(d *Decoder) { d.Uint16() }, ErrTruncated},
		{"uint32_short", []byte{0x01, 0, 0, 0}, func(d *Decoder) { d.Uint32() }, ErrTruncated},
		{"uint64_short", []byte{0x01, 0, 0, 0, 0, 0, 0, 0}, func(d *Decoder) { d.Uint64() }, ErrTruncated},
		{"bool_2", []byte{0x01, 0x02}, func(d *Decoder) { d.Bool() }, ErrBadValue},
		{"string_short", []byte{0x01, 0x00, 0x02, 'a'}, func(d *Decoder) { d.Str() }, ErrTruncated},
		{"bytes_huge", []byte{0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x00}, func(d *Decoder) { d.Bytes() }, ErrTruncated},
		// A count of 2³²-1 with one octet left: refused before any loop.
		{"count_huge", []byte{0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x00}, func(d *Decoder) { d.Count() }, ErrBadValue},
		{"trailing", []byte{0x01, 0x07, 0x08}, func(d *Decoder) { d.Uint8() }, ErrTrailing},
		{"fail", []byte{0x01, 0x07}, func(d *Decoder) { d.Uint8(); d.Fail(ErrBadValue) }, ErrBadValue},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDecoder(tc.raw, 1)
			tc.read(&d)
			if err := d.Finish(); !errors.Is(err, tc.want) {
				t.Fatalf("Finish = %v, want %v", err, tc.want)
			}
			// Reads after an error return zero values and keep the first error.
			if d.Err() != nil {
				if v := d.Uint64(); v != 0 {
					t.Fatalf("read after error = %d", v)
				}
				if err := d.Finish(); !errors.Is(err, tc.want) {
					t.Fatalf("error changed to %v", err)
				}
			}
		})
	}
}

func TestEncoderErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(e *Encoder)
	}{
		{"string_64KiB", func(e *Encoder) { e.Str(strings.Repeat("x", math.MaxUint16+1)) }},
		{"time_2300", func(e *Encoder) { e.Time(time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)) }},
		{"count_negative", func(e *Encoder) { e.Count(-1) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEncoder(nil, 1)
			tc.write(&e)
			e.Uint8(1) // ignored after the error
			if b, err := e.Finish(); !errors.Is(err, ErrFieldTooLong) || b != nil {
				t.Fatalf("Finish = % x, %v; want ErrFieldTooLong", b, err)
			}
		})
	}
	e := NewEncoder(nil, 0)
	if _, err := e.Finish(); !errors.Is(err, ErrRecordVersion) {
		t.Fatalf("version 0: %v", err)
	}
}

func TestEncoderFields(t *testing.T) {
	e := NewEncoder([]byte{0xAA}, 7)
	e.Uint8(0x01)
	e.Bool(false)
	e.Uint16(0x0203)
	e.Uint32(0x04050607)
	e.Uint64(0x08090A0B0C0D0E0F)
	e.Time(time.Time{})
	e.Bytes([]byte{0x10})
	b, err := e.Finish()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{
		0xAA,       // the buffer's existing octet
		0x07,       // version 7
		0x01,       // Uint8
		0x00,       // Bool false
		0x02, 0x03, // Uint16
		0x04, 0x05, 0x06, 0x07, // Uint32
		0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, // Uint64
		0, 0, 0, 0, 0, 0, 0, 0, // Time: zero
		0x00, 0x00, 0x00, 0x01, 0x10, // Bytes
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("got  % x\nwant % x", b, want)
	}
	d := NewDecoder(b[1:], 7)
	if d.Version() != 7 || d.Uint8() != 1 || d.Bool() || d.Uint16() != 0x0203 || d.Uint32() != 0x04050607 ||
		d.Uint64() != 0x08090A0B0C0D0E0F || !d.Time().IsZero() || !bytes.Equal(d.Bytes(), []byte{0x10}) || d.Finish() != nil {
		t.Fatalf("decode back failed: %v", d.Err())
	}
}
