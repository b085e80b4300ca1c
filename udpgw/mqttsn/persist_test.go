package mqttsn

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/store"
	"github.com/mqttgw/mqttgw/udpgw"
)

// testState is the store's State with two faults a test controls: hold makes
// every commit wait until release (to see what the engine does before its
// records are durable), crash makes every later commit fail without writing
// (the process died: nothing more reaches the disk).
type testState struct {
	store.State
	mu      sync.Mutex
	gate    chan struct{} // non-nil: commits wait for it to close
	waiting atomic.Int32  // commits waiting at the gate
	crashed atomic.Bool
}

var errCrashed = errors.New("crashed")

func (s *testState) Apply(ctx context.Context, ops ...store.Op) error {
	s.mu.Lock()
	g := s.gate
	s.mu.Unlock()
	if g != nil {
		s.waiting.Add(1)
		<-g
		s.waiting.Add(-1)
	}
	if s.crashed.Load() {
		return errCrashed
	}
	return s.State.Apply(ctx, ops...)
}

func (s *testState) hold() {
	s.mu.Lock()
	s.gate = make(chan struct{})
	s.mu.Unlock()
}

func (s *testState) release() {
	s.mu.Lock()
	close(s.gate)
	s.gate = nil
	s.mu.Unlock()
}

// openTestStore opens a store in a temporary directory for the test.
func openTestStore(t *testing.T) *testState {
	t.Helper()
	b, err := store.Open(t.TempDir(), store.Options{NoSync: true, CommitInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return &testState{State: b.State()}
}

// startStored is startEngine with st as its store.
func startStored(t *testing.T, st *testState, tune func(*Options)) *testEngine {
	t.Helper()
	return startEngine(t, func(o *Options) {
		o.State = st
		if tune != nil {
			tune(o)
		}
	})
}

// crash stops te as a kill -9 would, for its records: nothing it writes from
// now on reaches the store. The engine itself is closed by its cleanup.
func (te *testEngine) crash(st *testState) {
	st.crashed.Store(true)
	te.Close()
}

// moveTo makes d talk to te from the address it had: the same device after
// the gateway restarted (on another port here).
func (d *device) moveTo(te *testEngine) {
	d.t.Helper()
	laddr := d.c.LocalAddr().(*net.UDPAddr)
	d.c.Close()
	ra, _ := net.ResolveUDPAddr("udp", te.addr)
	c, err := net.DialUDP("udp", laddr, ra)
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { c.Close() })
	d.c = c
}

func (te *testEngine) settled(t *testing.T) {
	t.Helper()
	waitUntil(t, "records committed", func() bool { return te.pendingWrites() == 0 })
}

func (st *testState) record(t *testing.T, id string) (sessionRecord, bool) {
	t.Helper()
	v, ok, err := st.Get(store.KindMQTTSNSession, "sn\x00"+id)
	if err != nil || !ok {
		return sessionRecord{}, false
	}
	r, err := decodeSessionRecord(v)
	if err != nil {
		t.Fatal(err)
	}
	return r, true
}

// TestPersistRestart: a persistent client's registration, subscription and
// QoS 2 exchange awaiting PUBREL survive a crash; after the restart it goes on
// without a new CONNECT: its PUBLISH with the topic id registered before is
// accepted, its retransmitted QoS 2 PUBLISH is answered without publishing
// again, its PUBREL completes, and its subscription is made again at the
// broker and delivers.
func TestPersistRestart(t *testing.T) {
	st := openTestStore(t)
	te := startStored(t, st, nil)
	d := te.device(t)
	d.connect("p1", 60, false)
	id := d.register("up/a")
	d.subscribe("down/#", 1)
	q2 := &mqttsn.Publish{Flags: mqttsn.Flags{QoS: 2}, TopicID: id, MsgID: 5, Data: []byte("once")}
	d.send(q2)
	recv[*mqttsn.Pubrec](d) // the record holding MsgId 5 is committed
	te.crash(st)

	st.crashed.Store(false)
	te2 := startStored(t, st, nil)
	d.moveTo(te2)
	d.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: id, MsgID: 6, Data: []byte("after")})
	if pa := recv[*mqttsn.Puback](d); pa.ReturnCode != mqttsn.Accepted || pa.MsgID != 6 {
		t.Fatalf("PUBACK %+v, want accepted: the topic id was registered before the crash", pa)
	}
	dup := *q2
	dup.Flags.DUP = true
	d.send(&dup) // the PUBREC was lost, say
	if rec := recv[*mqttsn.Pubrec](d); rec.MsgID != 5 {
		t.Fatalf("PUBREC %+v", rec)
	}
	d.send(&mqttsn.Pubrel{MsgID: 5})
	if pc := recv[*mqttsn.Pubcomp](d); pc.MsgID != 5 {
		t.Fatalf("PUBCOMP %+v", pc)
	}
	if p := te2.b.pubs(); len(p) != 1 || string(p[0].Payload) != "after" {
		t.Fatalf("broker after the restart got %+v, want only \"after\": MsgId 5 was published before", p)
	}
	waitUntil(t, "subscription made again", func() bool {
		for _, c := range te2.b.callList() {
			if c == "sub down/#" {
				return true
			}
		}
		return false
	})
	te2.b.send(t, "p1", "down/#", udpgw.Message{Topic: "down/x", Payload: []byte("hi")})
	reg := recv[*mqttsn.Register](d)
	d.send(&mqttsn.Regack{TopicID: reg.TopicID, MsgID: reg.MsgID})
	if p := recv[*mqttsn.Publish](d); string(p.Data) != "hi" {
		t.Fatalf("PUBLISH %+v", p)
	}
}

