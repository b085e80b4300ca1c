package coap

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"time"
)

// echoer makes and checks the Echo option values (RFC 9175 §2.2) with which a
// source proves that it receives at its address (§2.4 item 3): a value only
// the gateway can make, bound to the address it was sent to, so that echoing
// it from that address proves the sender read it there. It is stateless: no
// memory is spent on a source until it proves itself.
//
//	 0                   1                   2                   3
//	|              issued (Unix seconds, 32 bits)                   |
//	|   HMAC-SHA-256(key, issued ‖ address (16) ‖ port (2)),        |
//	|   first 8 bytes                                               |
//
// 12 bytes, within the option's 1–40 (§2.2.1). §2.3 says a value used to
// prove reachability SHOULD be a MAC of the claimed address; the time bounds
// how long a value is accepted (echoValidity), so that one leaked value does
// not prove an address for ever.
type echoer struct {
	key [32]byte // random per listener: a restart invalidates older values
}

const (
	echoLen = 12
	// echoValidity is how long an Echo value proves its address.
	echoValidity = 5 * time.Minute
)

func newEchoer() *echoer {
	e := &echoer{}
	_, _ = rand.Read(e.key[:]) // crypto/rand.Read never fails (Go 1.24)
	return e
}

// value returns the Echo value for addr issued at now.
func (e *echoer) value(addr netip.AddrPort, now time.Time) []byte {
	v := make([]byte, 4, echoLen)
	binary.BigEndian.PutUint32(v, uint32(now.Unix()))
	return append(v, e.mac(v[:4], addr)...)
}

// valid reports whether v is a value this echoer issued for addr less than
// echoValidity before now.
func (e *echoer) valid(v []byte, addr netip.AddrPort, now time.Time) bool {
	if len(v) != echoLen {
		return false
	}
	issued := time.Unix(int64(binary.BigEndian.Uint32(v)), 0)
	if age := now.Sub(issued); age < -time.Minute || age > echoValidity {
		return false
	}
	return hmac.Equal(v[4:], e.mac(v[:4], addr))
}

func (e *echoer) mac(issued []byte, addr netip.AddrPort) []byte {
	h := hmac.New(sha256.New, e.key[:])
	h.Write(issued)
	a := addr.Addr().As16()
	h.Write(a[:])
	h.Write([]byte{byte(addr.Port() >> 8), byte(addr.Port())})
	return h.Sum(nil)[:echoLen-4]
}
