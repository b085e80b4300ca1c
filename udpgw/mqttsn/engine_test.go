package mqttsn

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// TestPubackWaitsForBrokerWithoutBlockingTheReader: a QoS 1 PUBLISH is
// acknowledged only after the broker's ack; meanwhile the reader answers the
// same client's PINGREQ and other clients' traffic.
func TestPubackWaitsForBrokerWithoutBlockingTheReader(t *testing.T) {
	te := startEngine(t, nil)
	gate := make(chan struct{})
	te.b.mu.Lock()
	te.b.gate = gate
	te.b.mu.Unlock()
	d := te.device(t)
	d.connect("slow", 60, true)
	id := d.register("a")
	d.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: id, MsgID: 1, Data: []byte("x")})
	d.send(&mqttsn.Pingreq{})
	recv[*mqttsn.Pingresp](d) // the reader is not stuck behind the broker
	other := te.device(t)
	other.connect("other", 60, true)
	other.send(&mqttsn.Pingreq{})
	recv[*mqttsn.Pingresp](other)
	d.none(100 * time.Millisecond) // no PUBACK before the broker's
	close(gate)
	if pa := recv[*mqttsn.Puback](d); pa.MsgID != 1 || pa.TopicID != id || pa.ReturnCode != mqttsn.Accepted {
		t.Fatalf("PUBACK %+v", pa)
	}
	if p := te.b.pubs(); len(p) != 1 || p[0].Topic != "a" || p[0].QoS != 1 {
		t.Fatalf("broker got %+v", p)
	}
}

// TestBrokerErrorsBecomeReturnCodes maps Broker errors to PUBACK codes.
func TestBrokerErrorsBecomeReturnCodes(t *testing.T) {
	te := startEngine(t, nil)
	d := te.device(t)
	d.connect("errs", 60, true)
	id := d.register("a")
	for i, tc := range []struct {
		err  error
		code mqttsn.ReturnCode
	}{
		{fmt.Errorf("x: %w", udpgw.ErrUnavailable), mqttsn.Congestion},
		{fmt.Errorf("x: %w", udpgw.ErrForbidden), mqttsn.NotSupported},
		{fmt.Errorf("x: %w", udpgw.ErrBadTopic), mqttsn.InvalidTopicID},
		{errors.New("anything else"), mqttsn.Congestion},
	} {
		te.b.mu.Lock()
		te.b.err = tc.err
		te.b.mu.Unlock()
		d.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 2}, TopicID: id, MsgID: uint16(i + 1), Data: []byte("x")})
		if pa := recv[*mqttsn.Puback](d); pa.ReturnCode != tc.code || pa.MsgID != uint16(i+1) {
			t.Errorf("%v: PUBACK %+v, want %v", tc.err, pa, tc.code)
		}
	}
	// The failed QoS 2 MsgId is free again: a retry publishes.
	te.b.mu.Lock()
	te.b.err = nil
	te.b.mu.Unlock()
	d.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 2, DUP: true}, TopicID: id, MsgID: 1, Data: []byte("x")})
	recv[*mqttsn.Pubrec](d)
}

// TestOperationQueueBound: beyond MaxClientOps queued operations a QoS 1
// PUBLISH gets congestion and a QoS 0 one is dropped and counted.
func TestOperationQueueBound(t *testing.T) {
	te := startEngine(t, func(o *Options) { o.MaxClientOps = 2 })
	gate := make(chan struct{})
	d := te.device(t)
	d.connect("busy", 60, true)
	id := d.register("a")
	te.b.mu.Lock()
	te.b.gate = gate
	te.b.mu.Unlock()
	queued := func(n int) func() bool {
		return func() bool {
			te.mu.Lock()
			defer te.mu.Unlock()
			c := te.byID["busy"]
			return len(c.ops) == n && c.queued
		}
	}
	d.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: id, MsgID: 1, Data: []byte("x")})
	waitUntil(t, "one running", queued(0))
	for i := 2; i <= 3; i++ {
		d.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: id, MsgID: uint16(i), Data: []byte("x")})
	}
	waitUntil(t, "two queued", queued(2))
	d.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: id, MsgID: 9, Data: []byte("x")})
	if pa := recv[*mqttsn.Puback](d); pa.MsgID != 9 || pa.ReturnCode != mqttsn.Congestion {
		t.Fatalf("PUBACK %+v, want congestion for 9", pa)
	}
	d.send(&mqttsn.Publish{TopicID: id, Data: []byte("q0")})
	waitUntil(t, "QoS 0 drop", func() bool { return te.dropped("busy") == 1 })
	close(gate)
	for i := range 3 {
		if pa := recv[*mqttsn.Puback](d); pa.MsgID != uint16(i+1) || pa.ReturnCode != mqttsn.Accepted {
			t.Fatalf("PUBACK %+v: want %d in order", pa, i+1)
		}
	}
}

