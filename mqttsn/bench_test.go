package mqttsn

import "testing"

// benchPublish is a typical sensor reading: QoS 1 PUBLISH, 32-octet payload.
var benchPublish = &Publish{
	Flags:   Flags{QoS: QoS1},
	TopicID: 0x0105,
	MsgID:   0x2A2A,
	Data:    []byte(`{"t":21.5,"h":40.2,"bat":3.71}xx`),
}

// benchDatagrams are the per-datagram messages a gateway receives, each as
// a device sends it.
var benchDatagrams = []struct {
	name string
	msg  Message
}{
	{"publish_qos0", &Publish{TopicID: 0x0105, Data: benchPublish.Data}},
	{"publish_qos1", benchPublish},
	{"publish_qosm1", &Publish{Flags: Flags{QoS: QoSMinusOne, TopicIDType: TopicPredefined}, TopicID: 7, Data: benchPublish.Data}},
	{"puback", &Puback{TopicID: 0x0105, MsgID: 0x2A2A, ReturnCode: Accepted}},
	{"pingreq", &Pingreq{}},
	{"pingreq_wake", &Pingreq{ClientID: "sensor-0042"}},
	{"register", &Register{MsgID: 0x2A2A, TopicName: "sensors/0042/temperature"}},
}

// BenchmarkDecode is the function Decode, which allocates every message.
func BenchmarkDecode(b *testing.B) {
	for _, bd := range benchDatagrams {
		raw, err := Append(nil, bd.msg)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bd.name, func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecoder is a Decoder, as a gateway's reader uses it.
func BenchmarkDecoder(b *testing.B) {
	var d Decoder
	for _, bd := range benchDatagrams {
		raw, err := Append(nil, bd.msg)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bd.name, func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := d.Decode(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncode appends the messages a gateway sends per datagram to a
// reused buffer, each built in the call as the gateway builds its answers.
func BenchmarkEncode(b *testing.B) {
	buf := make([]byte, 0, 256)
	data := benchPublish.Data
	for _, bc := range []struct {
		name string
		f    func() ([]byte, error)
	}{
		{"publish_qos0", func() ([]byte, error) { return Append(buf[:0], &Publish{TopicID: 0x0105, Data: data}) }},
		{"publish_qos1", func() ([]byte, error) {
			return Append(buf[:0], &Publish{Flags: Flags{QoS: QoS1}, TopicID: 0x0105, MsgID: 0x2A2A, Data: data})
		}},
		{"puback", func() ([]byte, error) {
			return Append(buf[:0], &Puback{TopicID: 0x0105, MsgID: 0x2A2A, ReturnCode: Accepted})
		}},
		{"regack", func() ([]byte, error) { return Append(buf[:0], &Regack{TopicID: 0x0105, MsgID: 0x2A2A}) }},
		{"pingresp", func() ([]byte, error) { return Append(buf[:0], &Pingresp{}) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.f(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodePublish(b *testing.B) {
	raw, err := Append(nil, benchPublish)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendPublish(b *testing.B) {
	buf := make([]byte, 0, 256)
	b.SetBytes(int64(7 + len(benchPublish.Data)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = Append(buf[:0], benchPublish); err != nil {
			b.Fatal(err)
		}
	}
}
