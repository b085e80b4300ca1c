package mqttsn

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/udpgw"
)

// counted is a device that counts the octets it sends and receives, as the
// victim of a spoofed source would see them.
type counted struct {
	*device
	sent, got int
}

func (te *testEngine) counted(t *testing.T) *counted { return &counted{device: te.device(t)} }

func (d *counted) send(m mqttsn.Message) {
	d.t.Helper()
	b, err := mqttsn.Append(nil, m)
	if err != nil {
		d.t.Fatal(err)
	}
	if _, err := d.c.Write(b); err != nil {
		d.t.Fatal(err)
	}
	d.sent += len(b)
}

// drain reads what comes within wait, counting it.
func (d *counted) drain(wait time.Duration) []mqttsn.Message {
	d.t.Helper()
	var ms []mqttsn.Message
	buf := make([]byte, 70000)
	for {
		_ = d.c.SetReadDeadline(time.Now().Add(wait))
		n, err := d.c.Read(buf)
		if err != nil {
			return ms
		}
		d.got += n
		m, err := mqttsn.Decode(buf[:n])
		if err != nil {
			d.t.Fatalf("undecodable % x: %v", buf[:n], err)
		}
		ms = append(ms, m)
	}
}

func (te *testEngine) metric(name string, labels ...string) float64 {
	return te.reg.Get(name, append([]string{"listener", "sn"}, labels...)...)
}

func probeOf(t *testing.T, ms []mqttsn.Message) *mqttsn.Register {
	t.Helper()
	for _, m := range ms {
		if r, ok := m.(*mqttsn.Register); ok && r.TopicName == probeTopic {
			return r
		}
	}
	t.Fatalf("no probe REGISTER among %s", kinds(ms))
	return nil
}

func kinds(ms []mqttsn.Message) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.Type().String())
	}
	return strings.Join(s, " ")
}

// TestUnprovenRetainedHeld is the reflection of issue 10: a source that never
// answers (as a spoofed one) sends CONNECT and SUBSCRIBE to a topic with a
// large retained message. It is sent CONNACK, SUBACK and a small probe
// REGISTER, never more than 3 times what it sent, however long it waits; the
// held message is counted. Once the probe is answered, the message goes.
func TestUnprovenRetainedHeld(t *testing.T) {
	te := startEngine(t, nil)
	d := te.counted(t)
	d.send(&mqttsn.Connect{Flags: mqttsn.Flags{CleanSession: true}, Duration: 60, ClientID: "v"})
	d.send(&mqttsn.Subscribe{MsgID: 1, TopicName: "big"})
	waitUntil(t, "the subscription", func() bool {
		te.b.mu.Lock()
		defer te.b.mu.Unlock()
		return te.b.subs["v"]["big"] != nil
	})
	big := bytes.Repeat([]byte("x"), 6000)
	te.b.send(t, "v", "big", udpgw.Message{Topic: "big", Payload: big, QoS: 1, Retain: true})
	ms := d.drain(200 * time.Millisecond)
	probe := probeOf(t, ms)
	for range 4 { // probes again, never beyond the budget (and lives on)
		te.tick(te.o.UnprovenTTL / 5)
		ms = append(ms, d.drain(20*time.Millisecond)...)
	}
	if d.got > 3*d.sent {
		t.Fatalf("an unproven source got %d octets (%s) for %d sent: more than 3×", d.got, kinds(ms), d.sent)
	}
	if held := te.metric("mqttgw_amplification_held_bytes_total"); held < float64(len(big)) {
		t.Errorf("held bytes %v, want at least the message's %d", held, len(big))
	}
	// The client answers the probe: its address is proven, the message goes.
	d.send(&mqttsn.Regack{TopicID: probe.TopicID, MsgID: probe.MsgID, ReturnCode: mqttsn.Accepted})
	p := recv[*mqttsn.Publish](d.device)
	if !bytes.Equal(p.Data, big) || !p.Flags.Retain {
		t.Fatalf("PUBLISH of %d octets, want the retained %d", len(p.Data), len(big))
	}
	if n := te.metric("mqttgw_mqttsn_address_proofs_total", "kind", "probe"); n != 1 {
		t.Errorf("probe proofs %v, want 1", n)
	}
	if n := te.metric("mqttgw_mqttsn_unproven_clients"); n != 0 {
		t.Errorf("unproven clients %v after the proof, want 0", n)
	}
}

