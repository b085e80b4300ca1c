package gateway

import (
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/mqttsn"
)

// restartTOML is a gateway with one MQTT-SN listener "sn" on a fixed port (so
// that devices find it again after a restart) and, when dir is set, a store.
func restartTOML(b *mosquittotest.Broker, port int, dir string) string {
	st := ""
	if dir != "" {
		st = fmt.Sprintf("[store]\ndir = %q\n", dir)
	}
	return upstreamTOML(b) + st + fmt.Sprintf(`
[[listener]]
name = "sn"
type = "mqttsn"
bind = "127.0.0.1:%d"
[listener.mqttsn]
retry_interval = "200ms"
max_retries = 3
`, port)
}

// udpPort returns a port of 127.0.0.1 that was free a moment ago.
func udpPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// TestMQTTSNRestartKeepsSessions: with [store] dir, the MQTT-SN persistent
// sessions outlive the gateway. After a stop and a new start on the same
// store: a client goes on without a new CONNECT (its topic id registered
// before is accepted; its QoS 2 publish PUBREC'ed before is not published
// again when retransmitted, and its PUBREL completes; its subscription
// delivers); a sleeping client gets the messages buffered for it; a client
// whose keepalive ran out meanwhile is lost at start and its will published
// once.
func TestMQTTSNRestartKeepsSessions(t *testing.T) {
	b := startMosquitto(t, false)
	sub := b.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 2, Topics: []string{"rs/#"}})
	wills := b.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1, Topics: []string{"will/#"}})
	port := udpPort(t)
	cfg := restartTOML(b, port, t.TempDir())
	g := startGateway(t, cfg)
	env := &snEnv{b: b, g: g, addr: "127.0.0.1:" + strconv.Itoa(port)}
	settled := func(g *runningGateway) {
		t.Helper()
		waitFor(t, 5*time.Second, "session records committed", func() bool {
			return g.Metrics().Get("mqttgw_mqttsn_session_writes_pending", "listener", "sn") == 0
		})
	}

	// p: a persistent session with a registration, a subscription and a QoS 2
	// publish awaiting PUBREL.
	p := env.raw(t)
	p.connect("p", 60, false)
	p.send(&mqttsn.Register{MsgID: 1, TopicName: "rs/p"})
	ra := snExpect[*mqttsn.Regack](p)
	p.send(&mqttsn.Subscribe{Flags: mqttsn.Flags{QoS: 1}, MsgID: 2, TopicName: "cmd/p"})
	sa := snExpect[*mqttsn.Suback](p)
	q2 := &mqttsn.Publish{Flags: mqttsn.Flags{QoS: 2}, TopicID: ra.TopicID, MsgID: 3, Data: []byte("exactly-once")}
	p.send(q2)
	snExpect[*mqttsn.Pubrec](p)
	sub.Expect(t, 5*time.Second, "rs/p", "exactly-once")

	// s: asleep, with two messages buffered.
	s := env.raw(t)
	s.connect("s", 60, false)
	s.send(&mqttsn.Subscribe{Flags: mqttsn.Flags{QoS: 1}, MsgID: 1, TopicName: "cmd/s"})
	snExpect[*mqttsn.Suback](s)
	s.send(&mqttsn.Disconnect{Duration: 600, HasDuration: true})
	snExpect[*mqttsn.Disconnect](s)
	env.pub(t, "cmd/s", "s1", 1, false)
	env.pub(t, "cmd/s", "s2", 1, false)
	waitFor(t, 5*time.Second, "2 messages buffered", func() bool {
		return g.Metrics().Get("mqttgw_mqttsn_buffered_messages", "listener", "sn") == 2
	})

	// l: a will and a keepalive of 1 s, silent from its CONNECT on.
	l := env.raw(t)
	l.send(&mqttsn.Connect{Flags: mqttsn.Flags{Will: true, CleanSession: false}, Duration: 1, ClientID: "l"})
	snExpect[*mqttsn.WillTopicReq](l)
	l.send(&mqttsn.WillTopic{Flags: mqttsn.Flags{QoS: 1}, Topic: "will/l"})
	snExpect[*mqttsn.WillMsgReq](l)
	l.send(&mqttsn.WillMsg{WillMsg: []byte("lost while down")})
	snExpect[*mqttsn.Connack](l)
	lastHeard := time.Now()
	settled(g)
	g.stop(t)
	waitFor(t, 10*time.Second, "l's keepalive to run out (1.5 × 1 s)", func() bool { return time.Since(lastHeard) > 2*time.Second })

	g2 := startGateway(t, cfg)
	wills.Expect(t, 5*time.Second, "will/l", "lost while down")
	waitFor(t, 5*time.Second, "the will counted", func() bool {
		return g2.Metrics().Get("mqttgw_wills_published_total", "listener", "sn") == 1
	})

	dup := *q2
	dup.Flags.DUP = true
	p.send(&dup) // as if the PUBREC had been lost
	if rec := snExpect[*mqttsn.Pubrec](p); rec.MsgID != 3 {
		t.Fatalf("PUBREC %+v", rec)
	}
	p.send(&mqttsn.Pubrel{MsgID: 3})
	if pc := snExpect[*mqttsn.Pubcomp](p); pc.MsgID != 3 {
		t.Fatalf("PUBCOMP %+v", pc)
	}
	p.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: ra.TopicID, MsgID: 4, Data: []byte("after")})
	if pa := snExpect[*mqttsn.Puback](p); pa.ReturnCode != mqttsn.Accepted {
		t.Fatalf("PUBACK %+v: the topic id was registered before the restart", pa)
	}
	sub.Expect(t, 5*time.Second, "rs/p", "after") // and not "exactly-once" again

	s.send(&mqttsn.Pingreq{ClientID: "s"})
	for _, want := range []string{"s1", "s2"} {
		m := snExpect[*mqttsn.Publish](s)
		if string(m.Data) != want {
			t.Fatalf("buffered PUBLISH %+v, want %q", m, want)
		}
		s.send(&mqttsn.Puback{TopicID: m.TopicID, MsgID: m.MsgID, ReturnCode: mqttsn.Accepted})
	}
	snExpect[*mqttsn.Pingresp](s)

	// p's subscription was made again at the broker: a retained message
	// reaches it whenever the subscription is in place.
	env.pub(t, "cmd/p", "to-p", 1, true)
	m := snExpect[*mqttsn.Publish](p)
	if string(m.Data) != "to-p" || m.TopicID != sa.TopicID {
		t.Fatalf("PUBLISH %+v, want \"to-p\" on the SUBACK's topic id %d", m, sa.TopicID)
	}
	sub.None(t, 300*time.Millisecond)
	wills.None(t, 300*time.Millisecond)
}

