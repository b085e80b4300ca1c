package gateway

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/mqttsn"
)

func snIsCode(err error, code mqttsn.ReturnCode) bool { return errors.Is(err, code) }

// TestMQTTSNWildcardSubscribeRegisters: a wildcard SUBACK carries topic id 0 and
// the SUBSCRIBE's MsgId; broker messages arrive after a gateway REGISTER, with
// the granted QoS.
func TestMQTTSNWildcardSubscribeRegisters(t *testing.T) {
	env := startSN(t, snOpts{})
	r := env.raw(t)
	r.connect("wild", 60, true)
	r.send(&mqttsn.Subscribe{Flags: mqttsn.Flags{QoS: 1}, MsgID: 0x4242, TopicName: "sensors/+/temp"})
	sa := snExpect[*mqttsn.Suback](r)
	if sa.TopicID != 0 || sa.MsgID != 0x4242 || sa.ReturnCode != mqttsn.Accepted || sa.Flags.QoS != 1 {
		t.Fatalf("SUBACK %+v: want topic id 0, MsgId 0x4242, accepted, QoS 1", sa)
	}
	env.pub(t, "sensors/kitchen/temp", "21.5", 2, false)
	reg := snExpect[*mqttsn.Register](r)
	if reg.TopicName != "sensors/kitchen/temp" || reg.TopicID == 0 {
		t.Fatalf("REGISTER %+v", reg)
	}
	r.none(100 * time.Millisecond) // the PUBLISH waits for the REGACK
	r.send(&mqttsn.Regack{TopicID: reg.TopicID, MsgID: reg.MsgID, ReturnCode: mqttsn.Accepted})
	p := snExpect[*mqttsn.Publish](r)
	if p.TopicID != reg.TopicID || p.Flags.TopicIDType != mqttsn.TopicNormal || p.Flags.QoS != 1 || string(p.Data) != "21.5" {
		t.Fatalf("PUBLISH %+v: want the registered id at the granted QoS 1", p)
	}
	r.send(&mqttsn.Puback{TopicID: p.TopicID, MsgID: p.MsgID, ReturnCode: mqttsn.Accepted})
	// The same topic again: no second REGISTER.
	env.pub(t, "sensors/kitchen/temp", "22", 0, false)
	p = snExpect[*mqttsn.Publish](r)
	if p.TopicID != reg.TopicID || p.Flags.QoS != 0 || string(p.Data) != "22" {
		t.Fatalf("second PUBLISH %+v", p)
	}

	// With the client library: the whole flow, several topics.
	in := newSNInbox()
	c := env.connect(t, mqttsn.ClientOptions{ClientID: "wild2", CleanSession: true, OnMessage: in.on})
	if q, id, err := c.Subscribe(snCtx(t), "plant/#", 2); err != nil || id != 0 || q != 2 {
		t.Fatalf("subscribe plant/#: qos %v id %d %v", q, id, err)
	}
	env.pub(t, "plant/a", "1", 2, false)
	env.pub(t, "plant/b/c", "2", 1, false)
	env.pub(t, "plant/a", "3", 2, false)
	ms := in.wait(t, 3)
	want := []string{"plant/a=1@2", "plant/b/c=2@1", "plant/a=3@2"}
	for i, m := range ms {
		if s := m.topic + "=" + m.payload + "@" + m.qos.String(); s != want[i] {
			t.Errorf("message %d: %s, want %s", i, s, want[i])
		}
	}
}

