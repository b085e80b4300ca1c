package mqttsn

import "testing"

// benchPublish is a typical sensor reading: QoS 1 PUBLISH, 32-octet payload.
var benchPublish = &Publish{
	Flags:   Flags{QoS: QoS1},
	TopicID: 0x0105,
	MsgID:   0x2A2A,
	Data:    []byte(`{"t":21.5,"h":40.2,"bat":3.71}xx`),
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
