package session

import (
	"sync"
	"testing"
	"time"
)

// saverLog records the sessions a Saver was told of.
type saverLog struct {
	mu   sync.Mutex
	keys []string
}

func (l *saverLog) SessionDirty(s *Session) {
	l.mu.Lock()
	l.keys = append(l.keys, s.Key.Device)
	l.mu.Unlock()
}

// take returns and clears what was recorded.
func (l *saverLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.keys
	l.keys = nil
	return k
}

// TestSaverToldCoarsely: the Saver hears of a session's creation, address and
// user changes and end, but of its traffic only once per quarter keepalive
// after the last Save: a device's datagrams do not each cost a write.
func TestSaverToldCoarsely(t *testing.T) {
	var log saverLog
	r := New(Options{})
	r.AddListener("udp", Listener{Protocol: "udp", Keepalive: 4 * time.Second, Saver: &log})
	r.AddListener("sn", Listener{Protocol: "mqttsn"}) // no Saver: never told
	k := Key{"udp", "d"}
	s, _ := r.Touch(k, a1, t0)
	r.Touch(Key{"sn", "x"}, a1, t0)
	if got := log.take(); len(got) != 1 || got[0] != "d" {
		t.Fatalf("creation: told %v, want [d]", got)
	}
	// Not saved yet: traffic does not tell it again before its Save.
	r.Touch(k, a1, t0.Add(5*time.Second))
	if got := log.take(); len(got) != 0 {
		t.Fatalf("traffic before the Save of a due session: told %v", got)
	}
	v, live := s.Save()
	if !live || v.Peer != a1 || !v.LastSeen.Equal(t0.Add(5*time.Second)) || !v.Created.Equal(t0) {
		t.Fatalf("Save: %+v live=%v", v, live)
	}
	// SaveEvery(4 s) = 1 s after the saved last-seen time.
	for _, d := range []time.Duration{5100 * time.Millisecond, 5500 * time.Millisecond, 5999 * time.Millisecond} {
		r.Touch(k, a1, t0.Add(d))
		r.Refresh(s, a1, t0.Add(d))
	}
	if got := log.take(); len(got) != 0 {
		t.Fatalf("traffic within a quarter keepalive of the save: told %v", got)
	}
	r.Refresh(s, a1, t0.Add(6*time.Second))
	r.Touch(k, a1, t0.Add(6100*time.Millisecond))
	if got := log.take(); len(got) != 1 {
		t.Fatalf("traffic a quarter keepalive after the save: told %v, want once", got)
	}
	s.Save()
	r.Touch(k, a2, t0.Add(6200*time.Millisecond)) // NAT rebinding: at once
	s.SetUser("")                                 // unchanged
	s.SetUser("alice")
	s.SetUser("alice")
	s.SetClass("meters", nil)
	if got := log.take(); len(got) != 3 {
		t.Fatalf("address, user and class changes: told %v, want 3 times", got)
	}
	if v, _ := s.Save(); v.Peer != a2 || v.User != "alice" || v.Class != "meters" {
		t.Fatalf("Save after the changes: %+v", v)
	}
	r.End(s, EndDisconnected)
	if got := log.take(); len(got) != 1 {
		t.Fatalf("End: told %v, want once", got)
	}
	if _, live := s.Save(); live {
		t.Fatal("an ended session saved as live")
	}
	// Lost in Expire: told after the lost callback (the will) ran.
	s2, _ := r.Touch(k, a1, t0.Add(10*time.Second))
	s2.Save()
	log.take()
	var order []string
	r.Expire(t0.Add(20*time.Second), func(s *Session) {
		order = append(order, "will")
		if got := log.take(); len(got) != 0 {
			t.Errorf("told before the will: %v", got)
		}
	})
	if got := log.take(); len(order) != 1 || len(got) != 1 {
		t.Fatalf("lost: wills %v, told %v", order, got)
	}
	if _, live := s2.Save(); live {
		t.Fatal("a lost session saved as live")
	}
}

