package mqttsn

import (
	"net/netip"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
)

// reader is what one transport reader keeps for itself, used by its
// goroutine alone: its Decoder, whose per-datagram messages (PUBLISH,
// PUBACK, REGISTER, PINGREQ ...) are valid only until its next datagram, and
// its cache of the sources it found proven. A nil *reader (Engine.handle,
// the DTLS readers) decodes with mqttsn.Decode and caches nothing.
//
// Nothing the engine keeps may point into a message the Decoder returns: a
// handler copies what it keeps (the payload of a PUBLISH goes to the worker
// as a copy, publish.go). A CONNECT, which a fleet's loader keeps while it
// loads the client's record (fleet.go), is never one of the Decoder's own.
type reader struct {
	dec  mqttsn.Decoder
	seen provenCache
}

// datagram hands one datagram the reader read to the engine; b is the
// reader's again on return.
func (r *reader) datagram(e *Engine, from netip.AddrPort, b []byte) {
	e.receive(from, b, r)
}

// proven is the reader's cache of proven sources (nil for a nil reader).
func (r *reader) proven() *provenCache {
	if r == nil {
		return nil
	}
	return &r.seen
}

// decode decodes one datagram: with the reader's Decoder, or mqttsn.Decode
// for a nil reader.
func (r *reader) decode(b []byte) (mqttsn.Message, error) {
	if r == nil {
		return mqttsn.Decode(b)
	}
	return r.dec.Decode(b)
}
