package coap

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// notificationFixture is a Non-confirmable notification, field by field.
var notificationFixture = []byte{
	0x52,       // Ver 1, T 1 (NON), TKL 2
	0x45,       // Code 2.05 Content
	0x12, 0x34, // Message ID 0x1234
	'o', '1', // Token "o1"
	0x63, 0x01, 0x00, 0x02, // Observe (6): delta 6, length 3, 65538
	0x82, 0x01, 0x2c, // Max-Age (14): delta 8, length 2, 300 s
	0xff,          // payload marker
	'2', '1', '.', // payload "21."
}

func TestNotificationFixture(t *testing.T) {
	got := appendNotification(nil, false, 0x1234, []byte("o1"), 65538, 300, []byte("21."))
	if !bytes.Equal(got, notificationFixture) {
		t.Fatalf("got  % x\nwant % x", got, notificationFixture)
	}
}

// TestNotificationMatchesGoCoap: what appendNotification makes is what
// go-coap's encoder makes of the same notification, and decodes back to it.
func TestNotificationMatchesGoCoap(t *testing.T) {
	big := bytes.Repeat([]byte("b"), blockSize+1)
	for _, tc := range []struct {
		con     bool
		token   string
		seq     uint32
		maxAge  uint32
		payload []byte
	}{
		{false, "", 0, 0, nil},
		{true, "12345678", seqMask, 1<<32 - 1, []byte("v")},
		{false, "t", 255, 256, []byte{}},
		{true, "tok", 1 << 16, 129600, big},
	} {
		t.Run(fmt.Sprintf("%v/%q/%d", tc.con, tc.token, len(tc.payload)), func(t *testing.T) {
			got := appendNotification(nil, tc.con, 0xbeef, []byte(tc.token), tc.seq, tc.maxAge, tc.payload)
			want := goCoapNotification(t, tc.con, 0xbeef, []byte(tc.token), tc.seq, tc.maxAge, tc.payload)
			if !bytes.Equal(got, want) {
				t.Fatalf("got  % x\nwant % x", got, want)
			}
		})
	}
}

// goCoapNotification is the notification as go-coap encodes it.
func goCoapNotification(t testing.TB, con bool, mid uint16, token []byte, seq, maxAge uint32, payload []byte) []byte {
	m := pool.NewMessage(context.Background())
	m.SetCode(codes.Content)
	m.SetToken(token)
	m.SetMessageID(int32(mid))
	m.SetType(message.NonConfirmable)
	if con {
		m.SetType(message.Confirmable)
	}
	m.SetObserve(seq)
	m.SetOptionUint32(message.MaxAge, maxAge)
	if len(payload) > blockSize {
		v, _ := blockwise.EncodeBlockOption(blockwise.SZX1024, 0, true)
		m.SetOptionUint32(message.Block2, v)
		m.SetOptionUint32(message.Size2, uint32(len(payload)))
		payload = payload[:blockSize]
	}
	if len(payload) > 0 {
		m.SetBody(bytes.NewReader(payload))
	}
	b, err := m.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzNotification: every notification appendNotification makes decodes,
// with go-coap's decoder, to what it was made of.
func FuzzNotification(f *testing.F) {
	f.Add(false, uint16(0x1234), []byte("o1"), uint32(65538), uint32(300), []byte("21."))                                      // notificationFixture
	f.Add(true, uint16(0), []byte{}, uint32(0), uint32(0), []byte{})                                                           // empty everything
	f.Add(true, uint16(0xffff), []byte("12345678"), uint32(seqMask), uint32(1<<32-1), bytes.Repeat([]byte{0xff}, blockSize+1)) // first block
	f.Fuzz(func(t *testing.T, con bool, mid uint16, token []byte, seq, maxAge uint32, payload []byte) {
		if len(token) > 8 {
			token = token[:8]
		}
		seq &= seqMask
		b := appendNotification(nil, con, mid, token, seq, maxAge, payload)
		m := pool.NewMessage(context.Background())
		if _, err := m.UnmarshalWithDecoder(coder.DefaultCoder, b); err != nil {
			t.Fatalf("% x: %v", b, err)
		}
		obs, _ := m.Observe()
		age, _ := m.GetOptionUint32(message.MaxAge)
		body, _ := m.ReadBody()
		want := payload
		if len(want) > blockSize {
			want = want[:blockSize]
			if size, _ := m.GetOptionUint32(message.Size2); int(size) != len(payload) {
				t.Fatalf("Size2 %d, want %d", size, len(payload))
			}
		}
		if m.Code() != codes.Content || uint16(m.MessageID()) != mid || !bytes.Equal(m.Token(), token) ||
			obs != seq || age != maxAge || !bytes.Equal(body, want) || (m.Type() == message.Confirmable) != con {
			t.Fatalf("% x decodes to %v", b, m)
		}
	})
}