// TestUnprovenProofByTopicID: a client that REGISTERs gets a random topic id
// while its address is unproven; its PUBLISH naming it proves the address,
// with no extra message. A guessed id proves nothing.
func TestUnprovenProofByTopicID(t *testing.T) {
	te := startEngine(t, nil)
	d := te.device(t)
	d.connect("pub", 60, true)
	d.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: 1, MsgID: 1, Data: []byte("guess")})
	if pa := recv[*mqttsn.Puback](d); pa.ReturnCode != mqttsn.InvalidTopicID {
		t.Fatalf("PUBACK %+v to a guessed id", pa)
	}
	id := d.register("t")
	d.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: id, MsgID: 2, Data: []byte("x")})
	recv[*mqttsn.Puback](d)
	if n := te.metric("mqttgw_mqttsn_address_proofs_total", "kind", "topic_id"); n != 1 {
		t.Fatalf("topic id proofs %v, want 1", n)
	}
	if !te.sources.IsProven(localAddr(d), te.clock.Now()) {
		t.Fatal("address not proven")
	}
	// Proven: a large message goes at once, no probe.
	d.subscribe("big", 0)
	te.b.send(t, "pub", "big", udpgw.Message{Topic: "big", Payload: make([]byte, 5000)})
	if p := recv[*mqttsn.Publish](d); len(p.Data) != 5000 {
		t.Fatalf("PUBLISH of %d octets", len(p.Data))
	}
}

// TestUnprovenProofByMsgID: a QoS 1 message within the budget goes; the
// PUBACK echoing its (random) MsgId proves the address.
func TestUnprovenProofByMsgID(t *testing.T) {
	te := startEngine(t, nil)
	d := te.device(t)
	d.connect("sub", 60, true)
	d.subscribe("s", 1)
	te.b.send(t, "sub", "s", udpgw.Message{Topic: "s", Payload: []byte("hi"), QoS: 1})
	p := recv[*mqttsn.Publish](d)
	d.send(&mqttsn.Puback{TopicID: p.TopicID, MsgID: p.MsgID + 1, ReturnCode: mqttsn.Accepted}) // not the MsgId
	d.none(50 * time.Millisecond)
	if n := te.metric("mqttgw_mqttsn_address_proofs_total", "kind", "msgid"); n != 0 {
		t.Fatalf("a wrong MsgId proved the address")
	}
	d.send(&mqttsn.Puback{TopicID: p.TopicID, MsgID: p.MsgID, ReturnCode: mqttsn.Accepted})
	waitUntil(t, "the proof", func() bool { return te.metric("mqttgw_mqttsn_address_proofs_total", "kind", "msgid") == 1 })
}

// TestUnprovenClientExpires: a client connected from an address that never
// proves it is probed when quiet and ended after UnprovenTTL of silence,
// without its will; its record and session go. A sleeping one stays.
func TestUnprovenClientExpires(t *testing.T) {
	te := startEngine(t, nil)
	ttl := te.o.UnprovenTTL
	d := te.counted(t)
	d.send(&mqttsn.Connect{Flags: mqttsn.Flags{CleanSession: true}, Duration: 600, ClientID: "ghost"})
	recv[*mqttsn.Connack](d.device)
	s := te.device(t)
	s.connect("sleeper", 600, false)
	s.send(&mqttsn.Disconnect{Duration: 600, HasDuration: true})
	recv[*mqttsn.Disconnect](s)
	if n := te.metric("mqttgw_mqttsn_unproven_clients"); n != 2 {
		t.Fatalf("unproven clients %v, want 2", n)
	}
	te.tick(ttl/2 + time.Millisecond)
	probeOf(t, d.drain(100*time.Millisecond)) // quiet: probed
	s.none(50 * time.Millisecond)             // asleep: not probed
	te.tick(ttl / 2)
	d.drain(100 * time.Millisecond) // the unsolicited DISCONNECT, within the budget
	if n := te.metric("mqttgw_mqttsn_unproven_ended_total", "reason", "expired"); n != 1 {
		t.Fatalf("expired %v, want 1", n)
	}
	te.mu.Lock()
	_, ghost := te.byID["ghost"]
	_, sleeper := te.byID["sleeper"]
	te.mu.Unlock()
	if ghost || !sleeper {
		t.Fatalf("ghost kept %v, sleeper kept %v: want false, true", ghost, sleeper)
	}
	if te.sessions.Len() != 1 {
		t.Errorf("sessions %d, want the sleeper's", te.sessions.Len())
	}
	if d.got > 3*d.sent {
		t.Errorf("the silent source got %d octets for %d", d.got, d.sent)
	}
}

