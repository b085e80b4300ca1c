package gateway

import (
	"net"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/mqttsn"
)

// TestMQTTSNWillOnLostClient: a client connected with a will goes silent; after
// 1.5 keepalives the session expires and Mosquitto's subscriber gets the will,
// under the listener's mountpoint.
func TestMQTTSNWillOnLostClient(t *testing.T) {
	env := startSN(t, snOpts{listener: `mountpoint = "site1/"`})
	sub := env.reader(t, 1, "site1/status/#")
	c := env.connect(t, mqttsn.ClientOptions{ClientID: "mortal", Keepalive: time.Second, CleanSession: true,
		Will: &mqttsn.Will{Topic: "status/mortal", Payload: []byte("gone"), QoS: 1}})
	if err := c.Publish(snCtx(t), "status/mortal", 1, false, []byte("alive")); err != nil {
		t.Fatal(err)
	}
	sub.Expect(t, 5*time.Second, "site1/status/mortal", "alive")
	c.Close() // silence: no DISCONNECT, no PINGREQ
	sub.Expect(t, 6*time.Second, "site1/status/mortal", "gone")
	waitFor(t, 5*time.Second, "the session lost", func() bool { return liveSessions(env.g.Gateway) == 0 })
}

// TestMQTTSNWillUpdate replaces the will's topic and message, and deletes it.
func TestMQTTSNWillUpdate(t *testing.T) {
	env := startSN(t, snOpts{})
	sub := env.reader(t, 1, "will/#")
	c := env.connect(t, mqttsn.ClientOptions{ClientID: "upd", Keepalive: time.Second, CleanSession: true,
		Will: &mqttsn.Will{Topic: "will/old", Payload: []byte("old")}})
	if err := c.UpdateWillTopic(snCtx(t), "will/new", 1, true); err != nil {
		t.Fatal(err)
	}
	if err := c.UpdateWillMsg(snCtx(t), []byte("new message")); err != nil {
		t.Fatal(err)
	}
	if err := c.UpdateWillTopic(snCtx(t), "will/#", 0, false); !snIsCode(err, mqttsn.NotSupported) {
		t.Fatalf("will topic with a wildcard: %v, want not supported", err)
	}
	c.Close()
	if m := sub.Expect(t, 6*time.Second, "will/new", "new message"); m.QoS != 1 {
		t.Errorf("will %v: want QoS 1", m)
	}
	late := env.reader(t, 0, "will/new")
	if m := late.Expect(t, 5*time.Second, "will/new", "new message"); !m.Retain {
		t.Errorf("will %v: want it retained", m)
	}

	// A deleted will is not published.
	c2 := env.connect(t, mqttsn.ClientOptions{ClientID: "upd2", Keepalive: time.Second, CleanSession: true,
		Will: &mqttsn.Will{Topic: "will/x", Payload: []byte("x")}})
	if err := c2.UpdateWillTopic(snCtx(t), "", 0, false); err != nil {
		t.Fatal(err)
	}
	c2.Close()
	waitFor(t, 6*time.Second, "upd2's session lost", func() bool { return liveSessions(env.g.Gateway) == 0 })
	sub.None(t, 300*time.Millisecond)
}

// TestMQTTSNDisconnectWithoutWill: DISCONNECT ends the session at once, and the
// will is not published.
func TestMQTTSNDisconnectWithoutWill(t *testing.T) {
	env := startSN(t, snOpts{})
	sub := env.reader(t, 1, "bye/#")
	c := env.connect(t, mqttsn.ClientOptions{ClientID: "polite", Keepalive: time.Second, CleanSession: true,
		Will: &mqttsn.Will{Topic: "bye/polite", Payload: []byte("should not")}})
	if err := c.Ping(snCtx(t)); err != nil {
		t.Fatal(err)
	}
	if env.g.sessions.Len() != 1 {
		t.Fatalf("sessions = %d", env.g.sessions.Len())
	}
	if err := c.Disconnect(snCtx(t)); err != nil {
		t.Fatal(err)
	}
	if env.g.sessions.Len() != 0 {
		t.Fatalf("sessions after DISCONNECT = %d", env.g.sessions.Len())
	}
	sub.None(t, 2500*time.Millisecond) // past 1.5 keepalives
	// Disconnected: a PUBLISH now gets an unsolicited DISCONNECT (§6.12).
	r := env.raw(t)
	r.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: 1, MsgID: 1, Data: []byte("x")})
	snExpect[*mqttsn.Disconnect](r)
}