// TestSaverNeverToldWithoutKeepalive: a session that is never lost needs no
// last-seen time kept fresh; only its changes are told.
func TestSaverNeverToldWithoutKeepalive(t *testing.T) {
	var log saverLog
	r := New(Options{})
	r.AddListener("udp", Listener{Protocol: "udp", Saver: &log})
	s, _ := r.Touch(Key{"udp", "d"}, a1, t0)
	s.Save()
	log.take()
	for i := range 100 {
		r.Touch(Key{"udp", "d"}, a1, t0.Add(time.Duration(i)*time.Hour))
	}
	if got := log.take(); len(got) != 0 {
		t.Fatalf("traffic of a session without keepalive: told %v", got)
	}
}

// TestRestore: a restored session is the device's live session, as saved,
// without the Created hook (no second birth); the device's next datagram
// continues it. Expire right after loses one whose keepalive ran out while
// the gateway was down.
func TestRestore(t *testing.T) {
	var log saverLog
	created, restored := 0, 0
	r := New(Options{Created: func(*Session) { created++ }, Restored: func(*Session) { restored++ }})
	r.AddListener("coap", Listener{Protocol: "coap", Keepalive: 10 * time.Second, Saver: &log})
	now := t0.Add(time.Hour)
	alive := r.Restore(Key{"coap", "alive"}, Saved{Peer: a1, Created: t0, LastSeen: now.Add(-5 * time.Second), Class: "c", User: "u"})
	gone := r.Restore(Key{"coap", "gone"}, Saved{Peer: a2, Created: t0, LastSeen: now.Add(-16 * time.Second)})
	if alive == nil || gone == nil || created != 0 || restored != 2 {
		t.Fatalf("Restore: %v %v, Created hook called %d times, Restored %d, want 0 and 2", alive, gone, created, restored)
	}
	if r.Restore(Key{"coap", "alive"}, Saved{}) != nil {
		t.Fatal("Restore replaced a session")
	}
	in := alive.Info()
	if in.Protocol != "coap" || in.Addr != a1.Addr || !in.FirstSeen.Equal(t0) || in.Class != "c" || in.User != "u" || alive.Keepalive() != 10*time.Second {
		t.Fatalf("restored session: %+v keepalive %v", in, alive.Keepalive())
	}
	if r.ByPeer("coap", a1) != alive || r.Lookup(Key{"coap", "alive"}) != alive {
		t.Fatal("a restored session is not indexed")
	}
	var lost []string
	r.Expire(now, func(s *Session) { lost = append(lost, s.Key.Device) })
	if len(lost) != 1 || lost[0] != "gone" || r.Lookup(Key{"coap", "gone"}) != nil {
		t.Fatalf("Expire after the restore lost %v, want [gone]", lost)
	}
	if got := log.take(); len(got) != 1 || got[0] != "gone" {
		t.Fatalf("Saver told %v, want [gone] (its copy goes)", got)
	}
	s, isNew := r.Touch(Key{"coap", "alive"}, a1, now.Add(time.Second))
	if isNew || s != alive || created != 0 {
		t.Fatalf("the device's datagram after the restore: new=%v same=%v Created %d", isNew, s == alive, created)
	}
	if _, isNew := r.Touch(Key{"coap", "gone"}, a2, now.Add(time.Second)); !isNew || created != 1 {
		t.Fatalf("a device lost while the gateway was down comes back: new=%v Created %d", isNew, created)
	}
	// A lost session is replaced by a restored one (another instance of a
	// fleet served the device since), without a birth.
	k := Key{"coap", "moved"}
	old := r.Restore(k, Saved{Peer: a1, Created: t0, LastSeen: now.Add(-time.Minute)})
	r.Expire(now, func(*Session) {})
	if back := r.Restore(k, Saved{Peer: a1, Created: t0, LastSeen: now}); back == nil || back == old || created != 1 || restored != 4 {
		t.Fatalf("Restore over a lost session: %v (lost one %v), Created %d, Restored %d", back, old, created, restored)
	}
}
