package session

import (
	"net/netip"
	"testing"
	"time"
)

func TestTouchCreatesAndMovesAddress(t *testing.T) {
	tb := NewTable()
	k := Key{"coap", "dev1"}
	t0 := time.Unix(1000, 0)
	a1 := netip.MustParseAddrPort("127.0.0.1:4000")
	a2 := netip.MustParseAddrPort("127.0.0.1:4001")
	s, created := tb.Touch(k, a1, t0)
	if !created || s.Addr() != a1 {
		t.Fatalf("first touch: created=%v addr=%v", created, s.Addr())
	}
	s2, created := tb.Touch(k, a2, t0.Add(time.Second))
	if created || s2 != s || s.Addr() != a2 || !s.LastSeen().Equal(t0.Add(time.Second)) {
		t.Fatalf("second touch: created=%v same=%v addr=%v", created, s2 == s, s.Addr())
	}
	if tb.Len() != 1 {
		t.Fatalf("Len = %d", tb.Len())
	}
}

func TestExpireAfterOneAndAHalfKeepalives(t *testing.T) {
	tb := NewTable()
	t0 := time.Unix(1000, 0)
	addr := netip.MustParseAddrPort("127.0.0.1:4000")
	s, _ := tb.Touch(Key{"sn", "a"}, addr, t0)
	s.SetKeepalive(10 * time.Second)
	s.SetWill(&Will{Topic: "w", Payload: []byte("gone")})
	forever, _ := tb.Touch(Key{"sn", "b"}, addr, t0) // keepalive 0: never expires
	_ = forever
	if lost := tb.Expire(t0.Add(15 * time.Second)); len(lost) != 0 {
		t.Fatalf("expired at exactly 1.5 keepalives: %v", lost)
	}
	lost := tb.Expire(t0.Add(15*time.Second + time.Millisecond))
	if len(lost) != 1 || lost[0] != s || lost[0].Will().Topic != "w" {
		t.Fatalf("want session a lost with its will, got %v", lost)
	}
	if tb.Get(Key{"sn", "a"}) != nil || tb.Get(Key{"sn", "b"}) == nil {
		t.Fatal("expired session still present, or the other one gone")
	}
	if tb.Delete(Key{"sn", "b"}) == nil || tb.Len() != 0 {
		t.Fatal("Delete")
	}
}