// TestPersistReconnectFindsSession: after the restart a CONNECT with
// CleanSession false finds the registrations and subscriptions, and is
// counted as resumed.
func TestPersistReconnectFindsSession(t *testing.T) {
	st := openTestStore(t)
	te := startStored(t, st, nil)
	d := te.device(t)
	d.connect("p2", 60, false)
	id := d.register("up/b")
	d.subscribe("down/b", 0)
	te.crash(st)

	st.crashed.Store(false)
	te2 := startStored(t, st, nil)
	d.moveTo(te2)
	d.connect("p2", 60, false)
	if got := te2.reg.Get("mqttgw_mqttsn_persistent_connects_total", "listener", "sn", "session", "resumed"); got != 1 {
		t.Errorf("resumed connects %v, want 1", got)
	}
	d.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: id, MsgID: 1, Data: []byte("x")})
	if pa := recv[*mqttsn.Puback](d); pa.ReturnCode != mqttsn.Accepted {
		t.Fatalf("PUBACK %+v", pa)
	}
	waitUntil(t, "subscription made again", func() bool { return len(te2.b.callList()) > 0 })
	te2.b.send(t, "p2", "down/b", udpgw.Message{Topic: "down/b", Payload: []byte("y")})
	// The resumed session names the id again (REGISTER) before its first
	// downlink: the id of the SUBACK before the crash.
	reg := recv[*mqttsn.Register](d)
	d.send(&mqttsn.Regack{TopicID: reg.TopicID, MsgID: reg.MsgID, ReturnCode: mqttsn.Accepted})
	if p := recv[*mqttsn.Publish](d); string(p.Data) != "y" || p.TopicID != reg.TopicID {
		t.Fatalf("PUBLISH %+v, want the id of the SUBACK before the crash", p)
	}
}

// TestPersistAnswersWaitForCommit: PUBREC, PUBCOMP and REGACK go out only
// once the record they speak of is committed (MQTT-SN 1.2 §6.7; persist.go).
func TestPersistAnswersWaitForCommit(t *testing.T) {
	st := openTestStore(t)
	te := startStored(t, st, nil)
	d := te.device(t)
	d.connect("p3", 60, false)
	te.settled(t)

	st.hold()
	d.send(&mqttsn.Register{MsgID: 1, TopicName: "up/c"})
	waitUntil(t, "commit held", func() bool { return st.waiting.Load() > 0 })
	d.none(100 * time.Millisecond)
	st.release()
	ra := recv[*mqttsn.Regack](d)
	if r, _ := st.record(t, "p3"); len(r.Topics) != 1 || r.Topics[0].ID != ra.TopicID {
		t.Fatalf("record %+v after REGACK %+v", r, ra)
	}

	st.hold()
	d.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 2}, TopicID: ra.TopicID, MsgID: 9, Data: []byte("q2")})
	waitUntil(t, "published and commit held", func() bool { return len(te.b.pubs()) == 1 && st.waiting.Load() > 0 })
	d.none(100 * time.Millisecond)
	d.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 2, DUP: true}, TopicID: ra.TopicID, MsgID: 9, Data: []byte("q2")})
	d.none(100 * time.Millisecond) // a retransmission meanwhile gets no early PUBREC either
	st.release()
	recv[*mqttsn.Pubrec](d)
	if r, _ := st.record(t, "p3"); len(r.AwaitRel) != 1 || r.AwaitRel[0] != 9 {
		t.Fatalf("record %+v after PUBREC: MsgId 9 not awaiting PUBREL", r)
	}

	st.hold()
	d.send(&mqttsn.Pubrel{MsgID: 9})
	waitUntil(t, "commit held", func() bool { return st.waiting.Load() > 0 })
	d.none(100 * time.Millisecond)
	st.release()
	recv[*mqttsn.Pubcomp](d)
	if r, _ := st.record(t, "p3"); len(r.AwaitRel) != 0 {
		t.Fatalf("record %+v after PUBCOMP", r)
	}
	if p := te.b.pubs(); len(p) != 1 {
		t.Fatalf("broker got %d publishes, want 1", len(p))
	}
}