// TestClientOperationsInOrder: a client's SUBSCRIBE and UNSUBSCRIBE reach the
// broker in the order sent, even when the broker is slow.
func TestClientOperationsInOrder(t *testing.T) {
	te := startEngine(t, nil)
	d := te.device(t)
	d.connect("order", 60, true)
	gate := make(chan struct{})
	te.b.mu.Lock()
	te.b.gate = gate
	te.b.mu.Unlock()
	d.send(&mqttsn.Subscribe{MsgID: 1, TopicName: "x/#"})
	d.send(&mqttsn.Unsubscribe{MsgID: 2, TopicName: "x/#"})
	d.send(&mqttsn.Subscribe{MsgID: 3, TopicName: "y"})
	time.Sleep(50 * time.Millisecond)
	close(gate)
	recv[*mqttsn.Suback](d)
	recv[*mqttsn.Unsuback](d)
	recv[*mqttsn.Suback](d)
	if got, want := te.b.callList(), []string{"sub x/#", "unsub x/#", "sub y"}; !slices.Equal(got, want) {
		t.Fatalf("broker calls %v, want %v", got, want)
	}
}

// TestDownlinkRetriesThenGivesUp: an unacknowledged QoS 1 PUBLISH is sent again
// with DUP MaxRetries times, then dropped and counted; the next message flows.
func TestDownlinkRetriesThenGivesUp(t *testing.T) {
	te := startEngine(t, nil) // T_RETRY 50ms, N_RETRY 2
	d := te.device(t)
	d.connect("deaf", 60, true)
	sa := d.subscribe("t", 1)
	te.b.send(t, "deaf", "t", udpgw.Message{Topic: "t", Payload: []byte("1"), QoS: 1})
	p := recv[*mqttsn.Publish](d)
	if p.Flags.DUP || p.TopicID != sa.TopicID {
		t.Fatalf("first PUBLISH %+v", p)
	}
	for range 2 {
		te.tick(60 * time.Millisecond) // past T_RETRY
		if r := recv[*mqttsn.Publish](d); !r.Flags.DUP || r.MsgID != p.MsgID {
			t.Fatalf("retransmission %+v", r)
		}
	}
	te.tick(60 * time.Millisecond)
	waitUntil(t, "give up", func() bool { return te.dropped("retries_exhausted") == 1 })
	te.b.send(t, "deaf", "t", udpgw.Message{Topic: "t", Payload: []byte("2"), QoS: 1})
	p2 := recv[*mqttsn.Publish](d)
	if string(p2.Data) != "2" || p2.Flags.DUP {
		t.Fatalf("next PUBLISH %+v", p2)
	}
	d.send(&mqttsn.Puback{TopicID: p2.TopicID, MsgID: p2.MsgID})
	waitUntil(t, "PUBACK taken", func() bool {
		te.mu.Lock()
		defer te.mu.Unlock()
		return te.byID["deaf"].out == nil
	})
	te.tick(60 * time.Millisecond)
	te.tick(60 * time.Millisecond)
	d.none(150 * time.Millisecond)
}

// TestAwakeClientKeepsUnackedMessage: a client that wakes and then stops
// answering keeps the message for its next wake-up (none lost, §6.14).
func TestAwakeClientKeepsUnackedMessage(t *testing.T) {
	te := startEngine(t, nil)
	d := te.device(t)
	d.connect("dozy", 60, false)
	d.subscribe("t", 1)
	d.send(&mqttsn.Disconnect{Duration: 60, HasDuration: true})
	recv[*mqttsn.Disconnect](d)
	te.b.send(t, "dozy", "t", udpgw.Message{Topic: "t", Payload: []byte("keep me"), QoS: 1})
	d.none(100 * time.Millisecond)
	d.send(&mqttsn.Pingreq{ClientID: "dozy"})
	first := recv[*mqttsn.Publish](d)
	for range 2 { // and 2 retries, unanswered
		te.tick(60 * time.Millisecond)
		recv[*mqttsn.Publish](d)
	}
	te.tick(60 * time.Millisecond)
	waitUntil(t, "back to sleep", func() bool { return te.dropped("retries_exhausted") == 1 })
	d.none(100 * time.Millisecond) // no PINGRESP: the message was not acknowledged
	d.send(&mqttsn.Pingreq{ClientID: "dozy"})
	p := recv[*mqttsn.Publish](d)
	if string(p.Data) != "keep me" || !p.Flags.DUP || p.MsgID != first.MsgID {
		t.Fatalf("PUBLISH %+v: want the same message again, DUP, MsgId %d", p, first.MsgID)
	}
	d.send(&mqttsn.Puback{TopicID: p.TopicID, MsgID: p.MsgID})
	recv[*mqttsn.Pingresp](d)
}

