package gateway

import (
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/mqttsn"
)

// TestMQTTSNBadInput sends malformed and out-of-place datagrams: each is
// answered or dropped as MQTT-SN 1.2 says, counted, and a connected client on
// another address carries on unharmed.
func TestMQTTSNBadInput(t *testing.T) {
	env := startSN(t, snOpts{})
	sub := env.reader(t, 1, "good/#")
	good := env.connect(t, mqttsn.ClientOptions{ClientID: "good", CleanSession: true})
	if err := good.Publish(snCtx(t), "good/t", 1, false, []byte("before")); err != nil {
		t.Fatal(err)
	}
	sub.Expect(t, 5*time.Second, "good/t", "before")

	bad := env.raw(t)
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", []byte{}},
		{"one octet", []byte{0x05}},
		{"truncated PUBLISH", []byte{0x0a, 0x0c, 0x20, 0x00, 0x01}},
		{"length says less", []byte{0x03, 0x16, 'a', 'b'}},
		{"length says more", []byte{0x09, 0x18, 0x00}},
		{"unknown type 0x03", []byte{0x02, 0x03}},
		{"unknown type 0xff", []byte{0x03, 0xff, 0x00}},
		{"bad protocol id", []byte{0x07, 0x04, 0x04, 0x02, 0x00, 0x3c, 'x'}},
		{"reserved topic id type", []byte{0x07, 0x0c, 0x23, 0x00, 0x01, 0x00, 0x01}},
		{"long form truncated", []byte{0x01, 0x00}},
		{"nested encapsulation", []byte{0x03, 0xfe, 0x00, 0x03, 0xfe, 0x00, 0x02, 0x16}},
	} {
		before := env.dropped("decode_error")
		bad.sendBytes(tc.b)
		waitFor(t, 5*time.Second, tc.name+" counted", func() bool { return env.dropped("decode_error") == before+1 })
	}
	bad.none(100 * time.Millisecond) // nothing is answered to what does not parse

	// PUBLISH (QoS 0 and 1), REGISTER and SUBSCRIBE before CONNECT: DISCONNECT (§6.12).
	for _, m := range []mqttsn.Message{
		&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: 1, MsgID: 1, Data: []byte("x")},
		&mqttsn.Publish{TopicID: 1, Data: []byte("x")},
		&mqttsn.Register{MsgID: 2, TopicName: "a"},
		&mqttsn.Subscribe{MsgID: 3, TopicName: "a"},
	} {
		bad.send(m)
		snExpect[*mqttsn.Disconnect](bad)
	}
	// Stale acknowledgements from nobody: dropped silently.
	bad.send(&mqttsn.Puback{TopicID: 1, MsgID: 1})
	bad.send(&mqttsn.Regack{TopicID: 1, MsgID: 1})
	bad.none(200 * time.Millisecond)
	// Messages only gateways send: dropped.
	before := env.dropped("unexpected")
	bad.send(&mqttsn.Advertise{GwID: 9, Duration: 900})
	bad.send(&mqttsn.Connack{})
	bad.send(&mqttsn.WillMsg{WillMsg: []byte("no exchange")})
	waitFor(t, 5*time.Second, "3 unexpected", func() bool { return env.dropped("unexpected") == before+3 })
	bad.none(100 * time.Millisecond)

	// REGISTER during the will exchange: dropped; the exchange goes on.
	bad.send(&mqttsn.Connect{Flags: mqttsn.Flags{Will: true, CleanSession: true}, Duration: 60, ClientID: "willy"})
	snExpect[*mqttsn.WillTopicReq](bad)
	bad.send(&mqttsn.Register{MsgID: 7, TopicName: "too/early"})
	bad.none(200 * time.Millisecond)
	if env.dropped("will_exchange") != 1 {
		t.Error("REGISTER during the will exchange not counted")
	}
	bad.send(&mqttsn.WillTopic{Flags: mqttsn.Flags{QoS: 1}, Topic: "willy/status"})
	snExpect[*mqttsn.WillMsgReq](bad)
	bad.send(&mqttsn.WillMsg{WillMsg: []byte("dead")})
	if ca := snExpect[*mqttsn.Connack](bad); ca.ReturnCode != mqttsn.Accepted {
		t.Fatalf("CONNACK %v", ca.ReturnCode)
	}

	// Connected now: a topic id never registered gets PUBACK 0x02, at QoS 1 and 0.
	bad.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: 77, MsgID: 9, Data: []byte("x")})
	if pa := snExpect[*mqttsn.Puback](bad); pa.ReturnCode != mqttsn.InvalidTopicID || pa.TopicID != 77 || pa.MsgID != 9 {
		t.Fatalf("PUBACK %+v: want invalid topic ID for 77/9", pa)
	}
	bad.send(&mqttsn.Publish{TopicID: 78, Data: []byte("x")})
	if pa := snExpect[*mqttsn.Puback](bad); pa.ReturnCode != mqttsn.InvalidTopicID || pa.TopicID != 78 {
		t.Fatalf("PUBACK %+v", pa)
	}
	// A REGISTER of a name with wildcards: REGACK 0x02.
	bad.send(&mqttsn.Register{MsgID: 10, TopicName: "a/+"})
	if ra := snExpect[*mqttsn.Regack](bad); ra.ReturnCode != mqttsn.InvalidTopicID || ra.MsgID != 10 {
		t.Fatalf("REGACK %+v", ra)
	}
	// A SUBSCRIBE with a broken filter: SUBACK 0x02.
	bad.send(&mqttsn.Subscribe{MsgID: 11, TopicName: "a/#/b"})
	if sa := snExpect[*mqttsn.Suback](bad); sa.ReturnCode != mqttsn.InvalidTopicID || sa.MsgID != 11 {
		t.Fatalf("SUBACK %+v", sa)
	}
	// Garbage from a connected client's address does not end its session.
	bad.sendBytes([]byte{0x02, 0x03})
	bad.send(&mqttsn.Pingreq{})
	snExpect[*mqttsn.Pingresp](bad)

	// The good client never noticed.
	if err := good.Publish(snCtx(t), "good/t", 1, false, []byte("after")); err != nil {
		t.Fatal(err)
	}
	sub.Expect(t, 5*time.Second, "good/t", "after")
}