// TestPersistSleepingBuffered: the messages buffered for a sleeping client
// survive a crash, and it gets them when it wakes up after the restart.
func TestPersistSleepingBuffered(t *testing.T) {
	st := openTestStore(t)
	te := startStored(t, st, nil)
	d := te.device(t)
	d.connect("zz", 60, false)
	d.subscribe("news", 1)
	d.send(&mqttsn.Disconnect{Duration: 600, HasDuration: true})
	recv[*mqttsn.Disconnect](d)
	for _, p := range []string{"m1", "m2", "m3"} {
		te.b.send(t, "zz", "news", udpgw.Message{Topic: "news", Payload: []byte(p), QoS: 1})
	}
	waitUntil(t, "3 buffered", func() bool { return te.buffered() == 3 })
	te.settled(t)
	te.crash(st)

	st.crashed.Store(false)
	te2 := startStored(t, st, nil)
	d.moveTo(te2)
	d.send(&mqttsn.Pingreq{ClientID: "zz"})
	for _, want := range []string{"m1", "m2", "m3"} {
		p := recv[*mqttsn.Publish](d)
		if string(p.Data) != want || p.Flags.QoS != 1 {
			t.Fatalf("PUBLISH %+v, want %q at QoS 1", p, want)
		}
		d.send(&mqttsn.Puback{TopicID: p.TopicID, MsgID: p.MsgID, ReturnCode: mqttsn.Accepted})
	}
	recv[*mqttsn.Pingresp](d)
	te2.settled(t)
	if r, _ := st.record(t, "zz"); r.State != recAsleep || len(r.Queue) != 0 || r.Out != nil {
		t.Fatalf("record %+v: want asleep with nothing buffered", r)
	}
}

// TestPersistLostAtStart: a client whose keepalive ran out while the gateway
// was down is lost at start: the registry's expiry publishes its will once
// (here: reports its session lost, with the will), its CONNECT before that is
// dropped, and it keeps its persistent session afterwards.
func TestPersistLostAtStart(t *testing.T) {
	st := openTestStore(t)
	te := startStored(t, st, nil)
	te.clock.mu.Lock()
	te.clock.t = time.Now().Add(-time.Hour) // the client was last seen an hour ago
	te.clock.mu.Unlock()
	d := te.device(t)
	d.send(&mqttsn.Connect{Flags: mqttsn.Flags{Will: true}, Duration: 10, ClientID: "gone"})
	recv[*mqttsn.WillTopicReq](d)
	d.send(&mqttsn.WillTopic{Flags: mqttsn.Flags{QoS: 1}, Topic: "will/gone"})
	recv[*mqttsn.WillMsgReq](d)
	d.send(&mqttsn.WillMsg{WillMsg: []byte("bye")})
	recv[*mqttsn.Connack](d)
	d.subscribe("keep/#", 0)
	te.settled(t)
	te.crash(st)

	st.crashed.Store(false)
	te2 := startStored(t, st, nil)
	d.moveTo(te2)
	waitUntil(t, "restored", func() bool { return te2.sessions.Len() == 1 })
	d.send(&mqttsn.Connect{Duration: 10, ClientID: "gone"})
	d.none(100 * time.Millisecond)
	if got := te2.dropped("lost_at_start"); got != 1 {
		t.Fatalf("lost_at_start drops %v, want 1", got)
	}
	lost := te2.expire(0)
	if len(lost) != 1 {
		t.Fatalf("%d sessions lost, want 1", len(lost))
	}
	if w, own := lost[0].Will(); w == nil || !own || w.Topic != "will/gone" || string(w.Payload) != "bye" {
		t.Fatalf("will %+v", w)
	}
	if again := te2.expire(time.Second); len(again) != 0 {
		t.Fatalf("lost again: %v", again)
	}
	te2.settled(t)
	if r, _ := st.record(t, "gone"); r.State != recDisconnected || len(r.Subs) != 1 {
		t.Fatalf("record %+v: want disconnected with its subscription", r)
	}
	d.connect("gone", 10, false)
	if got := te2.reg.Get("mqttgw_mqttsn_persistent_connects_total", "listener", "sn", "session", "resumed"); got != 1 {
		t.Errorf("resumed connects %v, want 1", got)
	}
}