// TestLostSessions: the gateway's driver expires a session and the registry
// calls SessionEnded: the will in the session is the device's own, which the
// gateway maps under the mountpoint; a clean client is dropped with its
// subscriptions, a persistent one keeps them until SessionExpiry.
func TestLostSessions(t *testing.T) {
	te := startEngine(t, func(o *Options) { o.SessionExpiry = 200 * time.Millisecond })
	clean := te.device(t)
	clean.send(&mqttsn.Connect{Flags: mqttsn.Flags{CleanSession: true, Will: true}, Duration: 10, ClientID: "c"})
	recv[*mqttsn.WillTopicReq](clean)
	clean.send(&mqttsn.WillTopic{Flags: mqttsn.Flags{QoS: 1, Retain: true}, Topic: "status/c"})
	recv[*mqttsn.WillMsgReq](clean)
	clean.send(&mqttsn.WillMsg{WillMsg: []byte("offline")})
	recv[*mqttsn.Connack](clean)
	clean.subscribe("c/in", 0)
	keep := te.device(t)
	keep.connect("p", 10, false)
	keep.subscribe("p/in", 1)

	lost := te.expire(16 * time.Second) // what the gateway's driver does; SessionEnded follows
	if len(lost) != 2 {
		t.Fatalf("%d sessions expired", len(lost))
	}
	for _, s := range lost {
		if s.Key.Device == "c" {
			w, own := s.Will()
			if w == nil || !own || string(w.Payload) != "offline" || w.QoS != 1 || !w.Retain {
				t.Fatalf("will %+v (own %v): want the device's, offline, QoS 1, retained", w, own)
			}
			if topic, err := te.b.BrokerTopic("c", w.Topic); err != nil || topic != "mp/status/c" {
				t.Fatalf("will topic %q maps to %q, %v: want mp/status/c", w.Topic, topic, err)
			}
		}
	}
	waitUntil(t, "c's subscriptions dropped", func() bool { return slices.Contains(te.b.callList(), "unsuball c") })
	clean.send(&mqttsn.Pingreq{})
	recv[*mqttsn.Disconnect](clean)

	// p is disconnected but keeps its subscription: a message is buffered.
	te.b.send(t, "p", "p/in", udpgw.Message{Topic: "p/in", Payload: []byte("kept"), QoS: 1})
	keep.connect("p", 10, false)
	// A resumed session REGISTERs a topic id again before its first downlink
	// on the new connection: the client may be a new process (§6.5).
	reg := recv[*mqttsn.Register](keep)
	keep.send(&mqttsn.Regack{TopicID: reg.TopicID, MsgID: reg.MsgID, ReturnCode: mqttsn.Accepted})
	if p := recv[*mqttsn.Publish](keep); string(p.Data) != "kept" || p.TopicID != reg.TopicID {
		t.Fatalf("%+v", p)
	}
	// Lost again, and past SessionExpiry: the session goes.
	if lost := te.expire(16 * time.Second); len(lost) != 1 {
		t.Fatalf("%d sessions expired", len(lost))
	}
	te.tick(300 * time.Millisecond)
	waitUntil(t, "p's session expired", func() bool { return slices.Contains(te.b.callList(), "unsuball p") })
	te.mu.Lock()
	n := len(te.byID)
	te.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d client records left", n)
	}
}