// TestMQTTSNSubscribeNameShortPredefined subscribes by topic name (SUBACK
// carries its id), short name and predefined id, and unsubscribes each.
func TestMQTTSNSubscribeNameShortPredefined(t *testing.T) {
	env := startSN(t, snOpts{top: "[[mqttsn.predefined]]\nid = 3\ntopic = \"alarms/fire\"\n"})
	in := newSNInbox()
	c := env.connect(t, mqttsn.ClientOptions{ClientID: "subs", CleanSession: true, OnMessage: in.on,
		PredefinedTopics: map[string]uint16{"alarms/fire": 3}})
	_, id, err := c.Subscribe(snCtx(t), "home/light", 1)
	if err != nil || id == 0 {
		t.Fatalf("subscribe by name: id %d %v", id, err)
	}
	short, _ := mqttsn.ShortTopicID("ab")
	if _, err := c.SubscribeID(snCtx(t), mqttsn.TopicShort, short, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SubscribeID(snCtx(t), mqttsn.TopicPredefined, 3, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SubscribeID(snCtx(t), mqttsn.TopicPredefined, 4, 0); !snIsCode(err, mqttsn.InvalidTopicID) {
		t.Fatalf("subscribe to an unknown predefined id: %v", err)
	}
	env.pub(t, "home/light", "on", 1, false)
	env.pub(t, "ab", "short", 1, false)
	env.pub(t, "alarms/fire", "!", 1, false)
	ms := in.wait(t, 3)
	if m := ms[0]; m.idType != mqttsn.TopicNormal || m.id != id || m.topic != "home/light" {
		t.Errorf("by name: %+v, want id %d from the SUBACK", m, id)
	}
	if m := ms[1]; m.idType != mqttsn.TopicShort || m.topic != "ab" || m.payload != "short" {
		t.Errorf("short: %+v", m)
	}
	if m := ms[2]; m.idType != mqttsn.TopicPredefined || m.id != 3 || m.qos != 0 {
		t.Errorf("predefined: %+v (granted QoS 0)", m)
	}

	// UNSUBSCRIBE each way: nothing arrives afterwards, and the gateway's
	// last subscriber leaving unsubscribes at the broker.
	if err := c.Unsubscribe(snCtx(t), "home/light"); err != nil {
		t.Fatal(err)
	}
	if err := c.UnsubscribeID(snCtx(t), mqttsn.TopicShort, short); err != nil {
		t.Fatal(err)
	}
	if err := c.UnsubscribeID(snCtx(t), mqttsn.TopicPredefined, 3); err != nil {
		t.Fatal(err)
	}
	env.pub(t, "home/light", "off", 1, false)
	env.pub(t, "ab", "x", 1, false)
	env.pub(t, "alarms/fire", "x", 1, false)
	waitFor(t, 5*time.Second, "UNSUBSCRIBE home/light at the broker", func() bool {
		// Mosquitto logs "Received UNSUBSCRIBE from ID" then one line per filter.
		for _, part := range strings.Split(env.b.Log(), "Received UNSUBSCRIBE")[1:] {
			lines := strings.SplitN(part, "\n", 3)
			if len(lines) > 1 && strings.HasSuffix(lines[1], "\thome/light") {
				return true
			}
		}
		return false
	})
	time.Sleep(300 * time.Millisecond)
	if n := len(in.list()); n != 3 {
		t.Fatalf("%d messages after UNSUBSCRIBE: %+v", n-3, in.list()[3:])
	}
}

// TestMQTTSNDownlinkQoS2ExactlyOnce: a QoS 2 message to the client is sent again
// with DUP until PUBREC, then PUBREL until PUBCOMP, and the client's library
// delivers it once.
func TestMQTTSNDownlinkQoS2ExactlyOnce(t *testing.T) {
	env := startSN(t, snOpts{})
	r := env.raw(t)
	r.connect("q2", 60, true)
	r.send(&mqttsn.Subscribe{Flags: mqttsn.Flags{QoS: 2}, MsgID: 1, TopicName: "q2/t"})
	sa := snExpect[*mqttsn.Suback](r)
	env.pub(t, "q2/t", "once", 2, false)
	p := snExpect[*mqttsn.Publish](r)
	if p.TopicID != sa.TopicID || p.Flags.QoS != 2 || p.Flags.DUP {
		t.Fatalf("PUBLISH %+v", p)
	}
	// No PUBREC: the gateway retransmits with DUP after retry_interval.
	p2 := snExpect[*mqttsn.Publish](r)
	if !p2.Flags.DUP || p2.MsgID != p.MsgID {
		t.Fatalf("retransmission %+v: want DUP and the same MsgId", p2)
	}
	r.send(&mqttsn.Pubrec{MsgID: p.MsgID})
	rel := snExpect[*mqttsn.Pubrel](r)
	if rel.MsgID != p.MsgID {
		t.Fatalf("PUBREL %+v", rel)
	}
	if rel = snExpect[*mqttsn.Pubrel](r); rel.MsgID != p.MsgID { // again, until PUBCOMP
		t.Fatalf("retransmitted PUBREL %+v", rel)
	}
	r.send(&mqttsn.Pubcomp{MsgID: p.MsgID})
	r.none(500 * time.Millisecond)
	if env.metric("mqttgw_mqttsn_retransmissions_total", "listener", "sn") < 2 {
		t.Error("retransmissions not counted")
	}
}
