package mapping

import (
	"net/netip"
	"testing"

	"github.com/mqttgw/mqttgw/config"
)

// Shared fixtures: the three kinds of rule the gateway is built for, used by the
// feature tests, the fuzz targets and the benchmarks.

func intp(n int) *int { return &n }

var testFrom = netip.MustParseAddrPort("10.0.0.7:40001")

// testListeners: "udp" has a mountpoint, "lora" has none.
var testListeners = []config.Listener{
	{Name: "udp", Type: "udp", Bind: ":1700", Mountpoint: "site1/"},
	{Name: "lora", Type: "udp", Bind: ":1701"},
}

// binFrame is a frame of the "bin" rule:
//
//	a5 01              magic (match.hex_prefix)
//	00 11 22 33 44 55  device id, 6 bytes → "001122334455"
//	00 d7              temp, int16 big endian, ×0.1 → 21.5
//	01 90              hum, uint16 big endian, ×0.1 → 40
//	0c e4              batt, uint16 big endian, ×0.001 → 3.3
var binFrame = []byte{0xa5, 0x01, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x00, 0xd7, 0x01, 0x90, 0x0c, 0xe4}

// binRule: device as hex bytes, three scaled numbers, a json and a template publish.
func binRule() config.Rule {
	return config.Rule{
		Name:     "bin",
		Listener: "udp",
		Match:    config.Match{HexPrefix: "a501", MinLen: 14, MaxLen: 32},
		Device:   config.Extract{Offset: intp(2), Length: 6},
		Fields: map[string]config.Field{
			"temp": {Offset: intp(8), Type: "int16", Scale: 0.1},
			"hum":  {Offset: intp(10), Type: "uint16", Scale: 0.1},
			"batt": {Offset: intp(12), Type: "uint16", Scale: 0.001},
		},
		Publish: []config.Publish{
			{Topic: "sensors/{device}/state"},
			{Topic: "sensors/{device}/temp", Template: "{temp}", QoS: 1, Retain: true},
		},
	}
}

// jsonDoc is a datagram of the "json" rule.
var jsonDoc = []byte(`{"id":"dev-7","kind":"env","t":21.5,"meta":{"fw":"1.2"},"n":[1,2]}`)

// jsonRule: device and fields from JSON pointers.
func jsonRule() config.Rule {
	return config.Rule{
		Name:     "json",
		Listener: "udp",
		Match:    config.Match{JSON: true},
		Device:   config.Extract{JSON: "/id"},
		Fields: map[string]config.Field{
			"temp": {JSON: "/t"},
			"kind": {JSON: "/kind"},
			"meta": {JSON: "/meta"},
		},
		Publish: []config.Publish{
			{Topic: "sensors/{device}/{kind}"},
		},
	}
}

// textLine is a datagram of the "text" rule: kind, device, temperature, humidity.
var textLine = []byte("T,dev42,21.5,40")

// textRule: a regex with named groups; fields typed from groups.
func textRule() config.Rule {
	return config.Rule{
		Name:     "text",
		Listener: "udp",
		Match:    config.Match{TextPrefix: "T,", Regex: `^T,(?P<dev>[^,]*),(?P<t>[^,]*),(?P<h>[^,]*)$`},
		Device:   config.Extract{Group: "dev"},
		Fields: map[string]config.Field{
			"temp": {Group: "t", Type: "float64"},
			"hum":  {Group: "h", Type: "uint8"},
		},
		Publish: []config.Publish{
			{Topic: "text/{dev}", Payload: "template", Template: "{temp};{hum}"},
			{Topic: "text/{device}/json"},
		},
	}
}

// mustCompile compiles rules for the test listeners and fails on any problem.
func mustCompile(tb testing.TB, rules ...config.Rule) *Table {
	tb.Helper()
	t, ps := Compile("gw1", testListeners, rules)
	if len(ps) > 0 || t == nil {
		tb.Fatalf("Compile: %v", ps)
	}
	return t
}
