package coap

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapobs "github.com/plgd-dev/go-coap/v3/net/observation"

	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/store"
	"github.com/mqttgw/mqttgw/udpgw"
)

// openState opens a bbolt store in a temporary directory, closed at the
// test's end.
func openState(t *testing.T) store.State {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st.State()
}

// observationRecords reads the listener "test"'s observation records.
func observationRecords(t *testing.T, st store.State) []observationRecord {
	t.Helper()
	var recs []observationRecord
	err := st.Range(store.KindCoAPObservation, func(key string, v []byte) bool {
		r, err := decodeObservationRecord(v)
		if err != nil {
			t.Errorf("record %q: %v", key, err)
			return true
		}
		if want := "test\x00" + r.Device + "\x00" + string(r.Token); key != want {
			t.Errorf("record key %q, want %q", key, want)
		}
		recs = append(recs, r)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// restartWith makes what a restarted gateway has: a new registry with the
// device sessions of old restored (the gateway keeps them: store.KindSession).
func restartWith(old *session.Registry, devices ...string) *session.Registry {
	r := session.New(session.Options{})
	r.AddListener("test", session.Listener{Protocol: "coap", Keepalive: 24 * time.Hour})
	for _, dev := range devices {
		k := session.Key{Listener: "test", Device: dev}
		if s := old.Lookup(k); s != nil {
			v, _ := s.Save()
			r.Restore(k, v)
		}
	}
	return r
}

// newer is RFC 7641 §3.4's test, as go-coap's client applies it: is v2 a
// newer notification than v1 when little time passed between them?
func newer(v1, v2 uint32) bool {
	now := time.Now()
	return coapobs.ValidSequenceNumber(v1, v2, now, now)
}

func observeOf(t *testing.T, m *pool.Message) uint32 {
	t.Helper()
	v, err := m.Observe()
	if err != nil {
		t.Fatalf("message %v without Observe", m)
	}
	return v
}

// TestObservationSurvivesRestart: an observation registered before the
// listener stopped is restored from the store by the next one on the same
// address, with its subscription made again: the next message reaches the
// observer with the same token and an Observe number newer than every one it
// got (RFC 7641 §3.4), Confirmable first (§4.5). Deregistering it (Observe 1)
// deletes its record.
func TestObservationSurvivesRestart(t *testing.T) {
	st := openState(t)
	reg := session.New(session.Options{})
	tl := startListener(t, udpgw.Env{Sessions: reg}, Options{State: st})
	p := newRawPeer(t, tl.addr)
	r := p.do(observeReq("/ps/o/t?c=watcher", "tk1"))
	if r.Code() != codes.Content {
		t.Fatalf("register: %v", r.Code())
	}
	seq := observeOf(t, r)
	// The response waited for the record.
	if recs := observationRecords(t, st); len(recs) != 1 || recs[0].Device != "watcher" || string(recs[0].Token) != "tk1" || recs[0].Filter != "o/t" || recs[0].Seq != seq {
		t.Fatalf("records after the registration response: %+v (Observe %d)", recs, seq)
	}
	publish(t, tl.broker, "o/t", "before")
	m := p.recv(5 * time.Second)
	if m == nil {
		t.Fatal("no notification before the restart")
	}
	if m.Type() == message.Confirmable {
		p.ack(m)
	}
	seq = observeOf(t, m)
	// The registration came from an address not yet proven; once it is
	// (the peer answers the listener's pings), the record says so.
	local := p.conn.LocalAddr().String()
	waitFor(t, 10*time.Second, "the record to hold the proven address", func() bool {
		recs := observationRecords(t, st)
		return len(recs) == 1 && recs[0].Addr.String() == local
	})
	if err := tl.Close(); err != nil {
		t.Fatal(err)
	}

	reg2 := restartWith(reg, "watcher")
	tl2 := startListener(t, udpgw.Env{Sessions: reg2}, Options{State: st, Bind: tl.addr})
	waitFor(t, 5*time.Second, "the restored subscription", func() bool { return tl2.broker.subscriptions() == 1 })
	if n := tl2.counter("mqttgw_coap_observations"); n != 1 {
		t.Fatalf("observations after the restart: %d", n)
	}
	publish(t, tl2.broker, "o/t", "after")
	m = p.recv(5 * time.Second)
	if m == nil {
		t.Fatal("no notification after the restart")
	}
	body, _ := m.ReadBody()
	if string(m.Token()) != "tk1" || string(body) != "after" || m.Type() != message.Confirmable || !newer(seq, observeOf(t, m)) {
		t.Fatalf("after the restart: token %q body %q type %v Observe %d (before: %d)", m.Token(), body, m.Type(), observeOf(t, m), seq)
	}
	seq = observeOf(t, m)
	p.ack(m)
	publish(t, tl2.broker, "o/t", "again")
	m = p.recv(5 * time.Second)
	if m == nil || observeOf(t, m) != (seq+1)&seqMask || m.Type() != message.NonConfirmable {
		t.Fatalf("next notification: %v, want NON with Observe %d", m, seq+1)
	}

	// GET with Observe 1 (RFC 7641 §3.6) ends it, and its record.
	dereg := observeReq("/ps/o/t?c=watcher", "tk1")
	dereg.observe = 1
	p.do(dereg)
	waitFor(t, 5*time.Second, "the record deleted", func() bool { return len(observationRecords(t, st)) == 0 })
}

// TestObservationOfGoneDeviceDeleted: at the restart the device's session is
// not there (lost while the gateway was down): its observation is not
// restored, its record is deleted, nothing is subscribed.
func TestObservationOfGoneDeviceDeleted(t *testing.T) {
	st := openState(t)
	reg := session.New(session.Options{})
	tl := startListener(t, udpgw.Env{Sessions: reg}, Options{State: st})
	p := newRawPeer(t, tl.addr)
	if r := p.do(observeReq("/ps/g/t?c=goner", "g1")); r.Code() != codes.Content {
		t.Fatalf("register: %v", r.Code())
	}
	if err := tl.Close(); err != nil {
		t.Fatal(err)
	}
	tl2 := startListener(t, udpgw.Env{Sessions: restartWith(reg)}, Options{State: st, Bind: tl.addr})
	waitFor(t, 5*time.Second, "the record deleted", func() bool { return len(observationRecords(t, st)) == 0 })
	if n := tl2.broker.subscriptions(); n != 0 {
		t.Fatalf("%d subscriptions for a gone device", n)
	}
}

// gatedState is a store.State whose commits wait while gate is closed.
type gatedState struct {
	store.State
	mu   sync.Mutex
	gate chan struct{} // nil: open
}

func (g *gatedState) Apply(ctx context.Context, ops ...store.Op) error {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.State.Apply(ctx, ops...)
}

func (g *gatedState) hold() {
	g.mu.Lock()
	g.gate = make(chan struct{})
	g.mu.Unlock()
}

func (g *gatedState) release() {
	g.mu.Lock()
	close(g.gate)
	g.gate = nil
	g.mu.Unlock()
}

// TestNotificationWaitsForItsSequenceRecord: a notification whose Observe
// number would be more than seqWindow above the last committed record waits
// for the newer record (else a crash could restart the sequence below what
// was sent); the commit lets it go.
func TestNotificationWaitsForItsSequenceRecord(t *testing.T) {
	gs := &gatedState{State: openState(t)}
	tl := startListener(t, udpgw.Env{}, Options{State: gs})
	p := newRawPeer(t, tl.addr)
	r := p.do(observeReq("/ps/w/t?c=waiter", "w1"))
	if r.Code() != codes.Content {
		t.Fatalf("register: %v", r.Code())
	}
	seq := observeOf(t, r)
	tl.mu.Lock()
	d := tl.devices["waiter"]
	tl.mu.Unlock()
	gs.hold()
	d.mu.Lock()
	o := d.obsLocked("w1")
	o.durable = (o.seq - seqWindow) & seqMask // as if a record were late
	tl.saveLocked(d, o)
	d.mu.Unlock()
	publish(t, tl.broker, "w/t", "held")
	if m := p.recv(300 * time.Millisecond); m != nil {
		t.Fatalf("notification %v sent beyond the committed sequence window", m)
	}
	gs.release()
	m := p.recv(5 * time.Second)
	if m == nil {
		t.Fatal("no notification after the commit")
	}
	if body, _ := m.ReadBody(); string(body) != "held" || observeOf(t, m) != (seq+1)&seqMask {
		t.Fatalf("notification %q Observe %d, want \"held\" %d", body, observeOf(t, m), seq+1)
	}
}
