package session

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

var (
	t0 = time.Unix(1000, 0)
	a1 = Peer{Addr: netip.MustParseAddrPort("127.0.0.1:4000")}
	a2 = Peer{Addr: netip.MustParseAddrPort("127.0.0.1:4001")}
)

type ownerFunc func(*Session, EndReason)

func (f ownerFunc) SessionEnded(s *Session, why EndReason) { f(s, why) }

func TestTouchCreatesMovesAddressAndLookupNeverCreates(t *testing.T) {
	r := New(Options{})
	r.AddListener("coap", Listener{Protocol: "coap", Keepalive: time.Minute})
	k := Key{"coap", "dev1"}
	if r.Lookup(k) != nil || r.Len() != 0 {
		t.Fatal("Lookup created a session")
	}
	s, created := r.Touch(k, a1, t0)
	if !created || s.Addr() != a1.Addr || s.Protocol != "coap" || s.Keepalive() != time.Minute {
		t.Fatalf("first touch: created=%v addr=%v proto=%q keepalive=%v", created, s.Addr(), s.Protocol, s.Keepalive())
	}
	if r.ByPeer("coap", a1) != s {
		t.Fatal("address index: no session at a1")
	}
	s2, created := r.Touch(k, a2, t0.Add(time.Second))
	if created || s2 != s || s.Addr() != a2.Addr || !s.LastSeen().Equal(t0.Add(time.Second)) {
		t.Fatalf("second touch: created=%v same=%v addr=%v", created, s2 == s, s.Addr())
	}
	if r.ByPeer("coap", a1) != nil || r.ByPeer("coap", a2) != s || r.ByPeer("other", a2) != nil {
		t.Fatal("NAT rebinding did not move the address index")
	}
	if r.Lookup(k) != s || r.Len() != 1 {
		t.Fatalf("Lookup/Len after rebinding")
	}
}

func TestExpireMarksLostOnceCallsOwnerAndReplacesOnReturn(t *testing.T) {
	var ended []string
	r := New(Options{LostRetention: time.Minute, Created: func(s *Session) { s.SetClass("meters", &Message{Topic: "w/" + s.Key.Device}) }})
	r.AddListener("sn", Listener{Protocol: "mqttsn", Owner: ownerFunc(func(s *Session, why EndReason) {
		ended = append(ended, s.Key.Device+":"+why.String())
	})})
	s, _ := r.Touch(Key{"sn", "a"}, a1, t0)
	s.SetKeepalive(10 * time.Second)
	r.Touch(Key{"sn", "b"}, a2, t0) // keepalive 0: never lost
	var wills []string
	lost := func(s *Session) {
		w, own := s.Will()
		wills = append(wills, fmt.Sprintf("%s own=%v", w.Topic, own))
	}
	r.Expire(t0.Add(15*time.Second), lost)
	if len(wills) != 0 {
		t.Fatalf("lost at exactly 1.5 keepalives: %v", wills)
	}
	r.Expire(t0.Add(15*time.Second+time.Millisecond), lost)
	r.Expire(t0.Add(16*time.Second), lost) // reported once only
	if fmt.Sprint(wills) != "[w/a own=false]" || fmt.Sprint(ended) != "[a:lost]" {
		t.Fatalf("wills %v, owner calls %v", wills, ended)
	}
	if s.State() != StateLost || s.Live() || r.Lookup(Key{"sn", "a"}) != nil || r.ByPeer("sn", a1) != nil {
		t.Fatal("a lost session is still live")
	}
	if r.Len() != 2 || r.Ended(EndLost) != 1 {
		t.Fatalf("lost session not kept for listing: Len=%d", r.Len())
	}
	// It speaks again: a new session (birth again), not the lost one revived.
	s2, created := r.Touch(Key{"sn", "a"}, a1, t0.Add(20*time.Second))
	if !created || s2 == s || s2.State() != StateActive || s2.Class() != "meters" {
		t.Fatalf("come back: created=%v same=%v state=%v", created, s2 == s, s2.State())
	}
	// The device's own will wins over its class's.
	s2.SetWill(&Message{Topic: "mine"})
	if w, own := s2.Will(); w.Topic != "mine" || !own {
		t.Fatalf("own will: %v %v", w, own)
	}
	s2.SetWill(&Message{Payload: []byte("msg before topic")})
	if w, own := s2.Will(); w.Topic != "w/a" || own {
		t.Fatalf("a will without topic must fall back to the class: %v %v", w, own)
	}
}

