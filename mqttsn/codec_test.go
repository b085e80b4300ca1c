package mqttsn

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestDecodeFixtures(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			got, err := Decode(fx.raw)
			if err != nil {
				t.Fatalf("Decode(% x): %v", fx.raw, err)
			}
			if !reflect.DeepEqual(got, fx.msg) {
				t.Errorf("Decode(% x)\n got %#v\nwant %#v", fx.raw, got, fx.msg)
			}
			if got.Type() != fx.msg.Type() {
				t.Errorf("Type() = %v, want %v", got.Type(), fx.msg.Type())
			}
		})
	}
}

func TestAppendFixtures(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			got, err := Append(nil, fx.msg)
			if err != nil {
				t.Fatalf("Append: %v", err)
			}
			if !bytes.Equal(got, fx.raw) {
				t.Errorf("Append(%#v)\n got % x\nwant % x", fx.msg, got, fx.raw)
			}
			// Appending keeps what the buffer held.
			prefix := []byte("prefix")
			got, err = Append(prefix, fx.msg)
			if err != nil {
				t.Fatalf("Append after prefix: %v", err)
			}
			if !bytes.HasPrefix(got, []byte("prefix")) || !bytes.Equal(got[len("prefix"):], fx.raw) {
				t.Errorf("Append(prefix) = % x", got)
			}
		})
	}
}

// TestFixturesCoverEveryType makes sure no message type lacks a fixture.
func TestFixturesCoverEveryType(t *testing.T) {
	seen := map[MsgType]bool{}
	for _, fx := range fixtures {
		seen[fx.msg.Type()] = true
	}
	for i := range 256 {
		mt := MsgType(i)
		if mt.Known() && !seen[mt] {
			t.Errorf("no fixture for %v", mt)
		}
	}
}

// decodeError is a datagram Decode must reject with the sentinel err.
type decodeError struct {
	name string
	raw  []byte
	err  error
}

