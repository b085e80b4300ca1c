package gateway

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/mqttsn"
)

// Issue 10, reflection: "a spoofed 23-byte CONNECT + SUBSCRIBE to a retained
// 60 KB topic made the gateway send 240 047 bytes to the victim". A source
// that never answers anything (as a spoofed one cannot) is sent at most 3×
// what it sent; the held message is counted; a real client proves its address
// by answering the gateway's probe REGISTER and gets the message.

// floodBig is issue 10's large retained value.
const floodBig = 60000

// udpCount reads what comes to c until it has been quiet for quiet (or bound
// passed), and returns the octets and the messages.
func udpCount(t *testing.T, c *net.UDPConn, quiet, bound time.Duration) (int, []mqttsn.Message) {
	t.Helper()
	var (
		n  int
		ms []mqttsn.Message
	)
	buf := make([]byte, 70000)
	for end := time.Now().Add(bound); time.Now().Before(end); {
		_ = c.SetReadDeadline(time.Now().Add(quiet))
		k, err := c.Read(buf)
		if err != nil {
			break
		}
		n += k
		if m, err := mqttsn.Decode(buf[:k]); err == nil {
			ms = append(ms, m)
		}
	}
	return n, ms
}

func (r *snRaw) sendCounted(sent *int, m mqttsn.Message) {
	r.t.Helper()
	b, err := mqttsn.Append(nil, m)
	if err != nil {
		r.t.Fatal(err)
	}
	*sent += len(b)
	r.sendBytes(b)
}

// TestMQTTSNSpoofedSubscribeAmplification: CONNECT + SUBSCRIBE to a retained
// 60 KB topic, then a busy topic (more messages on it), from a socket that
// never answers: it gets CONNACK, SUBACK and a small probe REGISTER, at most
// 3× what it sent; the rest is held and counted.
func TestMQTTSNSpoofedSubscribeAmplification(t *testing.T) {
	env := startSN(t, snOpts{})
	env.pub(t, "abuse/big", strings.Repeat("R", floodBig), 1, true)
	r := env.raw(t)
	sent := 0
	r.sendCounted(&sent, &mqttsn.Connect{Flags: mqttsn.Flags{CleanSession: true}, Duration: 60, ClientID: "sp"})
	r.sendCounted(&sent, &mqttsn.Subscribe{MsgID: 1, TopicName: "abuse/big"})
	waitFor(t, 10*time.Second, "the retained message held", func() bool {
		return env.metric("mqttgw_amplification_held_bytes_total", "listener", "sn") >= floodBig
	})
	for i := range 3 { // a busy topic
		env.pub(t, "abuse/big", fmt.Sprintf("%d%s", i, strings.Repeat("B", 10000)), 1, false)
	}
	got, ms := udpCount(t, r.c, 500*time.Millisecond, 10*time.Second)
	var kinds []string
	probe := false
	for _, m := range ms {
		kinds = append(kinds, m.Type().String())
		if reg, ok := m.(*mqttsn.Register); ok && reg.TopicName == "$GW/probe" {
			probe = true
		}
	}
	t.Logf("the unproven source sent %d octets and got %d: %s; held %v octets", sent, got, strings.Join(kinds, " "),
		env.metric("mqttgw_amplification_held_bytes_total", "listener", "sn"))
	if got > 3*sent {
		t.Fatalf("an unproven source got %d octets for %d sent: more than 3×", got, sent)
	}
	if !probe {
		t.Error("no probe REGISTER")
	}
	if n := env.metric("mqttgw_amplification_held_total", "listener", "sn"); n < 1 {
		t.Errorf("held datagrams %v, want at least 1", n)
	}
	if n := env.metric("mqttgw_mqttsn_unproven_clients", "listener", "sn"); n != 1 {
		t.Errorf("unproven clients %v, want 1", n)
	}
}

