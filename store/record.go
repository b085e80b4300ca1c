package store

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// The record format shared by every value the store keeps: the queue's
// messages (message.go) and the engines' state records, which they encode
// with Encoder and decode with Decoder. A record is a version byte followed
// by its fields in a fixed order, big-endian, without names or tags:
//
//	+---------+---------+---------+-----
//	| version | field 1 | field 2 | ...
//	+---------+---------+---------+-----
//	  1 octet
//
//	Uint8  1 octet            Bool    1 octet, 0 or 1
//	Uint16 2 octets           Time    8 octets: int64 Unix nanoseconds, 0 = zero Time
//	Uint32 4 octets           Str     Uint16 length + that many octets
//	Uint64 8 octets           Bytes   Uint32 length + that many octets
//	Count  Uint32, the number of list elements that follow
//
// Why this and not gob, JSON or protobuf: the records are read back from a
// file that may be damaged or written by another version, so the decoder
// must be small enough to reason about and fuzz (it never panics, never
// allocates more than its input, and rejects every truncation); fixed-width
// length prefixes make every value's encoding unique, so a fuzzer can check
// that decode and encode round-trip byte for byte; and the version byte
// first lets a newer gateway read older records and an older one refuse
// newer ones with ErrRecordVersion instead of misreading them.
//
// A record type that gains a field gets a new version; its decoder reads the
// field only when Version() says it is there.

// Encoder appends one record to a buffer. The first error (a field too long
// for its length prefix) sticks: later calls do nothing and Finish returns it.
// The zero Encoder is not usable; start with NewEncoder.
type Encoder struct {
	buf []byte
	err error
}

// NewEncoder starts a record of the given version (1 to 255) at the end of
// buf, which may be nil.
func NewEncoder(buf []byte, version byte) Encoder {
	e := Encoder{buf: append(buf, version)}
	if version == 0 {
		e.err = fmt.Errorf("version 0: %w", ErrRecordVersion)
	}
	return e
}

// Uint8 appends one octet.
func (e *Encoder) Uint8(v uint8) {
	if e.err == nil {
		e.buf = append(e.buf, v)
	}
}

// Bool appends 1 for true, 0 for false.
func (e *Encoder) Bool(v bool) {
	var b uint8
	if v {
		b = 1
	}
	e.Uint8(b)
}

// Uint16 appends two octets, big-endian.
func (e *Encoder) Uint16(v uint16) {
	if e.err == nil {
		e.buf = binary.BigEndian.AppendUint16(e.buf, v)
	}
}

// Uint32 appends four octets, big-endian.
func (e *Encoder) Uint32(v uint32) {
	if e.err == nil {
		e.buf = binary.BigEndian.AppendUint32(e.buf, v)
	}
}

// Uint64 appends eight octets, big-endian.
func (e *Encoder) Uint64(v uint64) {
	if e.err == nil {
		e.buf = binary.BigEndian.AppendUint64(e.buf, v)
	}
}

// minTime and maxTime bound the times an int64 of Unix nanoseconds can hold
// (years 1677 to 2262).
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// Time appends t as Unix nanoseconds; the zero Time as 0. Its location and
// monotonic reading are not kept, and the Unix epoch itself reads back as the
// zero Time. A time outside the years 1677 to 2262 is ErrFieldTooLong.
func (e *Encoder) Time(t time.Time) {
	if t.IsZero() {
		e.Uint64(0)
		return
	}
	if t.Before(minTime) || t.After(maxTime) {
		e.fail(fmt.Errorf("time %v: %w", t, ErrFieldTooLong))
		return
	}
	e.Uint64(uint64(t.UnixNano()))
}

// Str appends a string: a Uint16 length and s. Longer than 65535 octets is
// ErrFieldTooLong. (Not named String, which would make Decoder a
// fmt.Stringer that consumes its input when printed.)
func (e *Encoder) Str(s string) {
	if len(s) > math.MaxUint16 {
		e.fail(fmt.Errorf("string of %d octets: %w", len(s), ErrFieldTooLong))
		return
	}
	e.Uint16(uint16(len(s)))
	if e.err == nil {
		e.buf = append(e.buf, s...)
	}
}

// Bytes appends a Uint32 length and b; longer than 2³²-1 octets is
// ErrFieldTooLong. nil and empty are the same.
func (e *Encoder) Bytes(b []byte) {
	if uint64(len(b)) > math.MaxUint32 {
		e.fail(fmt.Errorf("bytes of %d octets: %w", len(b), ErrFieldTooLong))
		return
	}
	e.Uint32(uint32(len(b)))
	if e.err == nil {
		e.buf = append(e.buf, b...)
	}
}