var decodeErrors = []decodeError{
	// Header.
	{"empty", []byte{}, ErrTruncated},
	{"length_only", []byte{0x02}, ErrTruncated},
	{"long_form_cut_in_length", []byte{0x01, 0x00}, ErrTruncated},
	{"long_form_no_type", []byte{0x01, 0x00, 0x04}, ErrTruncated},
	{"length_beyond_datagram", []byte{
		0x05,       // Length 5
		0x0F,       // PUBREC
		0x00, 0x01, // MsgId, one octet missing
	}, ErrTruncated},
	{"trailing_octet", []byte{
		0x02, // Length 2
		0x17, // PINGRESP
		0x00, // not counted by Length
	}, ErrLengthMismatch},
	{"length_zero", []byte{0x00, 0x17}, ErrLengthMismatch},
	{"long_form_length_too_small", []byte{
		0x01, 0x00, 0x02, // Length 2, smaller than the 4-octet header
		0x17, // PINGRESP
	}, ErrLengthMismatch},
	{"long_form_length_beyond_datagram", []byte{
		0x01, 0x00, 0x05, // Length 5
		0x17, // PINGRESP, one octet missing
	}, ErrTruncated},
	{"long_form_trailing_octet", []byte{
		0x01, 0x00, 0x04, // Length 4
		0x17, // PINGRESP
		0x00, // not counted by Length
	}, ErrLengthMismatch},
	{"long_form_publish_cut", append([]byte{
		0x01, 0x01, 0x35, // Length 309
		0x0C,       // PUBLISH
		0x20,       // Flags QoS 1
		0x00, 0x05, // TopicId
		0x00, 0x02, // MsgId
	}, long300[:299]...), ErrTruncated}, // Data one octet short

	// Message types.
	{"reserved_type_0x03", []byte{0x02, 0x03}, ErrUnknownType},
	{"reserved_type_0x11", []byte{0x02, 0x11}, ErrUnknownType},
	{"reserved_type_0x19", []byte{0x02, 0x19}, ErrUnknownType},
	{"reserved_type_0x1e", []byte{0x02, 0x1E}, ErrUnknownType},
	{"reserved_type_0xff", []byte{0x02, 0xFF}, ErrUnknownType},

	// Bodies.
	{"advertise_short", []byte{0x04, 0x00, 0x07, 0x03}, ErrTruncated},
	{"advertise_long", []byte{0x06, 0x00, 0x07, 0x03, 0x84, 0x00}, ErrExtraOctets},
	{"gwinfo_no_gwid", []byte{0x02, 0x02}, ErrTruncated},
	{"connack_empty", []byte{0x02, 0x05}, ErrTruncated},
	{"connect_short", []byte{0x05, 0x04, 0x04, 0x01, 0x00}, ErrTruncated},
	{"connect_bad_protocol_id", []byte{
		0x07,       // Length 7
		0x04,       // CONNECT
		0x04,       // Flags CleanSession
		0x02,       // ProtocolId 0x02: not MQTT-SN 1.2
		0x00, 0x3C, // Duration
		'c', // ClientId
	}, ErrBadProtocolID},
	{"willtopicreq_body", []byte{0x03, 0x06, 0x00}, ErrExtraOctets},
	{"register_short", []byte{0x05, 0x0A, 0x00, 0x00, 0x01}, ErrTruncated},
	{"regack_long", []byte{0x08, 0x0B, 0, 5, 0, 1, 0, 0}, ErrExtraOctets},
	{"publish_short", []byte{0x06, 0x0C, 0x00, 0x00, 0x05, 0x00}, ErrTruncated},
	{"publish_reserved_topic_id_type", []byte{
		0x07,       // Length 7
		0x0C,       // PUBLISH
		0x03,       // Flags: TopicIdType 11, reserved
		0x00, 0x01, // TopicId
		0x00, 0x00, // MsgId
	}, ErrReservedTopicIDType},
	{"puback_short", []byte{0x06, 0x0D, 0, 5, 0, 1}, ErrTruncated},
	{"pubrec_long", []byte{0x05, 0x0F, 0x00, 0x01, 0x02}, ErrExtraOctets},
	{"pubrel_short", []byte{0x03, 0x10, 0x00}, ErrTruncated},
	{"subscribe_short", []byte{0x04, 0x12, 0x00, 0x00}, ErrTruncated},
	{"subscribe_reserved_topic_id_type", []byte{
		0x06,       // Length 6
		0x12,       // SUBSCRIBE
		0x03,       // Flags: TopicIdType 11, reserved
		0x00, 0x01, // MsgId
		'a', // topic
	}, ErrReservedTopicIDType},
	{"subscribe_predefined_one_octet", []byte{0x06, 0x12, 0x01, 0x00, 0x01, 0x05}, ErrTruncated},
	{"subscribe_short_three_octets", []byte{0x08, 0x12, 0x02, 0x00, 0x01, 'a', 'b', 'c'}, ErrExtraOctets},
	{"unsubscribe_reserved_topic_id_type", []byte{0x07, 0x14, 0x03, 0x00, 0x01, 0x00, 0x01}, ErrReservedTopicIDType},
	{"suback_short", []byte{0x07, 0x13, 0x20, 0, 6, 0, 3}, ErrTruncated},
	{"pingresp_body", []byte{0x03, 0x17, 0x00}, ErrExtraOctets},
	{"disconnect_half_duration", []byte{0x03, 0x18, 0x02}, ErrTruncated},
	{"disconnect_long", []byte{0x05, 0x18, 0x02, 0x58, 0x00}, ErrExtraOctets},
	{"willtopicresp_empty", []byte{0x02, 0x1B}, ErrTruncated},
	{"willmsgresp_long", []byte{0x04, 0x1D, 0x00, 0x00}, ErrExtraOctets},

	// Forwarder encapsulation.
	{"encapsulated_no_inner", []byte{
		0x03, // Length 3
		0xFE, // Encapsulated
		0x00, // Ctrl, empty WirelessNodeId, nothing after
	}, ErrTruncated},
	{"encapsulated_no_ctrl", []byte{
		0x02, // Length 2: no room for Ctrl
		0xFE, // Encapsulated
		0x02, 0x16,
	}, ErrLengthMismatch},
	{"encapsulated_length_beyond_datagram", []byte{
		0x09, // Length 9
		0xFE, // Encapsulated
		0x00, // Ctrl
		0x01, // WirelessNodeId, cut
	}, ErrTruncated},
	{"encapsulated_nested", []byte{
		0x03, 0xFE, 0x00, // outer header, Ctrl 0
		0x03, 0xFE, 0x00, // inner header: encapsulated again
		0x02, 0x16, // PINGREQ
	}, ErrNestedEncapsulation},
	{"encapsulated_inner_truncated", []byte{
		0x03, 0xFE, 0x00, // header, Ctrl 0
		0x05, 0x0C, // inner PUBLISH, cut
	}, ErrTruncated},
	{"encapsulated_inner_trailing", []byte{
		0x03, 0xFE, 0x00, // header, Ctrl 0
		0x02, 0x16, // inner PINGREQ
		0x00, // not counted by the inner Length
	}, ErrLengthMismatch},
	{"encapsulated_inner_unknown_type", []byte{
		0x03, 0xFE, 0x00, // header, Ctrl 0
		0x02, 0x03, // inner MsgType reserved
	}, ErrUnknownType},
	{"encapsulated_inner_bad_protocol_id", []byte{
		0x04, 0xFE, 0x00, 0x2A, // header, Ctrl 0, WirelessNodeId 0x2A
		0x06, 0x04, 0x00, 0x03, 0x00, 0x0A, // inner CONNECT, ProtocolId 3
	}, ErrBadProtocolID},
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range decodeErrors {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Decode(tc.raw)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Decode(% x) = %#v, %v; want error %v", tc.raw, m, err, tc.err)
			}
			if m != nil {
				t.Errorf("Decode returned a message with an error: %#v", m)
			}
			if !strings.HasPrefix(err.Error(), "mqttsn: decode") {
				t.Errorf("error %q lacks the mqttsn: decode prefix", err)
			}
		})
	}
}