// TestPersistCleanDeletes: a clean CONNECT deletes the client's record; a
// clean session is never written.
func TestPersistCleanDeletes(t *testing.T) {
	st := openTestStore(t)
	te := startStored(t, st, nil)
	d := te.device(t)
	d.connect("cl", 60, false)
	te.settled(t)
	if _, ok := st.record(t, "cl"); !ok {
		t.Fatal("no record of the persistent session")
	}
	d.connect("cl", 61, true) // another Duration: not a copy of the first CONNECT
	d.register("x")
	te.settled(t)
	if r, ok := st.record(t, "cl"); ok {
		t.Fatalf("record %+v of a clean session", r)
	}
}

// TestPersistentConnectWithoutSession: without a store, a CONNECT with
// CleanSession false whose session the gateway does not have is accepted with
// a new session and counted (MQTT-SN has no session-present flag).
func TestPersistentConnectWithoutSession(t *testing.T) {
	te := startEngine(t, nil)
	d := te.device(t)
	d.connect("n1", 60, false)
	d.send(&mqttsn.Disconnect{})
	recv[*mqttsn.Disconnect](d)
	d.connect("n1", 60, false)
	get := func(s string) float64 {
		return te.reg.Get("mqttgw_mqttsn_persistent_connects_total", "listener", "sn", "session", s)
	}
	if get("new") != 1 || get("resumed") != 1 {
		t.Fatalf("new %v, resumed %v; want 1 and 1", get("new"), get("resumed"))
	}
}

// TestQoS2AwaitingSurvivesReconnect: a QoS 2 publish awaiting PUBREL belongs
// to the persistent session, in memory too: after a new CONNECT with
// CleanSession false, its retransmission is not published again and its
// PUBREL completes.
func TestQoS2AwaitingSurvivesReconnect(t *testing.T) {
	te := startEngine(t, nil)
	d := te.device(t)
	d.connect("q2", 60, false)
	id := d.register("t")
	q2 := &mqttsn.Publish{Flags: mqttsn.Flags{QoS: 2}, TopicID: id, MsgID: 3, Data: []byte("v")}
	d.send(q2)
	recv[*mqttsn.Pubrec](d)
	d.connect("q2", 61, false)
	q2.Flags.DUP = true
	d.send(q2)
	recv[*mqttsn.Pubrec](d)
	d.send(&mqttsn.Pubrel{MsgID: 3})
	recv[*mqttsn.Pubcomp](d)
	if p := te.b.pubs(); len(p) != 1 {
		t.Fatalf("broker got %d publishes, want 1", len(p))
	}
}

// TestPersistRetriesFailedCommit: when the store fails a commit, the answers
// that wait for it are held (nothing is acknowledged that is not durable) and
// the records are written again at the next Tick; then the answers go out.
func TestPersistRetriesFailedCommit(t *testing.T) {
	st := openTestStore(t)
	te := startStored(t, st, nil)
	d := te.device(t)
	d.connect("rt", 60, false)
	id := d.register("up/rt")
	te.settled(t)

	st.crashed.Store(true) // commits fail from now on
	d.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 2}, TopicID: id, MsgID: 4, Data: []byte("held")})
	waitUntil(t, "a failed commit", func() bool {
		return te.reg.Get("mqttgw_mqttsn_session_writes_total", "listener", "sn", "result", "failed") > 0
	})
	d.none(100 * time.Millisecond)
	st.crashed.Store(false)
	te.tick(time.Millisecond)
	if rec := recv[*mqttsn.Pubrec](d); rec.MsgID != 4 {
		t.Fatalf("PUBREC %+v", rec)
	}
	if r, _ := st.record(t, "rt"); len(r.AwaitRel) != 1 {
		t.Fatalf("record %+v", r)
	}
}

// TestPersistRestoreIsNoBirth: a client restored at start gets its session
// through the registry's Restore, so the gateway's Restored hook gives it its
// class and the Created hook (the birth) is not called again.
func TestPersistRestoreIsNoBirth(t *testing.T) {
	st := openTestStore(t)
	a := startStored(t, st, nil)
	d := a.device(t)
	d.connect("dev", 60, false)
	waitUntil(t, "the client's record", func() bool {
		_, ok, err := st.Get(store.KindMQTTSNSession, "sn\x00dev")
		return err == nil && ok
	})
	a.Close()
	var created, restored atomic.Int32
	b := startEngineWith(t, session.Options{
		Created:  func(*session.Session) { created.Add(1) },
		Restored: func(*session.Session) { restored.Add(1) },
	}, func(o *Options) { o.State = st })
	waitUntil(t, "the client's session restored", func() bool {
		return b.sessions.Lookup(session.Key{Listener: "sn", Device: "dev"}) != nil
	})
	if created.Load() != 0 || restored.Load() != 1 {
		t.Fatalf("hooks: Created %d, Restored %d; want 0 and 1", created.Load(), restored.Load())
	}
}
