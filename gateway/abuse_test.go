package gateway

import (
	"strings"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

// optEcho is the Echo option (RFC 9175 §2.2.1).
const optEcho = 252

// TestCoAPLargeGetEchoLibcoap: a GET of a value far larger than the request,
// from a source that has not proven its address, is answered 4.01 with an
// Echo option; libcoap's coap-client repeats it with the Echo value (RFC 9175
// §2.3), which proves its address, and prints the whole value, block-wise.
func TestCoAPLargeGetEchoLibcoap(t *testing.T) {
	env := startCoAP(t, coapOpts{})
	big := strings.Repeat("0123456789", 600) // 6000 bytes
	env.mqttPub(t, "abuse/big", big, true)
	out := coapClient(t, "-m", "get", env.url("/ps/abuse/big"))
	if strings.TrimSuffix(out, "\n") != big {
		t.Fatalf("coap-client printed %d bytes (%.40q...), want the %d-byte value", len(out), out, len(big))
	}
	if n := env.metric("mqttgw_coap_address_checks_total", "listener", "coap", "kind", "echo"); n < 1 {
		t.Errorf("4.01 Echo answers = %v, want at least 1", n)
	}
	if n := env.metric("mqttgw_sources_proven_total", "listener", "coap"); n < 1 {
		t.Errorf("proofs = %v, want at least 1", n)
	}
}

// TestCoAPSpoofedGetAmplification: the same GET from a raw socket that never
// answers anything, as from a spoofed address: whatever the gateway sends it
// is at most 3× the request, a 4.01 carrying an Echo option, and the held
// answer is counted.
func TestCoAPSpoofedGetAmplification(t *testing.T) {
	env := startCoAP(t, coapOpts{})
	env.mqttPub(t, "abuse/big", strings.Repeat("x", 6000), true)
	p := dialCoAP(t, env.addr)
	req := coapRequest(coapCON, codeGET, 0x5001, "sp", "/ps/abuse/big", nil)
	b := req.encode()
	p.send(b)
	got, echo := 0, false
	for deadline := time.Now().Add(500 * time.Millisecond); time.Now().Before(deadline); {
		d := p.recv(time.Until(deadline))
		if d == nil {
			break
		}
		got += len(d)
		if m, err := decodeCoAP(d); err == nil && codeStr(m.code) == "4.01" {
			for _, o := range m.opts {
				echo = echo || o.num == optEcho
			}
		}
	}
	if got == 0 || got > 3*len(b) {
		t.Fatalf("an unproven source got %d bytes for a %d-byte request, want 1..%d", got, len(b), 3*len(b))
	}
	if !echo {
		t.Error("no 4.01 with an Echo option")
	}
	if n := env.metric("mqttgw_amplification_held_bytes_total", "listener", "coap"); n < 1000 {
		t.Errorf("held bytes = %v, want the answer's", n)
	}
}

// TestCoAPObserveLargeLibcoap: an observer gets notifications far larger than
// its registration: libcoap answers the gateway's CoAP ping (RFC 7252 §4.3),
// which proves its address, and fetches the rest of each one block-wise.
func TestCoAPObserveLargeLibcoap(t *testing.T) {
	env := startCoAP(t, coapOpts{})
	obs := observe(t, 30, env.url("/ps/abuse/obs?c=watcher"))
	env.waitObservations(t, "coap", 1)
	waitFor(t, 10*time.Second, "observer proven", func() bool {
		return env.metric("mqttgw_sources_proven_total", "listener", "coap") >= 1
	})
	big := strings.Repeat("n", 3000) + ";"
	env.mqttPub(t, "abuse/obs", big, false)
	obs.waitOutput(t, 10*time.Second, big)
	if n := env.metric("mqttgw_amplification_held_total", "listener", "coap"); n != 0 {
		t.Errorf("held %v datagrams to a proven observer", n)
	}
}

// TestRawDownlinkBudget: a plain-UDP source can never prove its address, so
// what the gateway sends it (acks, downlinks) is paid for by what it sent: a
// 20-byte datagram buys 60 bytes; a larger downlink is held and counted, a
// smaller one goes.
func TestRawDownlinkBudget(t *testing.T) {
	b := startMosquitto(t, false)
	g := startGateway(t, downlinkConfig(b, `
[[downlink]]
name = "valve"
listener = "sensors"
filter = "cmd/{device}/valve"
deliver = "now"
`))
	pub := func(payload string) {
		b.Publish(t, mosquittotest.PubOptions{Username: "reader", Password: "reader-secret", Topic: "cmd/k1/valve", Payload: []byte(payload), QoS: 1})
	}
	dev := newUDPDevice(t, g.Gateway, "sensors")
	uplink := `{"id":"k1","temp":1}` // 20 bytes
	dev.send(uplink)
	waitFor(t, 5*time.Second, "session of k1", func() bool { _, ok := devicesOf(t, g.Gateway, "")["sensors/k1"]; return ok })
	pub(strings.Repeat("B", 3*len(uplink)+1))
	waitFor(t, 5*time.Second, "held downlink counted", func() bool {
		return g.metrics.Get("mqttgw_amplification_held_total", "listener", "sensors") == 1
	})
	dev.none(200 * time.Millisecond)
	small := strings.Repeat("s", 3*len(uplink))
	pub(small)
	if p, _ := dev.recv(5 * time.Second); p != small {
		t.Fatalf("downlink %q, want %q", p, small)
	}
	if v := g.metrics.Get("mqttgw_amplification_held_bytes_total", "listener", "sensors"); v != float64(3*len(uplink)+1) {
		t.Errorf("held bytes = %v, want %d", v, 3*len(uplink)+1)
	}
}

// TestReadBufferKernelDrops: [[listener]] read_buffer reaches the raw and
// CoAP sockets, whose kernel drop counts are exported per listener.
func TestReadBufferKernelDrops(t *testing.T) {
	env := startCoAP(t, coapOpts{listen: "read_buffer = 262144", extra: `
[[listener]]
name = "sensors"
type = "udp"
bind = "127.0.0.1:0"
read_buffer = 131072
`})
	var text strings.Builder
	if err := env.g.metrics.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"coap", "sensors"} {
		if !strings.Contains(text.String(), `mqttgw_udp_kernel_drops_total{listener="`+l+`"} 0`) {
			t.Errorf("no kernel drop count for listener %q", l)
		}
	}
}