func TestDecodeErrorText(t *testing.T) {
	for _, tc := range []struct {
		raw  []byte
		want string
	}{
		{[]byte{0x06, 0x0C, 0x00, 0x00, 0x05, 0x00}, "mqttsn: decode PUBLISH: truncated message"},
		{[]byte{0x02, 0x03}, "mqttsn: decode MsgType(0x03): unknown message type"},
		{[]byte{0x01}, "mqttsn: decode: truncated message"},
		{[]byte{0x03, 0xFE, 0x00, 0x05, 0x0C}, "mqttsn: decode ENCAPSULATED: inner PUBLISH: truncated message"},
	} {
		_, err := Decode(tc.raw)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Decode(% x) error = %v, want %q", tc.raw, err, tc.want)
		}
	}
}

// TestDecodeNonCanonical covers encodings Decode accepts but Append never
// produces.
func TestDecodeNonCanonical(t *testing.T) {
	for _, tc := range []struct {
		name      string
		raw       []byte
		want      Message
		canonical []byte
	}{
		{
			name: "long_form_for_short_message",
			raw: []byte{
				0x01, 0x00, 0x06, // Length 6, 3-octet form
				0x0F,       // PUBREC
				0x00, 0x09, // MsgId 9
			},
			want:      &Pubrec{MsgID: 9},
			canonical: []byte{0x04, 0x0F, 0x00, 0x09},
		},
		{
			name: "willtopic_zero_flags_no_topic",
			raw: []byte{
				0x03, // Length 3
				0x07, // WILLTOPIC
				0x00, // Flags 0, empty topic: same meaning as the empty WILLTOPIC
			},
			want:      &WillTopic{},
			canonical: []byte{0x02, 0x07},
		},
		{
			name: "encapsulated_long_form_header",
			raw: []byte{
				0x01, 0x00, 0x05, // Length 5, 3-octet form
				0xFE,       // Encapsulated
				0x00,       // Ctrl
				0x02, 0x17, // inner PINGRESP
			},
			want:      &Encapsulated{Inner: &Pingresp{}},
			canonical: []byte{0x03, 0xFE, 0x00, 0x02, 0x17},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(tc.raw)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %#v, want %#v", got, tc.want)
			}
			enc, err := Append(nil, got)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(enc, tc.canonical) {
				t.Errorf("re-encoded % x, want % x", enc, tc.canonical)
			}
		})
	}
}

