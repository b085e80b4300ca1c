package mqttsn

// Decoder decodes datagrams exactly as Decode does (same messages, same
// errors), without allocating for the messages a connected device sends
// over and over: PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, REGISTER, REGACK,
// PINGREQ and PINGRESP are decoded into structs the Decoder owns, one per
// type, and the next call of Decode overwrites them. Every other type
// (connection setup, will, subscriptions, the gateways' messages, the
// Encapsulated around an inner message) is allocated as Decode allocates it,
// and is the caller's to keep.
//
// Byte slices alias the datagram, as with Decode: a caller that keeps
// Publish.Data past the datagram's buffer copies it. Strings are copies, as
// with Decode, and a Decoder remembers the last short strings it made and
// returns the same string again for the same octets, so that a REGISTER of
// a name it has seen recently, or the wake-up PINGREQ of a client it has
// seen, allocates nothing. Strings stay valid forever: only the structs are
// reused.
//
// The zero Decoder is ready to use. A Decoder belongs to one goroutine (a
// transport's reader, say); Decode is the function for messages that are
// kept.
type Decoder struct {
	publish  Publish
	puback   Puback
	pubrec   Pubrec
	pubrel   Pubrel
	pubcomp  Pubcomp
	register Register
	regack   Regack
	pingreq  Pingreq
	pingresp Pingresp

	// strs is a direct-mapped cache of the strings made, by a hash of
	// their octets.
	strs [internSlots]string
}

const (
	internSlots = 128 // strings remembered
	internMax   = 64  // longest string remembered, in octets
)

// Decode decodes exactly one MQTT-SN message from a datagram, as the
// function Decode does. A *Publish, *Puback, *Pubrec, *Pubrel, *Pubcomp,
// *Register, *Regack, *Pingreq or *Pingresp it returns (also as an
// Encapsulated's Inner) is valid until the next call of d.Decode.
func (d *Decoder) Decode(b []byte) (Message, error) {
	return decodeWith(d, b)
}

// The reuse methods return the struct a message of their type is decoded
// into: d's own, or a new one when d is nil (the function Decode).

func (d *Decoder) reusePublish() *Publish {
	if d == nil {
		return new(Publish)
	}
	return &d.publish
}

func (d *Decoder) reusePuback() *Puback {
	if d == nil {
		return new(Puback)
	}
	return &d.puback
}

func (d *Decoder) reusePubrec() *Pubrec {
	if d == nil {
		return new(Pubrec)
	}
	return &d.pubrec
}

func (d *Decoder) reusePubrel() *Pubrel {
	if d == nil {
		return new(Pubrel)
	}
	return &d.pubrel
}

func (d *Decoder) reusePubcomp() *Pubcomp {
	if d == nil {
		return new(Pubcomp)
	}
	return &d.pubcomp
}

func (d *Decoder) reuseRegister() *Register {
	if d == nil {
		return new(Register)
	}
	return &d.register
}

func (d *Decoder) reuseRegack() *Regack {
	if d == nil {
		return new(Regack)
	}
	return &d.regack
}

func (d *Decoder) reusePingreq() *Pingreq {
	if d == nil {
		return new(Pingreq)
	}
	return &d.pingreq
}

func (d *Decoder) reusePingresp() *Pingresp {
	if d == nil {
		return new(Pingresp)
	}
	return &d.pingresp
}

// str returns b as a string: a copy, or for a short b the copy d made last
// time it saw the same octets in the same slot.
func (d *Decoder) str(b []byte) string {
	if d == nil || len(b) == 0 || len(b) > internMax {
		return string(b)
	}
	// FNV-1a, 32 bits.
	h := uint32(2166136261)
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	slot := &d.strs[h%internSlots]
	if *slot == string(b) { // compares without a copy
		return *slot
	}
	s := string(b)
	*slot = s
	return s
}