// TestMQTTSNRestartWithoutStoreStartsNewSession: without a store, a restart
// forgets the sessions; a client that connects again with CleanSession false
// is accepted with a new, empty session (MQTT-SN 1.2 has no session-present
// flag), counted, and its old topic id is "invalid topic ID", which tells it
// to REGISTER again (§6.6).
func TestMQTTSNRestartWithoutStoreStartsNewSession(t *testing.T) {
	b := startMosquitto(t, false)
	port := udpPort(t)
	cfg := restartTOML(b, port, "")
	g := startGateway(t, cfg)
	env := &snEnv{b: b, g: g, addr: "127.0.0.1:" + strconv.Itoa(port)}
	c := env.raw(t)
	c.connect("forgot", 60, false)
	c.send(&mqttsn.Register{MsgID: 1, TopicName: "t/forgot"})
	id := snExpect[*mqttsn.Regack](c).TopicID
	g.stop(t)

	g2 := startGateway(t, cfg)
	c.connect("forgot", 60, false)
	if n := g2.Metrics().Get("mqttgw_mqttsn_persistent_connects_total", "listener", "sn", "session", "new"); n != 1 {
		t.Fatalf("new sessions %v, want 1", n)
	}
	c.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: id, MsgID: 2, Data: []byte("x")})
	if pa := snExpect[*mqttsn.Puback](c); pa.ReturnCode != mqttsn.InvalidTopicID {
		t.Fatalf("PUBACK %+v, want invalid topic ID", pa)
	}
}
