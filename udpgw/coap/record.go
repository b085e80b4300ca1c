package coap

import (
	"fmt"
	"net/netip"

	"github.com/mqttgw/mqttgw/store"
	"github.com/mqttgw/mqttgw/udpgw"
)

// observationRecord is the durable form of one observation (RFC 7641 §4.1:
// an entry of a resource's list of observers, named by its endpoint and
// token), as persist.go writes it under store.KindCoAPObservation and restores
// it after a restart. It is a plain value: encoding and decoding are pure.
type observationRecord struct {
	Device string // the device's name (its session key): also the key's
	Token  []byte // the registration's token, 0 to 8 octets (RFC 7252 §3)
	Filter string // the MQTT filter observed, in the device's topic space
	QoS    byte   // the QoS its broker subscription asks for
	// Seq is an Observe value (24 bits, RFC 7641 §4.4) no notification sent
	// so far is more than seqWindow above: a restart continues above
	// Seq + seqWindow (persist.go).
	Seq uint32
	// Addr is the device's address when the record was written, if it had
	// proven there that it receives (unproven.go); invalid otherwise. A
	// restart takes the proof back only while the device is still there.
	Addr netip.AddrPort
}

// observationRecordVersion is the newest record version this build writes
// and reads.
const observationRecordVersion = 1

// maxTokenLen is the longest token (RFC 7252 §3: TKL 9 to 15 are reserved).
const maxTokenLen = 8

// The record, version 1, in store's record format (store/record.go: every
// field fixed-width or length-prefixed, big-endian):
//
//	Uint8  version (1)
//	Str    device name (also the key's, after the listener's name and a NUL)
//	Bytes  token, 0 to 8 octets
//	Str    observed filter (an MQTT filter: udpgw.CheckFilter)
//	Uint8  subscription QoS, 0 to 2
//	Uint32 sequence base, below 2^24
//	Str    proven address, netip.AddrPort text ("" none)
//
// Every value has one encoding (the decoder refuses an empty device name, a
// long token, a bad filter, out-of-range numbers and a non-canonical
// address), so decode and encode round-trip byte for byte
// (FuzzDecodeObservationRecord).

// appendObservationRecord appends r's encoding to buf.
func appendObservationRecord(buf []byte, r *observationRecord) ([]byte, error) {
	e := store.NewEncoder(buf, observationRecordVersion)
	e.Str(r.Device)
	e.Bytes(r.Token)
	e.Str(r.Filter)
	e.Uint8(r.QoS)
	e.Uint32(r.Seq)
	addr := ""
	if r.Addr.IsValid() {
		addr = r.Addr.String()
	}
	e.Str(addr)
	return e.Finish()
}

// decodeObservationRecord reads a record written by appendObservationRecord
// (any version up to observationRecordVersion). Errors wrap the store's record
// sentinels (store.ErrTruncated, ErrTrailing, ErrRecordVersion, ErrBadValue).
func decodeObservationRecord(b []byte) (observationRecord, error) {
	d := store.NewDecoder(b, observationRecordVersion)
	var r observationRecord
	bad := func(format string, args ...any) {
		d.Fail(fmt.Errorf("%w: "+format, append([]any{store.ErrBadValue}, args...)...))
	}
	r.Device = d.Str()
	if r.Device == "" && d.Err() == nil {
		bad("empty device name")
	}
	r.Token = d.Bytes()
	if len(r.Token) > maxTokenLen {
		bad("token of %d octets", len(r.Token))
	}
	r.Filter = d.Str()
	if err := udpgw.CheckFilter(r.Filter); err != nil && d.Err() == nil {
		bad("filter %q: %v", r.Filter, err)
	}
	if r.QoS = d.Uint8(); r.QoS > 2 {
		bad("QoS %d", r.QoS)
	}
	if r.Seq = d.Uint32(); r.Seq > seqMask {
		bad("sequence %d beyond 24 bits", r.Seq)
	}
	if addr := d.Str(); addr != "" && d.Err() == nil {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil || ap.String() != addr {
			bad("address %q", addr)
		}
		r.Addr = ap
	}
	if err := d.Finish(); err != nil {
		return observationRecord{}, fmt.Errorf("coap: observation record: %w", err)
	}
	return r, nil
}
