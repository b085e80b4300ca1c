package gateway

import (
	"fmt"
	"net/netip"

	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/store"
)

// deviceRecord is the durable form of one synthetic session (a CoAP or
// plain-UDP device's, session.Saved) under store.KindSession, as the session
// keeper (sessionstore.go) writes it and restores it after a restart. The
// listener is in the key, not here. It is a plain value: encoding and decoding
// are pure.
type deviceRecord struct {
	Device string
	session.Saved
}

// deviceRecordVersion is the newest record version this build writes and reads.
const deviceRecordVersion = 1

// The record, version 1, in store's record format (store/record.go: every
// field fixed-width or length-prefixed, big-endian):
//
//	Uint8  version (1)
//	Str    device id (also the key's, after the listener's name and a NUL)
//	Str    class name ("" none)
//	Str    last address, netip.AddrPort text ("" none)
//	Time   created (first contact)
//	Time   last seen, at most session.SaveEvery(keepalive) older than the real one
//	Str    user the device proved ("" anonymous)
//
// Synthetic sessions have no forwarder node (session.Peer.Node), so none is
// kept. Every value has one encoding (the decoder refuses an empty device id
// and a non-canonical address), so decode and encode round-trip byte for byte
// (FuzzDecodeDeviceRecord).

// appendDeviceRecord appends r's encoding to buf.
func appendDeviceRecord(buf []byte, r *deviceRecord) ([]byte, error) {
	e := store.NewEncoder(buf, deviceRecordVersion)
	e.Str(r.Device)
	e.Str(r.Class)
	addr := ""
	if r.Peer.Addr.IsValid() {
		addr = r.Peer.Addr.String()
	}
	e.Str(addr)
	e.Time(r.Created)
	e.Time(r.LastSeen)
	e.Str(r.User)
	return e.Finish()
}

// decodeDeviceRecord reads a record written by appendDeviceRecord (any version
// up to deviceRecordVersion). Errors wrap the store's record sentinels
// (store.ErrTruncated, ErrTrailing, ErrRecordVersion, ErrBadValue).
func decodeDeviceRecord(b []byte) (deviceRecord, error) {
	d := store.NewDecoder(b, deviceRecordVersion)
	var r deviceRecord
	r.Device = d.Str()
	if r.Device == "" && d.Err() == nil {
		d.Fail(fmt.Errorf("%w: empty device id", store.ErrBadValue))
	}
	r.Class = d.Str()
	if addr := d.Str(); addr != "" && d.Err() == nil {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil || ap.String() != addr {
			d.Fail(fmt.Errorf("%w: address %q", store.ErrBadValue, addr))
		}
		r.Peer.Addr = ap
	}
	r.Created = d.Time()
	r.LastSeen = d.Time()
	r.User = d.Str()
	if err := d.Finish(); err != nil {
		return deviceRecord{}, fmt.Errorf("gateway: device session record: %w", err)
	}
	return r, nil
}