// Count appends the number of list elements that follow, as a Uint32. Each
// element must encode to at least one octet: Decoder.Count relies on it to
// refuse hostile counts.
func (e *Encoder) Count(n int) {
	if n < 0 || uint64(n) > math.MaxUint32 {
		e.fail(fmt.Errorf("count %d: %w", n, ErrFieldTooLong))
		return
	}
	e.Uint32(uint32(n))
}

func (e *Encoder) fail(err error) {
	if e.err == nil {
		e.err = err
	}
}

// Finish returns the buffer with the record appended, or the first error.
func (e *Encoder) Finish() ([]byte, error) {
	if e.err != nil {
		return nil, e.err
	}
	return e.buf, nil
}

// Decoder reads one record's fields in the order they were written. It never
// panics and never reads past its input: the first problem (truncation, a
// value out of range) sticks, later reads return zero values, and Finish
// returns it. Strings and Bytes are copies, never views of the input, which
// for bbolt is memory that is valid only inside its transaction.
type Decoder struct {
	b       []byte
	version byte
	err     error
}

// NewDecoder starts reading the record b. Its version byte must be from 1 to
// maxVersion, else the decoder holds ErrRecordVersion.
func NewDecoder(b []byte, maxVersion byte) Decoder {
	if len(b) == 0 {
		return Decoder{err: fmt.Errorf("version: %w", ErrTruncated)}
	}
	d := Decoder{b: b[1:], version: b[0]}
	if d.version == 0 || d.version > maxVersion {
		d.err = fmt.Errorf("version %d (this build reads 1 to %d): %w", d.version, maxVersion, ErrRecordVersion)
	}
	return d
}

// Version is the record's version byte (0 if the record was empty).
func (d *Decoder) Version() byte { return d.version }

// take returns the next n octets, or nil and a sticky ErrTruncated.
func (d *Decoder) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b) < n {
		d.err = fmt.Errorf("%s: need %d octets, %d left: %w", what, n, len(d.b), ErrTruncated)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// skip passes over n octets.
func (d *Decoder) skip(n int, what string) { d.take(n, what) }

// Uint8 reads one octet.
func (d *Decoder) Uint8() uint8 {
	if v := d.take(1, "uint8"); v != nil {
		return v[0]
	}
	return 0
}

// Bool reads one octet that must be 0 or 1 (so that every value has exactly
// one encoding).
func (d *Decoder) Bool() bool {
	v := d.take(1, "bool")
	if v == nil {
		return false
	}
	if v[0] > 1 {
		d.err = fmt.Errorf("bool %d: %w", v[0], ErrBadValue)
		return false
	}
	return v[0] == 1
}

// Uint16 reads two octets, big-endian.
func (d *Decoder) Uint16() uint16 {
	if v := d.take(2, "uint16"); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

// Uint32 reads four octets, big-endian.
func (d *Decoder) Uint32() uint32 {
	if v := d.take(4, "uint32"); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

// Uint64 reads eight octets, big-endian.
func (d *Decoder) Uint64() uint64 {
	if v := d.take(8, "uint64"); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// Time reads Unix nanoseconds; 0 is the zero Time. Times are in UTC.
func (d *Decoder) Time() time.Time {
	n := d.Uint64()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(n)).UTC()
}

// Str reads a Uint16 length and that many octets, as a new string.
func (d *Decoder) Str() string {
	n := d.Uint16()
	return string(d.take(int(n), "string"))
}

// Bytes reads a Uint32 length and that many octets, as a new slice; an empty
// value is nil. The length is checked against the input before anything is
// allocated.
func (d *Decoder) Bytes() []byte {
	n := d.Uint32()
	if d.err == nil && uint64(n) > uint64(len(d.b)) {
		d.err = fmt.Errorf("bytes: length %d with %d octets left: %w", n, len(d.b), ErrTruncated)
		return nil
	}
	v := d.take(int(n), "bytes")
	if len(v) == 0 {
		return nil
	}
	return append([]byte(nil), v...)
}

// Count reads a list's element count. A count larger than the octets left is
// ErrBadValue: each element takes at least one, so a hostile count cannot
// make the caller's decode loop spin or preallocate.
func (d *Decoder) Count() int {
	n := d.Uint32()
	if d.err == nil && uint64(n) > uint64(len(d.b)) {
		d.err = fmt.Errorf("count %d with %d octets left: %w", n, len(d.b), ErrBadValue)
		return 0
	}
	return int(n)
}

// Fail records a problem the caller found in a value (e.g. an enum out of
// range), unless an earlier one is already recorded. Wrap ErrBadValue.
func (d *Decoder) Fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

// Err is the first problem so far, or nil.
func (d *Decoder) Err() error { return d.err }

// Finish returns the first problem, or ErrTrailing if octets are left after
// the last field read.
func (d *Decoder) Finish() error {
	if d.err == nil && len(d.b) > 0 {
		d.err = fmt.Errorf("%d octets: %w", len(d.b), ErrTrailing)
	}
	return d.err
}