// TestMQTTSNProvenClientGetsRetained: today's mqttsn.Client answers the probe
// REGISTER (MQTT-SN 1.2 §6.5) and gets the 60 KB retained message; the proof
// is counted.
func TestMQTTSNProvenClientGetsRetained(t *testing.T) {
	env := startSN(t, snOpts{})
	big := strings.Repeat("P", floodBig)
	env.pub(t, "abuse/big", big, 1, true)
	in := newSNInbox()
	c := env.connect(t, mqttsn.ClientOptions{ClientID: "real", CleanSession: true, OnMessage: in.on})
	if _, _, err := c.Subscribe(snCtx(t), "abuse/big", 1); err != nil {
		t.Fatal(err)
	}
	ms := in.wait(t, 1)
	if ms[0].payload != big || !ms[0].retain || ms[0].topic != "abuse/big" {
		t.Fatalf("got %d octets on %q (retain %v), want the retained %d", len(ms[0].payload), ms[0].topic, ms[0].retain, len(big))
	}
	if n := env.metric("mqttgw_mqttsn_address_proofs_total", "listener", "sn", "kind", "probe"); n != 1 {
		t.Errorf("probe proofs %v, want 1", n)
	}
	if n := env.metric("mqttgw_mqttsn_unproven_clients", "listener", "sn"); n != 0 {
		t.Errorf("unproven clients %v after the proof, want 0", n)
	}
	// A publisher proves itself with the random topic id of its REGISTER.
	p := env.connect(t, mqttsn.ClientOptions{ClientID: "pub", CleanSession: true})
	if err := p.Publish(snCtx(t), "abuse/pub", 1, false, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if n := env.metric("mqttgw_mqttsn_address_proofs_total", "listener", "sn", "kind", "topic_id"); n != 1 {
		t.Errorf("topic id proofs %v, want 1", n)
	}
}

// TestMQTTSNUnprovenConfig: [listener.mqttsn] max_unproven and unproven_rate
// are checked with the other keys and reach the listener.
func TestMQTTSNUnprovenConfig(t *testing.T) {
	const listener = "[[listener]]\nname = \"s\"\ntype = \"mqttsn\"\n[listener.mqttsn]\n"
	for text, want := range map[string]string{
		"max_unproven = -1":       "t.toml:5: listener[0].mqttsn.max_unproven: -1 is out of range",
		"unproven_rate = 2000000": "t.toml:5: listener[0].mqttsn.unproven_rate: 2e+06 is out of range",
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

	env := startSN(t, snOpts{mqttsn: "max_unproven = 2\nunproven_rate = 1"})
	for i := range 3 {
		r := env.raw(t)
		r.send(&mqttsn.Connect{Flags: mqttsn.Flags{CleanSession: true}, Duration: 60, ClientID: fmt.Sprintf("u%d", i)})
		snExpect[*mqttsn.Connack](r)
	}
	if n := env.metric("mqttgw_mqttsn_unproven_ended_total", "listener", "sn", "reason", "evicted"); n != 1 {
		t.Errorf("evicted = %v, want 1 (max_unproven = 2)", n)
	}
	if n := env.metric("mqttgw_mqttsn_unproven_clients", "listener", "sn"); n != 2 {
		t.Errorf("unproven clients = %v, want 2", n)
	}
	r := env.raw(t)
	for range 10 { // unproven_rate = 1: bursts of 2
		r.sendBytes([]byte{0x02, 0x03})
	}
	waitFor(t, 5*time.Second, "rate limited datagrams", func() bool { return env.dropped("rate_limited") >= 1 })
	if n := env.metric("mqttgw_source_rate_limited_total", "listener", "sn"); n < 1 {
		t.Errorf("mqttgw_source_rate_limited_total = %v", n)
	}
}

// TestMQTTSNReadBuffer: [[listener]] read_buffer reaches the mqttsn socket
// (udpgw.TuneSocket) and the mqttsns one (bound by pion, through
// udpgw.ListenControl); both export the kernel's drop count.
func TestMQTTSNReadBuffer(t *testing.T) {
	env := startSNS(t, "")
	b := startMosquitto(t, false)
	g := startGateway(t, upstreamTOML(b)+`
[[listener]]
name = "sn"
type = "mqttsn"
bind = "127.0.0.1:0"
read_buffer = 262144
`)
	var text strings.Builder
	if err := g.Metrics().WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), `mqttgw_udp_kernel_drops_total{listener="sn"} 0`) {
		t.Error("no kernel drop count for the mqttsn listener")
	}
	text.Reset()
	if err := env.g.Metrics().WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), `mqttgw_udp_kernel_drops_total{listener="sns"} 0`) {
		t.Error("no kernel drop count for the mqttsns listener")
	}
}