// TestUnprovenEvictedFirst: at max_clients a new client evicts the least
// recently heard one that never proved its address; with none left, CONNECT
// is refused as before.
func TestUnprovenEvictedFirst(t *testing.T) {
	te := startEngine(t, func(o *Options) { o.MaxClients = 3 })
	proven := te.device(t)
	proven.connect("proven", 60, true)
	prove(t, te, proven)
	a := te.device(t)
	a.connect("a", 60, true)
	b := te.device(t)
	b.connect("b", 60, true)
	a.send(&mqttsn.Pingreq{}) // a is heard after b
	recv[*mqttsn.Pingresp](a)
	c := te.device(t)
	c.connect("c", 60, true) // full: b goes
	if m := recv[*mqttsn.Disconnect](b); m == nil {
		t.Fatal("no DISCONNECT to the evicted client")
	}
	te.mu.Lock()
	_, hasB := te.byID["b"]
	n := len(te.byID)
	te.mu.Unlock()
	if hasB || n != 3 {
		t.Fatalf("b kept %v, %d clients: want false, 3", hasB, n)
	}
	if v := te.metric("mqttgw_mqttsn_unproven_ended_total", "reason", "evicted"); v != 1 {
		t.Fatalf("evicted %v, want 1", v)
	}
	// Only proven clients left: refused as before.
	prove(t, te, a)
	prove(t, te, c)
	late := te.device(t)
	late.send(&mqttsn.Connect{Flags: mqttsn.Flags{CleanSession: true}, Duration: 60, ClientID: "late"})
	if ca := recv[*mqttsn.Connack](late); ca.ReturnCode != mqttsn.Congestion {
		t.Fatalf("CONNACK %v, want congestion", ca.ReturnCode)
	}
}

// TestMaxUnproven: max_unproven bounds the clients that never proved their
// address, the least recently heard evicted first; proven ones do not count.
func TestMaxUnproven(t *testing.T) {
	te := startEngine(t, func(o *Options) { o.MaxUnproven = 2 })
	p := te.device(t)
	p.connect("p", 60, true)
	prove(t, te, p)
	for _, id := range []string{"a", "b", "c"} {
		te.device(t).connect(id, 60, true)
	}
	te.mu.Lock()
	_, hasA := te.byID["a"]
	n := len(te.byID)
	te.mu.Unlock()
	if hasA || n != 3 || te.metric("mqttgw_mqttsn_unproven_clients") != 2 {
		t.Fatalf("a kept %v, %d clients, %v unproven: want false, 3, 2", hasA, n, te.metric("mqttgw_mqttsn_unproven_clients"))
	}
}

// TestUnprovenWillExchangesBounded: will exchanges begun from unproven
// addresses are at most max_unproven, the oldest evicted, and forgotten after
// UnprovenTTL.
func TestUnprovenWillExchangesBounded(t *testing.T) {
	te := startEngine(t, func(o *Options) { o.MaxUnproven = 2 })
	for i := range 3 {
		d := te.device(t)
		d.send(&mqttsn.Connect{Flags: mqttsn.Flags{Will: true, CleanSession: true}, Duration: 60, ClientID: fmt.Sprintf("w%d", i)})
		recv[*mqttsn.WillTopicReq](d)
	}
	te.mu.Lock()
	n := len(te.pending)
	te.mu.Unlock()
	if n != 2 || te.metric("mqttgw_mqttsn_unproven_ended_total", "reason", "will_exchange_evicted") != 1 {
		t.Fatalf("%d will exchanges, evicted %v: want 2, 1", n, te.metric("mqttgw_mqttsn_unproven_ended_total", "reason", "will_exchange_evicted"))
	}
	te.tick(te.o.UnprovenTTL + time.Millisecond)
	te.mu.Lock()
	n = len(te.pending)
	te.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d will exchanges after UnprovenTTL, want 0", n)
	}
}

// TestUnprovenRateLimit: an unproven source above unproven_rate is dropped
// before decoding (counted); its answers to what the gateway sent are not.
func TestUnprovenRateLimit(t *testing.T) {
	te := startEngine(t, func(o *Options) { o.UnprovenRate = 1 }) // bursts of 2
	d := te.device(t)
	d.connect("fast", 60, true)
	d.send(&mqttsn.Pingreq{})
	recv[*mqttsn.Pingresp](d)
	d.send(&mqttsn.Pingreq{}) // the third datagram: over the burst
	d.none(100 * time.Millisecond)
	if te.dropped("rate_limited") != 1 || te.metric("mqttgw_source_rate_limited_total") < 1 {
		t.Fatalf("rate_limited %v", te.dropped("rate_limited"))
	}
	te.tick(te.o.UnprovenTTL/2 + time.Millisecond) // a quiet client is probed
	probe := probeOf(t, []mqttsn.Message{recv[*mqttsn.Register](d)})
	d.send(&mqttsn.Regack{TopicID: probe.TopicID, MsgID: probe.MsgID, ReturnCode: mqttsn.Accepted})
	waitUntil(t, "the proof", func() bool { return te.metric("mqttgw_mqttsn_address_proofs_total", "kind", "probe") == 1 })
	for range 5 { // proven: no limit
		d.send(&mqttsn.Pingreq{})
		recv[*mqttsn.Pingresp](d)
	}
}

