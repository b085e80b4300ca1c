package mapping

import (
	"encoding/json"
	"testing"
)

// The benchmarks run the fixture datagrams through a table holding all three fixture
// rules in the order bin, json, text, so the regex line is first tried (and rejected)
// by the binary and JSON rules, as it would be in a real table.

func benchMap(b *testing.B, payload []byte) {
	tab := mustCompile(b, binRule(), jsonRule(), textRule())
	d := Datagram{Listener: "udp", From: testFrom, Payload: payload}
	var r Result
	if err := tab.Map(d, &r); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if err := tab.Map(d, &r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMapBinary: hex device, three scaled numbers, a json and a template publish.
func BenchmarkMapBinary(b *testing.B) { benchMap(b, binFrame) }

// BenchmarkMapJSON: device and three fields by JSON pointer, one json publish.
func BenchmarkMapJSON(b *testing.B) { benchMap(b, jsonDoc) }

// BenchmarkMapRegex: device and two typed fields from regex groups, two publishes.
func BenchmarkMapRegex(b *testing.B) { benchMap(b, textLine) }

// BenchmarkBaselineJSONDecode is the baseline for BenchmarkMapJSON: what a
// straightforward gateway does for the same datagram and output — encoding/json into
// a map, pick the fields, build the topic, marshal the fields back to JSON.
func BenchmarkBaselineJSONDecode(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(jsonDoc)))
	for b.Loop() {
		var m map[string]any
		if err := json.Unmarshal(jsonDoc, &m); err != nil {
			b.Fatal(err)
		}
		id, _ := m["id"].(string)
		out := map[string]any{"device": id, "temp": m["t"], "kind": m["kind"], "meta": m["meta"]}
		topic := "sensors/" + id + "/state"
		payload, err := json.Marshal(out)
		if err != nil || topic == "" || len(payload) == 0 {
			b.Fatal(err)
		}
	}
}