// TestFlagsEveryOctet checks that each of the 256 flag octets decodes to a
// Flags value that encodes back to the same octet.
func TestFlagsEveryOctet(t *testing.T) {
	seen := map[Flags]bool{}
	for i := range 256 {
		f := parseFlags(byte(i))
		b, err := f.octet()
		if err != nil || b != byte(i) {
			t.Errorf("octet 0x%02X: parsed %+v, encoded 0x%02X, %v", i, f, b, err)
		}
		seen[f] = true
	}
	if len(seen) != 256 {
		t.Errorf("%d distinct Flags values, want 256", len(seen))
	}
}

func TestLengthFormBoundary(t *testing.T) {
	for _, tc := range []struct {
		dataLen  int
		wantLen  int
		wantLong bool
	}{
		{248, 255, false}, // 2 header + 5 fields + 248 = 255: last short form
		{249, 258, true},  // 256 would not fit: 4 header + 5 + 249
		{MaxLength - 9, MaxLength, true},
	} {
		m := &Publish{TopicID: 1, Data: make([]byte, tc.dataLen)}
		b, err := Append(nil, m)
		if err != nil {
			t.Fatalf("data %d: %v", tc.dataLen, err)
		}
		if len(b) != tc.wantLen || (b[0] == 0x01) != tc.wantLong {
			t.Errorf("data %d: encoded %d octets, header % x", tc.dataLen, len(b), b[:4])
		}
		got, err := Decode(b)
		if err != nil || !reflect.DeepEqual(got, m) {
			t.Errorf("data %d: round trip: %v", tc.dataLen, err)
		}
	}
}

// badMessage is a Message the codec does not know.
type badMessage struct{}

func (badMessage) Type() MsgType { return MsgPublish }

func TestAppendErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  Message
		err  error
	}{
		{"nil", nil, ErrInvalidMessage},
		{"foreign_type", badMessage{}, ErrUnknownType},
		{"qos_3", &Publish{Flags: Flags{QoS: 3}}, ErrBadQoS},
		{"qos_minus_2", &Suback{Flags: Flags{QoS: -2}}, ErrBadQoS},
		{"topic_id_type_4", &Publish{Flags: Flags{TopicIDType: 4}}, ErrBadTopicIDType},
		{"publish_reserved_topic_id_type", &Publish{Flags: Flags{TopicIDType: TopicReserved}}, ErrReservedTopicIDType},
		{"subscribe_reserved_topic_id_type", &Subscribe{Flags: Flags{TopicIDType: TopicReserved}}, ErrReservedTopicIDType},
		{"subscribe_name_with_id", &Subscribe{TopicName: "a", TopicID: 1}, ErrInvalidMessage},
		{"subscribe_predefined_with_name", &Subscribe{Flags: Flags{TopicIDType: TopicPredefined}, TopicName: "a"}, ErrInvalidMessage},
		{"unsubscribe_short_with_name", &Unsubscribe{Flags: Flags{TopicIDType: TopicShort}, TopicName: "ab"}, ErrInvalidMessage},
		{"connect_protocol_id_2", &Connect{ProtocolID: 2}, ErrBadProtocolID},
		{"disconnect_duration_without_flag", &Disconnect{Duration: 10}, ErrInvalidMessage},
		{"willtopic_bad_qos", &WillTopic{Flags: Flags{QoS: 5}, Topic: "t"}, ErrBadQoS},
		{"too_long", &Publish{Data: make([]byte, MaxLength-8)}, ErrTooLong},
		{"encapsulated_no_inner", &Encapsulated{}, ErrInvalidMessage},
		{"encapsulated_nested", &Encapsulated{Inner: &Encapsulated{Inner: &Pingreq{}}}, ErrNestedEncapsulation},
		{"encapsulated_bad_inner", &Encapsulated{Inner: &Publish{Flags: Flags{QoS: 7}}}, ErrBadQoS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := []byte("keep")
			got, err := Append(dst, tc.msg)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Append error = %v, want %v", err, tc.err)
			}
			if string(got) != "keep" {
				t.Errorf("Append changed dst on error: %q", got)
			}
			if !strings.HasPrefix(err.Error(), "mqttsn: encode") {
				t.Errorf("error %q lacks the mqttsn: encode prefix", err)
			}
		})
	}
}

