package coap

import (
	"encoding/binary"

	"github.com/plgd-dev/go-coap/v3/message"
)

// badOptionReply answers a request carrying a critical option this gateway does
// not understand before go-coap sees it. go-coap answers such a request with 4.02
// and a text diagnostic ("unknown critical option(s): 9") seven times the size of
// a five-octet request: an amplification any spoofed source could use. RFC 7252
// §5.4.1 requires the 4.02 for a Confirmable request but makes the diagnostic only
// a SHOULD, so the reply here is bare (header and token, never larger than the
// request, §11.3); a Non-confirmable request is rejected with a Reset (§4.3).
// It returns nil when the datagram is not such a request (or is malformed, which
// go-coap then reports).
//
//	 0                   1                   2                   3
//	|Ver| T |  TKL  |      Code     |          Message ID           |
//	|   Token (if any, TKL bytes) ...
//	|   Options (if any) ...   |1 1 1 1 1 1 1 1|    Payload (if any) ...
func badOptionReply(d []byte) []byte {
	if len(d) < 4 {
		return nil
	}
	typ := message.Type(d[0] >> 4 & 0x3)
	tkl := int(d[0] & 0x0f)
	code := d[1]
	if code == 0 || code>>5 != 0 || tkl > 8 || len(d) < 4+tkl { // not a request (§12.1.1)
		return nil
	}
	if typ != message.Confirmable && typ != message.NonConfirmable {
		return nil
	}
	if !hasUnknownCritical(d[4+tkl:]) {
		return nil
	}
	if typ == message.NonConfirmable {
		return []byte{0x70, 0x00, d[2], d[3]} // Reset, same Message ID
	}
	// Piggybacked ACK, 4.02, same Message ID and token, no options, no payload.
	out := make([]byte, 4+tkl)
	out[0] = 0x60 | byte(tkl)
	out[1] = byte(4<<5 | 2)
	out[2], out[3] = d[2], d[3]
	copy(out[4:], d[4:4+tkl])
	return out
}

// hasUnknownCritical walks the options (§3.1) and reports an odd-numbered
// (critical, §5.4.6) option go-coap does not define, or one with an illegal
// length (§5.4.3). Q-Block options count as unknown: this listener does not
// offer them. Malformed options report false and are left to go-coap.
func hasUnknownCritical(p []byte) bool {
	num := 0
	for len(p) > 0 && p[0] != 0xff {
		delta, length := int(p[0]>>4), int(p[0]&0x0f)
		p = p[1:]
		var ok bool
		if delta, p, ok = extend(delta, p); !ok {
			return false
		}
		if length, p, ok = extend(length, p); !ok || length > len(p) {
			return false
		}
		num += delta
		id := message.OptionID(num)
		if num%2 == 1 {
			_, known := message.CoapOptionDefs[id]
			if !known || id == message.QBlock1 || id == message.QBlock2 || !message.VerifyOptLen(id, length) {
				return true
			}
		}
		p = p[length:]
	}
	return false
}

// extend decodes an option delta or length nibble's extended form (§3.1).
func extend(v int, p []byte) (int, []byte, bool) {
	switch v {
	case 13:
		if len(p) < 1 {
			return 0, p, false
		}
		return int(p[0]) + 13, p[1:], true
	case 14:
		if len(p) < 2 {
			return 0, p, false
		}
		return int(binary.BigEndian.Uint16(p)) + 269, p[2:], true
	case 15:
		return 0, p, false
	}
	return v, p, true
}