// TestSubscriptionLimit: subscriptions are bounded by max_topics, as topic
// ids are; a wildcard needs no id but counts.
func TestSubscriptionLimit(t *testing.T) {
	te := startEngine(t, func(o *Options) { o.MaxTopics = 2 })
	d := te.device(t)
	d.connect("many", 60, true)
	d.subscribe("a/#", 0)
	d.subscribe("b/#", 0)
	d.subscribe("a/#", 0) // again: no new subscription
	d.send(&mqttsn.Subscribe{MsgID: 9, TopicName: "c/#"})
	if sa := recv[*mqttsn.Suback](d); sa.ReturnCode != mqttsn.NotSupported || sa.MsgID != 9 {
		t.Fatalf("SUBACK %+v, want not supported", sa)
	}
	if n := te.reg.Get("mqttgw_mqttsn_refused_total", "listener", "sn", "reason", "subscription_limit"); n != 1 {
		t.Fatalf("subscription_limit %v, want 1", n)
	}
}

// TestUnprovenClientLibrary: today's mqttsn.Client answers the probe by
// itself (MQTT-SN 1.2 §6.5: it REGACKs any REGISTER) and gets a large
// retained message after SUBSCRIBE.
func TestUnprovenClientLibrary(t *testing.T) {
	te := startEngine(t, nil)
	var (
		mu  sync.Mutex
		got []byte
	)
	done := make(chan struct{})
	c, err := mqttsn.Dial(context.Background(), te.addr, mqttsn.ClientOptions{ClientID: "lib", CleanSession: true, RetryInterval: 100 * time.Millisecond,
		OnMessage: func(topic string, _ uint16, _ mqttsn.TopicIDType, p *mqttsn.Publish) {
			mu.Lock()
			defer mu.Unlock()
			if got == nil {
				got = p.Data
				close(done)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Subscribe(ctx, "big", 1); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("r"), 8000)
	te.b.send(t, "lib", "big", udpgw.Message{Topic: "big", Payload: big, QoS: 1, Retain: true})
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("no message")
	}
	mu.Lock()
	defer mu.Unlock()
	if !bytes.Equal(got, big) {
		t.Fatalf("got %d octets", len(got))
	}
	if n := te.metric("mqttgw_mqttsn_address_proofs_total", "kind", "probe"); n != 1 {
		t.Errorf("probe proofs %v, want 1", n)
	}
}

// TestIsAnswer: the message type of a datagram, in both length forms.
func TestIsAnswer(t *testing.T) {
	for _, tc := range []struct {
		b    []byte
		want bool
	}{
		{[]byte{0x07, 0x0b, 0, 1, 0, 2, 0}, true},                // REGACK
		{[]byte{0x07, 0x0d, 0, 1, 0, 2, 0}, true},                // PUBACK
		{[]byte{0x04, 0x0f, 0, 2}, true},                         // PUBREC
		{[]byte{0x04, 0x0e, 0, 2}, true},                         // PUBCOMP
		{[]byte{0x01, 0x00, 0x06, 0x0e, 0, 2}, true},             // PUBCOMP, long form
		{[]byte{0x02, 0x16}, false},                              // PINGREQ
		{[]byte{0x07, 0x04, 0x04, 0x01, 0x00, 0x3c, 'x'}, false}, // CONNECT
		{[]byte{0x0b}, false},                                    // truncated
		{[]byte{0x01, 0x00, 0x06}, false},                        // truncated long form
	} {
		if got := isAnswer(tc.b); got != tc.want {
			t.Errorf("isAnswer(% x) = %v, want %v", tc.b, got, tc.want)
		}
	}
}

// prove makes d's address proven as a client would: it REGISTERs and
// publishes with the (random) topic id it was given.
func prove(t *testing.T, te *testEngine, d *device) {
	t.Helper()
	id := d.register(fmt.Sprintf("prove/%d", localAddr(d).Port()))
	d.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: id, MsgID: 4242, Data: []byte("p")})
	recv[*mqttsn.Puback](d)
	if !te.sources.IsProven(localAddr(d), te.clock.Now()) {
		t.Fatal("not proven")
	}
}

