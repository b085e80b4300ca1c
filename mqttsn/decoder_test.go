package mqttsn

import (
	"bytes"
	"reflect"
	"testing"
)

// reusedTypes are the types a Decoder decodes into its own storage.
var reusedTypes = map[MsgType]bool{
	MsgPublish: true, MsgPuback: true, MsgPubrec: true, MsgPubrel: true, MsgPubcomp: true,
	MsgRegister: true, MsgRegack: true, MsgPingreq: true, MsgPingresp: true,
}

// primedDecoder returns a Decoder that has decoded every fixture, from
// copies of their bytes, so that each of its structs and strings holds an
// earlier message; clobber overwrites those copies, so that a field still
// aliasing them changes.
func primedDecoder(t testing.TB) (d *Decoder, clobber func()) {
	d = new(Decoder)
	var bufs [][]byte
	for _, fx := range fixtures {
		b := bytes.Clone(fx.raw)
		if _, err := d.Decode(b); err != nil {
			t.Fatalf("prime with %s: %v", fx.name, err)
		}
		bufs = append(bufs, b)
	}
	return d, func() {
		for _, b := range bufs {
			for i := range b {
				b[i] = 0xA5
			}
		}
	}
}

// sameDecode fails t unless the Decoder's answer for b is Decode's.
func sameDecode(t testing.TB, d *Decoder, b []byte) (Message, error) {
	t.Helper()
	want, werr := Decode(b)
	got, gerr := d.Decode(b)
	if (werr == nil) != (gerr == nil) || (werr != nil && werr.Error() != gerr.Error()) {
		t.Fatalf("% x: Decoder.Decode error %v, Decode error %v", b, gerr, werr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("% x: Decoder.Decode\n got %#v\nwant %#v (Decode)", b, got, want)
	}
	return got, gerr
}

// TestDecoderFixtures decodes every fixture and every error case with one
// Decoder, twice over and after a Decoder full of other messages: the
// results are Decode's every time.
func TestDecoderFixtures(t *testing.T) {
	d, clobber := primedDecoder(t)
	for range 2 {
		for _, fx := range fixtures {
			got, _ := sameDecode(t, d, fx.raw)
			clobber()
			if !reflect.DeepEqual(got, fx.msg) {
				t.Fatalf("%s: after the earlier datagrams changed\n got %#v\nwant %#v", fx.name, got, fx.msg)
			}
		}
		for _, tc := range decodeErrors {
			if m, _ := sameDecode(t, d, tc.raw); m != nil {
				t.Fatalf("%s: a message with an error: %#v", tc.name, m)
			}
		}
	}
}

// TestDecoderReuse checks which types share storage between calls: the
// per-datagram ones do, the others are the caller's.
func TestDecoderReuse(t *testing.T) {
	var d Decoder
	for _, fx := range fixtures {
		first, err := d.Decode(fx.raw)
		if err != nil {
			t.Fatal(err)
		}
		second, _ := d.Decode(fx.raw)
		if enc, ok := first.(*Encapsulated); ok {
			if first == second {
				t.Errorf("%s: Encapsulated reused", fx.name)
			}
			first, second = enc.Inner, second.(*Encapsulated).Inner
		}
		t1, _ := TypeOf(first)
		if reflect.TypeOf(first).Elem().Size() == 0 {
			continue // every empty struct has the same address
		}
		same := reflect.ValueOf(first).Pointer() == reflect.ValueOf(second).Pointer()
		if same != reusedTypes[t1] {
			t.Errorf("%s: %v reused = %v, want %v", fx.name, t1, same, reusedTypes[t1])
		}
	}
}

// TestDecoderStrings checks that a string a Decoder returns is a copy, the
// same one for the same octets, and never a string of other octets.
func TestDecoderStrings(t *testing.T) {
	var d Decoder
	raw := bytes.Clone(fixtureRaw(t, "register_from_client"))
	m, _ := d.Decode(raw)
	name := m.(*Register).TopicName
	raw[len(raw)-1] ^= 0x20 // change the name's last octet
	m2, _ := d.Decode(raw)
	if m2.(*Register).TopicName == name {
		t.Fatalf("changed name decoded as the earlier %q", name)
	}
	raw[len(raw)-1] ^= 0x20
	m3, _ := d.Decode(raw)
	if got := m3.(*Register).TopicName; got != name {
		t.Fatalf("TopicName = %q, want %q", got, name)
	}
	for i := range raw {
		raw[i] = 0
	}
	if m3.(*Register).TopicName != name {
		t.Fatal("the string aliases the datagram")
	}
	// Longer than what is remembered: still right.
	long := append([]byte{0x01, 0x00, 0x00, 0x0A, 0, 0, 0, 1}, bytes.Repeat([]byte("n"), 200)...)
	long[2] = byte(len(long))
	sameDecode(t, &d, long)
	sameDecode(t, &d, long)
}

// hotFixtures are the per-datagram messages the engine handles, which a
// Decoder decodes without allocating.
var hotFixtures = []string{
	"publish_qos0", "publish_qos1_dup_retain", "publish_qos2_predefined_empty", "publish_qosm1_short",
	"publish_long_form", "puback_invalid_topic", "pubrec", "pubrel", "pubcomp",
	"register_from_client", "register_from_gateway", "regack", "pingreq", "pingreq_wake", "pingresp",
	"encapsulated_publish",
}

func TestDecoderAllocs(t *testing.T) {
	var d Decoder
	for _, name := range hotFixtures {
		raw := fixtureRaw(t, name)
		if _, err := d.Decode(raw); err != nil { // strings remembered
			t.Fatal(err)
		}
		want := 0.0
		if name == "encapsulated_publish" {
			want = 1 // the Encapsulated; its inner PUBLISH is the Decoder's
		}
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := d.Decode(raw); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != want {
			t.Errorf("Decoder.Decode %s: %v allocations, want %v", name, allocs, want)
		}
	}
}

// TestAppendAllocs checks that Append of a message built in the call itself
// allocates nothing: the message stays on the caller's stack.
func TestAppendAllocs(t *testing.T) {
	buf := make([]byte, 0, 512)
	data := []byte("payload")
	for name, f := range map[string]func() ([]byte, error){
		"puback": func() ([]byte, error) {
			return Append(buf[:0], &Puback{TopicID: 1, MsgID: 2, ReturnCode: Accepted})
		},
		"regack": func() ([]byte, error) {
			return Append(buf[:0], &Regack{TopicID: 1, MsgID: 2})
		},
		"pingresp": func() ([]byte, error) { return Append(buf[:0], &Pingresp{}) },
		"publish": func() ([]byte, error) {
			return Append(buf[:0], &Publish{Flags: Flags{QoS: QoS1}, TopicID: 1, MsgID: 2, Data: data})
		},
		"encapsulated_puback": func() ([]byte, error) {
			return Append(buf[:0], &Encapsulated{WirelessNodeID: data[:2], Inner: &Puback{TopicID: 1, MsgID: 2}})
		},
	} {
		if allocs := testing.AllocsPerRun(100, func() {
			if _, err := f(); err != nil {
				t.Fatal(err)
			}
		}); allocs != 0 {
			t.Errorf("Append %s: %v allocations, want 0", name, allocs)
		}
	}
}