// TestMQTTSNSleepCycle: subscribe, sleep, messages are buffered, PINGREQ with
// the client id delivers all of them and PINGRESP comes only after the last
// was acknowledged; then sleep again; CONNECT wakes fully.
func TestMQTTSNSleepCycle(t *testing.T) {
	env := startSN(t, snOpts{})
	in := newSNInbox()
	c := env.connect(t, mqttsn.ClientOptions{ClientID: "sleepy", OnMessage: in.on})
	if _, _, err := c.Subscribe(snCtx(t), "cmd/sleepy/#", 1); err != nil {
		t.Fatal(err)
	}
	if err := c.Sleep(snCtx(t), 3*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"a", "b", "c"} {
		env.pub(t, "cmd/sleepy/"+p, p, 1, false)
	}
	env.pub(t, "cmd/sleepy/q0", "d", 0, false)
	time.Sleep(300 * time.Millisecond)
	if n := len(in.list()); n != 0 {
		t.Fatalf("%d messages reached a sleeping client", n)
	}
	if err := c.Wake(snCtx(t)); err != nil {
		t.Fatal(err)
	}
	// Wake returns on PINGRESP: by then every buffered message is here.
	ms := in.list()
	if len(ms) != 4 {
		t.Fatalf("after PINGRESP: %d messages, want 4: %+v", len(ms), ms)
	}
	for i, want := range []string{"a", "b", "c", "d"} {
		if ms[i].payload != want {
			t.Errorf("message %d = %q, want %q", i, ms[i].payload, want)
		}
	}
	// Asleep again: buffered again; a wake with nothing buffered answers at once.
	env.pub(t, "cmd/sleepy/e", "e", 1, false)
	time.Sleep(200 * time.Millisecond)
	if len(in.list()) != 4 {
		t.Fatal("message delivered to a client asleep again")
	}
	// CONNECT wakes fully and the buffered message follows.
	if err := c.Connect(snCtx(t)); err != nil {
		t.Fatal(err)
	}
	if ms := in.wait(t, 5); ms[4].payload != "e" {
		t.Fatalf("after CONNECT: %+v", ms[4])
	}
	env.pub(t, "cmd/sleepy/f", "f", 1, false)
	in.wait(t, 6)
}

// TestMQTTSNSleepNATRebinding: a sleeping client wakes from a new address and
// port; its buffered messages go there.
func TestMQTTSNSleepNATRebinding(t *testing.T) {
	env := startSN(t, snOpts{})
	r := env.raw(t)
	r.connect("nat", 60, false)
	r.send(&mqttsn.Subscribe{Flags: mqttsn.Flags{QoS: 1}, MsgID: 1, TopicName: "nat/cmd"})
	sa := snExpect[*mqttsn.Suback](r)
	r.send(&mqttsn.Disconnect{Duration: 10, HasDuration: true})
	snExpect[*mqttsn.Disconnect](r)
	env.pub(t, "nat/cmd", "open", 1, false)
	env.pub(t, "nat/cmd", "close", 1, false)
	r.none(200 * time.Millisecond)

	r2 := env.raw(t) // the NAT gave the device a new port
	if r2.c.LocalAddr().(*net.UDPAddr).Port == r.c.LocalAddr().(*net.UDPAddr).Port {
		t.Fatal("same port")
	}
	r2.send(&mqttsn.Pingreq{ClientID: "nat"})
	for _, want := range []string{"open", "close"} {
		p := snExpect[*mqttsn.Publish](r2)
		if string(p.Data) != want || p.TopicID != sa.TopicID {
			t.Fatalf("PUBLISH %+v, want %q with topic id %d", p, want, sa.TopicID)
		}
		r2.none(100 * time.Millisecond) // one at a time: PINGRESP waits for the PUBACK
		r2.send(&mqttsn.Puback{TopicID: p.TopicID, MsgID: p.MsgID, ReturnCode: mqttsn.Accepted})
	}
	snExpect[*mqttsn.Pingresp](r2)
	r.none(100 * time.Millisecond)
	if env.metric("mqttgw_mqttsn_rebinds_total", "listener", "sn") != 1 {
		t.Error("rebind not counted")
	}
	// Later traffic is at the new address too.
	r2.send(&mqttsn.Pingreq{})
	snExpect[*mqttsn.Pingresp](r2)
}