// TestMQTTSNDuplicatePublish: a QoS 1 PUBLISH retransmitted with DUP after its
// PUBACK and a QoS 2 PUBLISH retransmitted before PUBREL each reach the broker once.
func TestMQTTSNDuplicatePublish(t *testing.T) {
	env := startSN(t, snOpts{})
	sub := env.reader(t, 2, "dup/#")
	r := env.raw(t)
	r.connect("dupper", 60, true)
	r.send(&mqttsn.Register{MsgID: 1, TopicName: "dup/t"})
	id := snExpect[*mqttsn.Regack](r).TopicID

	p1 := &mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: id, MsgID: 5, Data: []byte("q1")}
	r.send(p1)
	snExpect[*mqttsn.Puback](r)
	p1.Flags.DUP = true
	r.send(p1) // "our PUBACK was lost"
	if pa := snExpect[*mqttsn.Puback](r); pa.ReturnCode != mqttsn.Accepted || pa.MsgID != 5 {
		t.Fatalf("PUBACK %+v", pa)
	}

	p2 := &mqttsn.Publish{Flags: mqttsn.Flags{QoS: 2}, TopicID: id, MsgID: 6, Data: []byte("q2")}
	r.send(p2)
	snExpect[*mqttsn.Pubrec](r)
	p2.Flags.DUP = true
	r.send(p2)
	snExpect[*mqttsn.Pubrec](r)
	r.send(&mqttsn.Pubrel{MsgID: 6})
	snExpect[*mqttsn.Pubcomp](r)
	r.send(&mqttsn.Pubrel{MsgID: 6}) // our PUBCOMP was lost
	snExpect[*mqttsn.Pubcomp](r)

	sub.Expect(t, 5*time.Second, "dup/t", "q1")
	sub.Expect(t, 5*time.Second, "dup/t", "q2")
	sub.None(t, 500*time.Millisecond)
	if env.metric("mqttgw_mqttsn_duplicates_total", "listener", "sn") < 3 {
		t.Error("duplicates not counted")
	}
}

// TestMQTTSNForwarderEncapsulation: a client behind a forwarder (MQTT-SN 1.2
// §5.5) connects and publishes; answers come back encapsulated for its node.
func TestMQTTSNForwarderEncapsulation(t *testing.T) {
	env := startSN(t, snOpts{})
	sub := env.reader(t, 1, "fw/#")
	r := env.raw(t)
	node := []byte{0xbe, 0xef}
	enc := func(m mqttsn.Message) *mqttsn.Encapsulated {
		return &mqttsn.Encapsulated{WirelessNodeID: node, Inner: m}
	}
	unwrap := func() mqttsn.Message {
		e := snExpect[*mqttsn.Encapsulated](r)
		if string(e.WirelessNodeID) != string(node) {
			t.Fatalf("answer for node % x", e.WirelessNodeID)
		}
		return e.Inner
	}
	r.send(enc(&mqttsn.Connect{Flags: mqttsn.Flags{CleanSession: true}, Duration: 60, ClientID: "node-beef"}))
	if ca, ok := unwrap().(*mqttsn.Connack); !ok || ca.ReturnCode != mqttsn.Accepted {
		t.Fatalf("CONNACK %+v", ca)
	}
	r.send(enc(&mqttsn.Register{MsgID: 1, TopicName: "fw/t"}))
	ra := unwrap().(*mqttsn.Regack)
	r.send(enc(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: ra.TopicID, MsgID: 2, Data: []byte("via forwarder")}))
	if pa, ok := unwrap().(*mqttsn.Puback); !ok || pa.ReturnCode != mqttsn.Accepted {
		t.Fatalf("PUBACK %+v", pa)
	}
	sub.Expect(t, 5*time.Second, "fw/t", "via forwarder")
	// The forwarder's own address, without encapsulation, is another client.
	r.send(&mqttsn.Pingreq{})
	snExpect[*mqttsn.Disconnect](r)
}