// TestTouchAfterExpiry: traffic between the driver's Expire and its
// SessionEnded call finds the session gone and is answered as from a
// disconnected client, whether the client is found by address or, in a
// PINGREQ(ClientId), by its id.
func TestTouchAfterExpiry(t *testing.T) {
	te := startEngine(t, nil)
	d := te.device(t)
	d.connect("racer", 10, true)
	// Hold the owner's callback back, to act between Expire and SessionEnded.
	te.sessions.AddListener("sn", session.Listener{Protocol: "mqttsn"})
	lost := te.expire(16 * time.Second)
	d.send(&mqttsn.Pingreq{})
	recv[*mqttsn.Disconnect](d)
	d.send(&mqttsn.Pingreq{ClientID: "racer"})
	recv[*mqttsn.Disconnect](d)
	if s := te.sessions.Lookup(session.Key{Listener: "sn", Device: "racer"}); s != nil || te.sessions.Count("sn", session.StateActive) != 0 {
		t.Fatal("the traffic recreated the session")
	}
	te.SessionEnded(lost[0], session.EndLost) // late: nothing left to do
	d.connect("racer", 10, true)
}

// TestWillExchangeExpires: a will exchange the client abandons is forgotten.
func TestWillExchangeExpires(t *testing.T) {
	te := startEngine(t, nil)
	d := te.device(t)
	d.send(&mqttsn.Connect{Flags: mqttsn.Flags{Will: true}, Duration: 10, ClientID: "w"})
	recv[*mqttsn.WillTopicReq](d)
	te.tick(200 * time.Millisecond) // past (N_RETRY + 1) × T_RETRY
	waitUntil(t, "pending exchange dropped", func() bool {
		te.mu.Lock()
		defer te.mu.Unlock()
		return len(te.pending) == 0
	})
	d.send(&mqttsn.WillTopic{Topic: "late"})
	d.none(100 * time.Millisecond)
	if te.dropped("unexpected") != 1 {
		t.Error("late WILLTOPIC not counted")
	}
}

// TestDownlinkReregisterAfterInvalidTopicID: a client that forgot a topic id
// answers "invalid topic ID"; the gateway REGISTERs again and resends.
func TestDownlinkReregisterAfterInvalidTopicID(t *testing.T) {
	te := startEngine(t, nil)
	d := te.device(t)
	d.connect("amnesia", 60, true)
	d.subscribe("a/#", 1)
	te.b.send(t, "amnesia", "a/#", udpgw.Message{Topic: "a/b", Payload: []byte("m"), QoS: 1})
	reg := recv[*mqttsn.Register](d)
	d.send(&mqttsn.Regack{TopicID: reg.TopicID, MsgID: reg.MsgID})
	p := recv[*mqttsn.Publish](d)
	d.send(&mqttsn.Puback{TopicID: p.TopicID, MsgID: p.MsgID, ReturnCode: mqttsn.InvalidTopicID})
	reg2 := recv[*mqttsn.Register](d)
	if reg2.TopicName != "a/b" {
		t.Fatalf("REGISTER %+v", reg2)
	}
	d.send(&mqttsn.Regack{TopicID: reg2.TopicID, MsgID: reg2.MsgID})
	p2 := recv[*mqttsn.Publish](d)
	if p2.TopicID != reg2.TopicID || string(p2.Data) != "m" {
		t.Fatalf("PUBLISH %+v", p2)
	}
	d.send(&mqttsn.Puback{TopicID: p2.TopicID, MsgID: p2.MsgID})
	// A refused REGISTER drops the message.
	te.b.send(t, "amnesia", "a/#", udpgw.Message{Topic: "a/c", Payload: []byte("n"), QoS: 1})
	reg3 := recv[*mqttsn.Register](d)
	d.send(&mqttsn.Regack{MsgID: reg3.MsgID, ReturnCode: mqttsn.NotSupported})
	d.none(150 * time.Millisecond)
	if te.dropped("register_rejected") != 1 {
		t.Error("refused REGISTER not counted")
	}
}

// TestSubackBeforeHeldDownlink: a message delivered while the broker SUBSCRIBE
// is under way (a retained one) reaches the client after the SUBACK.
func TestSubackBeforeHeldDownlink(t *testing.T) {
	te := startEngine(t, nil)
	d := te.device(t)
	d.connect("held", 60, true)
	gate := make(chan struct{})
	te.b.mu.Lock()
	te.b.gate = gate
	te.b.mu.Unlock()
	d.send(&mqttsn.Subscribe{Flags: mqttsn.Flags{QoS: 1}, MsgID: 5, TopicName: "r"})
	waitUntil(t, "subscribe under way", func() bool {
		te.mu.Lock()
		defer te.mu.Unlock()
		return te.byID["held"].subscribing == 1
	})
	// The retained message arrives through the engine's deliver before the
	// broker call returns.
	te.deliver("held", "r", udpgw.Message{Topic: "r", Payload: []byte("retained"), QoS: 1, Retain: true})
	d.none(50 * time.Millisecond)
	close(gate)
	sa := recv[*mqttsn.Suback](d)
	p := recv[*mqttsn.Publish](d)
	if p.TopicID != sa.TopicID || !p.Flags.Retain || string(p.Data) != "retained" {
		t.Fatalf("PUBLISH %+v after SUBACK %+v", p, sa)
	}
}

