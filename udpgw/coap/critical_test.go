package coap

import (
	"bytes"
	"testing"
)

func TestBadOptionReply(t *testing.T) {
	tests := []struct {
		name string
		req  []byte
		want []byte // nil: not answered here, go-coap handles it
	}{
		{"CON GET, unknown critical option 9, no token",
			[]byte{0x40, 0x01, 0x12, 0x34, 0x90},
			[]byte{0x60, 0x82, 0x12, 0x34}},
		{"CON GET, token ab, option 9 then Uri-Path ps",
			[]byte{0x41, 0x01, 0x00, 0x07, 0xab, 0x90, 0x22, 'p', 's'},
			[]byte{0x61, 0x82, 0x00, 0x07, 0xab}},
		{"NON POST, unknown critical option 13 via extended delta: Reset",
			[]byte{0x50, 0x02, 0x00, 0x09, 0xd0, 0x00},
			[]byte{0x70, 0x00, 0x00, 0x09}},
		{"CON GET, Uri-Path ps/x only: known",
			[]byte{0x40, 0x01, 0x00, 0x01, 0xb2, 'p', 's', 0x01, 'x'},
			nil},
		{"CON GET, unknown elective option 10 (even): ignored by the rules",
			[]byte{0x40, 0x01, 0x00, 0x01, 0xa0},
			nil},
		{"Observe with an illegal length (4 bytes > 3): critical? no, 6 is elective",
			[]byte{0x40, 0x01, 0x00, 0x01, 0x64, 1, 2, 3, 4},
			nil},
		{"Uri-Port (7, critical) with 3 bytes, over its 2: bad option",
			[]byte{0x40, 0x01, 0x00, 0x01, 0x73, 1, 2, 3},
			[]byte{0x60, 0x82, 0x00, 0x01}},
		{"a response (2.05) is not a request", []byte{0x60, 0x45, 0x00, 0x01, 0x90}, nil},
		{"malformed option nibble 15: left to go-coap", []byte{0x40, 0x01, 0x00, 0x01, 0xf0}, nil},
		{"truncated extended delta", []byte{0x40, 0x01, 0x00, 0x01, 0xe0, 0x01}, nil},
		{"too short", []byte{0x40, 0x01}, nil},
		{"payload marker ends options", []byte{0x40, 0x02, 0x00, 0x01, 0xff, 0x90}, nil},
	}
	for _, tt := range tests {
		got := badOptionReply(tt.req)
		if !bytes.Equal(got, tt.want) {
			t.Errorf("%s: got % x, want % x", tt.name, got, tt.want)
		}
		if got != nil && len(got) > len(tt.req) {
			t.Errorf("%s: reply of %d bytes to a request of %d: amplification", tt.name, len(got), len(tt.req))
		}
	}
}

// FuzzBadOptionReply: never panics, and never answers with more than it got.
func FuzzBadOptionReply(f *testing.F) {
	f.Add([]byte{0x40, 0x01, 0x12, 0x34, 0x90})                         // CON GET, option 9
	f.Add([]byte{0x48, 0x01, 0x00, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0x90}) // 8-byte token
	f.Add([]byte{0x50, 0x02, 0x00, 0x09, 0xe0, 0xff, 0xff})             // 2-byte extended delta
	f.Fuzz(func(t *testing.T, d []byte) {
		if r := badOptionReply(d); r != nil && len(r) > len(d) {
			t.Fatalf("reply %x longer than request %x", r, d)
		}
	})
}