func TestLostSessionForgottenAfterRetention(t *testing.T) {
	r := New(Options{LostRetention: time.Minute})
	s, _ := r.Touch(Key{"u", "a"}, a1, t0)
	s.SetKeepalive(time.Second)
	r.Expire(t0.Add(2*time.Second), nil)
	if r.Len() != 1 {
		t.Fatal("lost session not listed")
	}
	r.Expire(t0.Add(63*time.Second), nil)
	if r.Len() != 0 || r.Ended(EndForgotten) != 1 {
		t.Fatalf("lost session not forgotten: Len=%d", r.Len())
	}
}

func TestEndRemovesWithoutCallback(t *testing.T) {
	called := false
	r := New(Options{})
	r.AddListener("sn", Listener{Owner: ownerFunc(func(*Session, EndReason) { called = true })})
	s, _ := r.Touch(Key{"sn", "a"}, a1, t0)
	if !r.End(s, EndDisconnected) || r.End(s, EndDisconnected) {
		t.Fatal("End must remove once")
	}
	if called || s.Live() || r.ByPeer("sn", a1) != nil || r.Ended(EndDisconnected) != 1 {
		t.Fatal("End called the owner back or left the session indexed")
	}
	// An older session record cannot end a newer one.
	s2, _ := r.Touch(Key{"sn", "a"}, a1, t0)
	if r.End(s, EndTakenOver) || r.Lookup(Key{"sn", "a"}) != s2 {
		t.Fatal("a stale End removed the new session")
	}
}

func TestQueuedDownlinksExpireAndOverflow(t *testing.T) {
	r := New(Options{})
	s, _ := r.Touch(Key{"u", "a"}, a1, t0)
	exp := t0.Add(10 * time.Second)
	for i := range 3 {
		if dropped := s.Enqueue(Queued{Data: []byte{byte(i)}, Expires: exp}, 2); dropped != (i == 2) {
			t.Fatalf("enqueue %d: dropped=%v", i, dropped)
		}
	}
	due, expired := s.TakeQueued(t0.Add(time.Second))
	if fmt.Sprint(due) != "[[1] [2]]" || expired != 0 || s.QueuedLen() != 0 {
		t.Fatalf("due %v expired %d", due, expired)
	}
	s.Enqueue(Queued{Data: []byte{9}, Expires: exp}, 2)
	if n := r.Expire(exp.Add(time.Millisecond), nil); n != 1 || s.QueuedLen() != 0 {
		t.Fatalf("driver expired %d queued downlinks, %d left", n, s.QueuedLen())
	}
}

func TestStateNamesRoundTrip(t *testing.T) {
	for _, st := range []State{StateActive, StateAsleep, StateLost} {
		if got, ok := ParseState(st.String()); !ok || got != st {
			t.Errorf("ParseState(%q) = %v, %v", st, got, ok)
		}
	}
	if _, ok := ParseState("nope"); ok {
		t.Error("ParseState accepted an unknown name")
	}
}

// BenchmarkIdleSessions holds 100 000 idle plain-UDP sessions and reports the
// heap each costs (goal: at most 1 KiB) and the cost of one driver pass over
// them (expire-ns/session) when none is due.
func BenchmarkIdleSessions(b *testing.B) {
	const n = 100_000
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		r := New(Options{})
		r.AddListener("sensors", Listener{Protocol: "udp", Keepalive: 5 * time.Minute})
		for i := range n {
			p := Peer{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 40000)}
			r.Touch(Key{"sensors", fmt.Sprintf("meter-%06d", i)}, p, t0)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		start := time.Now()
		r.Expire(t0.Add(time.Minute), nil)
		pass := time.Since(start)
		if r.Len() != n {
			b.Fatalf("Len = %d", r.Len())
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/session")
		b.ReportMetric(float64(pass.Nanoseconds())/n, "expire-ns/session")
		runtime.KeepAlive(r)
	}
}

func TestRefreshNeverCreates(t *testing.T) {
	r := New(Options{})
	s, _ := r.Touch(Key{"sn", "a"}, a1, t0)
	if !r.Refresh(s, a2, t0.Add(time.Second)) || r.ByPeer("sn", a2) != s || !s.LastSeen().Equal(t0.Add(time.Second)) {
		t.Fatal("Refresh of a live session")
	}
	r.End(s, EndDisconnected)
	if r.Refresh(s, a1, t0.Add(2*time.Second)) || r.Len() != 0 {
		t.Fatal("Refresh revived or created an ended session")
	}
}

// BenchmarkTouchExisting is the registry's cost on the hot path: one datagram
// from a known device (shard lookup, liveness, no address change), from every
// core at once.
func BenchmarkTouchExisting(b *testing.B) {
	r := New(Options{})
	const n = 10_000
	keys := make([]Key, n)
	for i := range keys {
		keys[i] = Key{"sensors", fmt.Sprintf("meter-%06d", i)}
		r.Touch(keys[i], a1, t0)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			r.Touch(keys[i%n], a1, t0)
			i++
		}
	})
}