// TestCoAPUnprovenConfig: [listener.coap] max_unproven and unproven_rate are
// checked with the other keys and reach the listener: with max_unproven = 2 a
// third unproven source evicts the oldest.
func TestCoAPUnprovenConfig(t *testing.T) {
	const listener = "[[listener]]\nname = \"c\"\ntype = \"coap\"\n[listener.coap]\n"
	for text, want := range map[string]string{
		"max_unproven = -1":       "t.toml:5: listener[0].coap.max_unproven: -1 is out of range",
		"unproven_rate = 2000000": "t.toml:5: listener[0].coap.unproven_rate: 2e+06 is out of range",
	} {
		_, ps := config.Parse("t.toml", []byte(listener+text+"\n"))
		var got []string
		for _, p := range ps.Errors() {
			got = append(got, p.Error())
		}
		if !strings.Contains(strings.Join(got, "\n"), want) {
			t.Errorf("%s: problems %q, want %q", text, got, want)
		}
	}

	env := startCoAP(t, coapOpts{coap: "max_unproven = 2\nunproven_rate = 5"})
	for i := range 3 {
		p := dialCoAP(t, env.addr)
		if r := p.do(coapRequest(coapCON, codeGET, uint16(0x6000+i), "u", "/ps/abuse/none", nil)); codeStr(r.code) != "4.04" {
			t.Fatalf("source %d: %s", i, codeStr(r.code))
		}
	}
	if n := env.metric("mqttgw_unproven_evicted_total", "listener", "coap"); n != 1 {
		t.Errorf("evicted = %v, want 1 (max_unproven = 2)", n)
	}
	if n := env.metric("mqttgw_unproven_sources", "listener", "coap"); n != 2 {
		t.Errorf("unproven sources = %v, want 2", n)
	}
}