func TestConnectZeroProtocolID(t *testing.T) {
	b, err := Append(nil, &Connect{Duration: 1, ClientID: "c"})
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0x07, 0x04, 0x00, 0x01, 0x00, 0x01, 'c'}
	if !bytes.Equal(b, want) {
		t.Errorf("got % x, want % x", b, want)
	}
}

func TestDecodeAliasesInput(t *testing.T) {
	raw := []byte{0x08, 0x0C, 0x00, 0x00, 0x05, 0x00, 0x00, 'a'}
	m, err := Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	raw[7] = 'b'
	if got := string(m.(*Publish).Data); got != "b" {
		t.Errorf("Data = %q; Decode is documented to alias its input", got)
	}
}

func TestDecodeAllocs(t *testing.T) {
	raw := fixtureRaw(t, "publish_qos1_dup_retain")
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := Decode(raw); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 {
		t.Errorf("Decode PUBLISH: %v allocations, want 1", allocs)
	}
	buf := make([]byte, 0, 64)
	m := &Publish{Flags: Flags{QoS: QoS1}, TopicID: 1, MsgID: 2, Data: []byte("payload")}
	allocs = testing.AllocsPerRun(100, func() {
		if _, err := Append(buf[:0], m); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Append PUBLISH into a large enough buffer: %v allocations, want 0", allocs)
	}
}

func fixtureRaw(t testing.TB, name string) []byte {
	t.Helper()
	for _, fx := range fixtures {
		if fx.name == name {
			return fx.raw
		}
	}
	t.Fatalf("no fixture %q", name)
	return nil
}

func TestShortTopic(t *testing.T) {
	id, err := ShortTopicID("hi")
	if err != nil || id != 0x6869 {
		t.Fatalf("ShortTopicID(hi) = %#x, %v", id, err)
	}
	if got := ShortTopicName(id); got != "hi" {
		t.Errorf("ShortTopicName(%#x) = %q", id, got)
	}
	for _, bad := range []string{"", "a", "abc"} {
		if _, err := ShortTopicID(bad); !errors.Is(err, ErrShortTopicName) {
			t.Errorf("ShortTopicID(%q) error = %v", bad, err)
		}
	}
}

func TestStrings(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{MsgPublish.String(), "PUBLISH"},
		{MsgWillMsgResp.String(), "WILLMSGRESP"},
		{MsgEncapsulated.String(), "ENCAPSULATED"},
		{MsgType(0x11).String(), "MsgType(0x11)"},
		{MsgType(0xFF).String(), "MsgType(0xFF)"},
		{Accepted.String(), "accepted"},
		{InvalidTopicID.Error(), "rejected: invalid topic ID"},
		{ReturnCode(9).String(), "ReturnCode(0x09)"},
		{TopicShort.String(), "short"},
		{TopicIDType(7).String(), "TopicIDType(7)"},
		{QoSMinusOne.String(), "-1"},
		{QoS(5).String(), "QoS(5)"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	known := 0
	for i := range 256 {
		if MsgType(i).Known() {
			known++
		}
	}
	if known != 28 {
		t.Errorf("%d known message types, want 28", known)
	}
}

func TestReturnCodeErr(t *testing.T) {
	if Accepted.Err() != nil {
		t.Error("Accepted.Err() != nil")
	}
	err := fmt.Errorf("wrapped: %w", Congestion.Err())
	if !errors.Is(err, Congestion) || errors.Is(err, NotSupported) {
		t.Errorf("errors.Is does not see through %v", err)
	}
}