func localAddr(d *device) netip.AddrPort {
	return d.c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// TestUnprovenActiveClientBounded: a client that keeps sending but never
// answers (a spoofer refreshing its fake client) is probed once it has been
// connected UnprovenTTL/2, and ended once connected for 2 × UnprovenTTL.
func TestUnprovenActiveClientBounded(t *testing.T) {
	te := startEngine(t, nil)
	ttl := te.o.UnprovenTTL
	d := te.counted(t)
	d.send(&mqttsn.Connect{Flags: mqttsn.Flags{CleanSession: true}, Duration: 600, ClientID: "busy"})
	ms := d.drain(30 * time.Millisecond) // CONNACK: connected now
	for range 9 {                        // 9 × ttl/4: heard every quarter of ttl
		te.clock.advance(ttl / 4)
		d.send(&mqttsn.Pingreq{})
		ms = append(ms, d.drain(30*time.Millisecond)...)
		te.tick(0)
		ms = append(ms, d.drain(30*time.Millisecond)...)
	}
	probeOf(t, ms)
	if n := te.metric("mqttgw_mqttsn_unproven_ended_total", "reason", "expired"); n != 1 {
		t.Fatalf("expired %v after 2¼ × UnprovenTTL, want 1 (got %s)", n, kinds(ms))
	}
	if d.got > 3*d.sent {
		t.Errorf("got %d octets for %d", d.got, d.sent)
	}
}

// TestUnprovenBufferedBytesBounded: what waits for clients that never proved
// their address (a large retained message each) is bounded all together by
// MaxUnprovenBytes: the least recently heard is evicted to make room.
func TestUnprovenBufferedBytesBounded(t *testing.T) {
	te := startEngine(t, func(o *Options) { o.MaxUnprovenBytes = 10000 })
	for i := range 3 {
		id := fmt.Sprintf("s%d", i)
		d := te.device(t)
		d.connect(id, 60, true)
		d.subscribe("big", 0)
		te.b.send(t, id, "big", udpgw.Message{Topic: "big", Payload: make([]byte, 6000), Retain: true})
		probeOf(t, []mqttsn.Message{recv[*mqttsn.Register](d)}) // held: probed
	}
	te.mu.Lock()
	kept := func(id string) bool { c := te.byID[id]; return c != nil && c.state != stateGone }
	s0, s1 := kept("s0"), kept("s1")
	bytes := te.unprovenBytes
	te.mu.Unlock()
	if s0 || s1 || bytes != 6000 {
		t.Fatalf("s0 kept %v, s1 kept %v, %d octets buffered: want false, false, 6000", s0, s1, bytes)
	}
	if n := te.metric("mqttgw_mqttsn_unproven_ended_total", "reason", "evicted"); n != 2 {
		t.Fatalf("evicted %v, want 2", n)
	}
}

// TestUnprovenGuessesBounded: an off-path sender may guess a 16-bit echo
// (the probe's MsgId) only maxMisses times; after that only the probe's
// REGACK with both its MsgId and its topic id (32 random bits) proves the
// address.
func TestUnprovenGuessesBounded(t *testing.T) {
	te := startEngine(t, nil)
	d := te.device(t)
	d.connect("g", 60, true)
	te.tick(te.o.UnprovenTTL/2 + time.Millisecond)
	probe := probeOf(t, []mqttsn.Message{recv[*mqttsn.Register](d)})
	for i := range maxMisses { // wrong MsgIds: acknowledgements of nothing
		d.send(&mqttsn.Regack{TopicID: probe.TopicID, MsgID: probe.MsgID + 1 + uint16(i), ReturnCode: mqttsn.Accepted})
	}
	d.send(&mqttsn.Pingreq{}) // in order after the guesses
	recv[*mqttsn.Pingresp](d)
	d.send(&mqttsn.Regack{TopicID: probe.TopicID + 1, MsgID: probe.MsgID, ReturnCode: mqttsn.Accepted}) // the MsgId alone
	d.send(&mqttsn.Pingreq{})
	recv[*mqttsn.Pingresp](d)
	if te.sources.IsProven(localAddr(d), te.clock.Now()) {
		t.Fatal("a 16-bit echo proved the address after maxMisses wrong guesses")
	}
	d.send(&mqttsn.Regack{TopicID: probe.TopicID, MsgID: probe.MsgID, ReturnCode: mqttsn.Accepted})
	waitUntil(t, "the proof", func() bool { return te.sources.IsProven(localAddr(d), te.clock.Now()) })
}