// TestMQTTSNTakeover: a second CONNECT with the same client id from another
// address takes the (persistent) session over; the first address gets
// DISCONNECT, the subscriptions follow the client id.
func TestMQTTSNTakeover(t *testing.T) {
	env := startSN(t, snOpts{})
	r1 := env.raw(t)
	r1.connect("twin", 60, false)
	r1.send(&mqttsn.Subscribe{Flags: mqttsn.Flags{QoS: 0}, MsgID: 1, TopicName: "twin/in"})
	snExpect[*mqttsn.Suback](r1)

	in := newSNInbox()
	c2 := env.device(t, mqttsn.ClientOptions{ClientID: "twin", OnMessage: in.on})
	if err := c2.Connect(snCtx(t)); err != nil {
		t.Fatal(err)
	}
	snExpect[*mqttsn.Disconnect](r1)
	// c2 knows no topic ids: the resumed session REGISTERs the SUBACK's id
	// again before the PUBLISH (MQTT-SN 1.2 §6.5), so even a QoS 0 message is
	// not lost to "invalid topic ID".
	env.pub(t, "twin/in", "hello", 1, false)
	ms := in.wait(t, 1)
	if ms[0].payload != "hello" || ms[0].topic != "twin/in" {
		t.Fatalf("%+v", ms[0])
	}
	// The old address is no longer the client's.
	r1.send(&mqttsn.Pingreq{})
	snExpect[*mqttsn.Disconnect](r1)
	if env.metric("mqttgw_mqttsn_takeovers_total", "listener", "sn") != 1 {
		t.Error("take-over not counted")
	}
}

// TestMQTTSNPersistentSession: a persistent session keeps subscriptions and
// buffers messages across DISCONNECT; a clean CONNECT drops them.
func TestMQTTSNPersistentSession(t *testing.T) {
	env := startSN(t, snOpts{})
	in := newSNInbox()
	c := env.connect(t, mqttsn.ClientOptions{ClientID: "keeper", OnMessage: in.on})
	if _, _, err := c.Subscribe(snCtx(t), "keep/+", 1); err != nil {
		t.Fatal(err)
	}
	if err := c.Disconnect(snCtx(t)); err != nil {
		t.Fatal(err)
	}
	env.pub(t, "keep/a", "while away", 1, false)
	time.Sleep(200 * time.Millisecond)
	if err := c.Connect(snCtx(t)); err != nil {
		t.Fatal(err)
	}
	if ms := in.wait(t, 1); ms[0].payload != "while away" || ms[0].topic != "keep/a" {
		t.Fatalf("%+v", ms[0])
	}
	clean := env.connect(t, mqttsn.ClientOptions{ClientID: "keeper", CleanSession: true, OnMessage: in.on})
	_ = clean
	env.pub(t, "keep/b", "nobody", 1, false)
	time.Sleep(300 * time.Millisecond)
	if n := len(in.list()); n != 1 {
		t.Fatalf("clean session still subscribed: %+v", in.list())
	}
}