func TestTopicTable(t *testing.T) {
	var tt topicTable
	ids := map[string]uint16{}
	for i := range 40 { // past the small slice into the maps
		name := fmt.Sprintf("t/%d", i)
		id, ok := tt.add(name, 40, regClient)
		if !ok || id == 0 {
			t.Fatalf("add %s: %d %v", name, id, ok)
		}
		ids[name] = id
		if again, _ := tt.add(name, 40, regClient); again != id {
			t.Fatalf("second add of %s: %d, want %d", name, again, id)
		}
	}
	if _, ok := tt.add("one more", 40, regClient); ok {
		t.Fatal("add past max")
	}
	for name, id := range ids {
		if n, ok := tt.name(id); !ok || n != name {
			t.Fatalf("name(%d) = %q", id, n)
		}
	}
	tt.remove(ids["t/3"])
	if _, ok := tt.id("t/3"); ok || tt.len() != 39 {
		t.Fatal("remove")
	}
	if id, ok := tt.add("new", 40, regClient); !ok || id == ids["t/4"] {
		t.Fatalf("re-add after remove: %d %v", id, ok)
	}
}

// TestQoS2ResumesWithPubrel: a client that fell asleep between PUBREC and
// PUBCOMP gets PUBREL when it wakes, not the PUBLISH again under a new MsgId.
func TestQoS2ResumesWithPubrel(t *testing.T) {
	te := startEngine(t, nil)
	d := te.device(t)
	d.connect("q2", 60, false)
	d.subscribe("t", 2)
	te.b.send(t, "q2", "t", udpgw.Message{Topic: "t", Payload: []byte("once"), QoS: 2})
	p := recv[*mqttsn.Publish](d)
	d.send(&mqttsn.Pubrec{MsgID: p.MsgID})
	recv[*mqttsn.Pubrel](d)
	d.send(&mqttsn.Disconnect{Duration: 60, HasDuration: true})
	for {
		m, ok := d.tryRecv(time.Second)
		if !ok {
			t.Fatal("no DISCONNECT")
		}
		if _, ok := m.(*mqttsn.Disconnect); ok {
			break
		}
	}
	te.tick(60 * time.Millisecond) // past T_RETRY
	te.tick(60 * time.Millisecond)
	d.none(150 * time.Millisecond) // asleep: no retransmissions
	d.send(&mqttsn.Pingreq{ClientID: "q2"})
	if rel := recv[*mqttsn.Pubrel](d); rel.MsgID != p.MsgID {
		t.Fatalf("PUBREL %+v", rel)
	}
	d.send(&mqttsn.Pubcomp{MsgID: p.MsgID})
	recv[*mqttsn.Pingresp](d)
}

// TestQoS0BurstGoesDirect: QoS 0 publishes of a client with nothing queued
// at the workers go from the reader to the Broker, so a burst far beyond
// MaxClientOps, sent while the Broker holds the first one, loses nothing
// (it waits in the socket's buffer) and arrives in order. Through the
// workers, all but MaxClientOps+1 would have been dropped as busy.
func TestQoS0BurstGoesDirect(t *testing.T) {
	te := startEngine(t, func(o *Options) { o.MaxClientOps = 2 })
	d := te.device(t)
	d.connect("burst", 60, true)
	id := d.register("a")
	gate := make(chan struct{})
	te.b.mu.Lock()
	te.b.gate = gate
	te.b.mu.Unlock()
	const n = 300
	for i := range n {
		d.send(&mqttsn.Publish{TopicID: id, Data: fmt.Appendf(nil, "%03d", i)})
	}
	close(gate)
	waitUntil(t, "every QoS 0 publish at the Broker", func() bool { return len(te.b.pubs()) == n })
	for i, m := range te.b.pubs() {
		if want := fmt.Sprintf("%03d", i); string(m.Payload) != want {
			t.Fatalf("publish %d: %q, want %q (in order)", i, m.Payload, want)
		}
	}
	if b := te.dropped("busy"); b != 0 {
		t.Fatalf("%v QoS 0 publishes dropped as busy", b)
	}
}
