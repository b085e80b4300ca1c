package udpgw

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/metrics"
)

func ap(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 5683)
}

// TestSourcesBudget: an unproven source is sent at most 3× what it sent; what
// does not fit is held and counted; a proof lifts the limit.
func TestSourcesBudget(t *testing.T) {
	m := metrics.New()
	s := NewSources[struct{}](SourcesOptions{Metrics: m, Listener: "t"})
	now := time.Unix(1000, 0)
	a := ap(1)
	if s.Spend(a, 1, now) {
		t.Fatal("a source never heard from may be sent to")
	}
	if v := s.Received(a, 20, now, nil); v != Admitted {
		t.Fatalf("Received = %v, want Admitted", v)
	}
	if !s.Spend(a, 50, now) || !s.Spend(a, 10, now) {
		t.Fatal("60 bytes refused after 20 received")
	}
	if s.Spend(a, 1, now) {
		t.Fatal("a 61st byte allowed after 20 received")
	}
	s.Received(a, 10, now, nil)
	if s.Spend(a, 31, now) || !s.Spend(a, 30, now) {
		t.Fatal("the next 10 bytes received must pay for exactly 30")
	}
	if got := m.Get("mqttgw_amplification_held_bytes_total", "listener", "t"); got != 1+1+31 {
		t.Errorf("held bytes = %v, want 33", got)
	}
	if got := m.Get("mqttgw_amplification_held_total", "listener", "t"); got != 3 {
		t.Errorf("held datagrams = %v, want 3", got)
	}
	s.Prove(a, now)
	if !s.Spend(a, 1<<20, now) || s.Received(a, 1, now, nil) != Proven {
		t.Fatal("a proven source is still limited")
	}
	if got := m.Get("mqttgw_sources_proven_total", "listener", "t"); got != 1 {
		t.Errorf("proofs = %v, want 1", got)
	}
	// A proof lasts ProvenTTL after its last use.
	if !s.IsProven(a, now.Add(23*time.Hour)) || !s.IsProven(a, now.Add(46*time.Hour)) {
		t.Fatal("a proof in use expired")
	}
	if s.IsProven(a, now.Add(71*time.Hour)) {
		t.Fatal("a proof unused for 25 h still holds")
	}
}

// TestSourcesExpiry: an unproven source is forgotten UnprovenTTL after its
// last datagram, with its budget.
func TestSourcesExpiry(t *testing.T) {
	s := NewSources[int](SourcesOptions{UnprovenTTL: 5 * time.Second})
	now := time.Unix(1000, 0)
	s.Received(ap(1), 100, now, func(n *int) { *n = 7 })
	s.Received(ap(2), 100, now.Add(4*time.Second), nil)
	if !s.Spend(ap(1), 10, now.Add(5*time.Second)) {
		t.Fatal("budget gone before the TTL")
	}
	if s.Spend(ap(1), 10, now.Add(5*time.Second+1)) {
		t.Fatal("budget kept after the TTL")
	}
	if s.Unproven(ap(1), now.Add(6*time.Second), func(*int) {}) {
		t.Fatal("state kept after the TTL")
	}
	s.Expire(now.Add(6 * time.Second))
	if _, n := s.Len(); n != 1 {
		t.Fatalf("%d unproven after Expire, want 1", n)
	}
	// A datagram after the TTL starts a fresh entry.
	var seen int
	s.Received(ap(2), 1, now.Add(20*time.Second), func(n *int) { seen = *n; *n = 1 })
	if seen != 0 {
		t.Fatalf("state survived expiry: %d", seen)
	}
}

// TestSourcesEvictOldest: at MaxUnproven the least recently heard source makes
// room; proven sources are not in that count.
func TestSourcesEvictOldest(t *testing.T) {
	m := metrics.New()
	s := NewSources[struct{}](SourcesOptions{MaxUnproven: 3, Metrics: m, Listener: "t"})
	now := time.Unix(1000, 0)
	for i := 1; i <= 3; i++ {
		s.Received(ap(i), 10, now, nil)
	}
	s.Received(ap(1), 10, now.Add(time.Second), nil) // 1 heard again: 2 is the oldest
	s.Prove(ap(9), now)
	s.Received(ap(4), 10, now.Add(time.Second), nil)
	if s.Spend(ap(2), 1, now.Add(time.Second)) {
		t.Error("the least recently heard source was kept")
	}
	for _, i := range []int{1, 3, 4} {
		if !s.Spend(ap(i), 1, now.Add(time.Second)) {
			t.Errorf("source %d evicted", i)
		}
	}
	if got := m.Get("mqttgw_unproven_evicted_total", "listener", "t"); got != 1 {
		t.Errorf("evicted = %v, want 1", got)
	}
	if got := m.Get("mqttgw_unproven_sources", "listener", "t"); got != 3 {
		t.Errorf("unproven gauge = %v, want 3", got)
	}
	if got := m.Get("mqttgw_proven_sources", "listener", "t"); got != 1 {
		t.Errorf("proven gauge = %v, want 1", got)
	}
}

// TestSourcesRateLimit: an unproven source is admitted at Rate per second with
// bursts of Burst; the rest is counted; a proven one is not limited.
func TestSourcesRateLimit(t *testing.T) {
	m := metrics.New()
	s := NewSources[struct{}](SourcesOptions{Rate: 2, Burst: 3, Metrics: m, Listener: "t"})
	now := time.Unix(1000, 0)
	a := ap(1)
	for i := range 3 {
		if v := s.Received(a, 10, now, nil); v != Admitted {
			t.Fatalf("datagram %d of the burst: %v", i, v)
		}
	}
	if v := s.Received(a, 10, now, nil); v != RateLimited {
		t.Fatalf("4th datagram at once: %v, want RateLimited", v)
	}
	if v := s.Received(a, 10, now.Add(500*time.Millisecond), nil); v != Admitted {
		t.Fatalf("after 0.5 s at 2/s: %v, want Admitted", v)
	}
	if got := m.Get("mqttgw_source_rate_limited_total", "listener", "t"); got != 1 {
		t.Errorf("rate limited = %v, want 1", got)
	}
	s.Prove(a, now)
	for range 10 {
		if v := s.Received(a, 10, now, nil); v != Proven {
			t.Fatalf("proven source: %v", v)
		}
	}
}

// TestSourcesMemory measures what one unproven source costs: the figure the
// README quotes.
func TestSourcesMemory(t *testing.T) {
	const n = 20000
	s := NewSources[[40]byte](SourcesOptions{MaxUnproven: n})
	now := time.Unix(1000, 0)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		s.Received(ap(i), 20, now, nil)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.0f bytes per unproven source (with 40 bytes of engine state)", per)
	if per > 400 {
		t.Errorf("%.0f bytes per unproven source, want a few dozen to a few hundred", per)
	}
	runtime.KeepAlive(s)
}

func BenchmarkSourcesReceived(b *testing.B) {
	s := NewSources[struct{}](SourcesOptions{})
	now := time.Unix(1000, 0)
	addrs := make([]netip.AddrPort, 1024)
	for i := range addrs {
		addrs[i] = ap(i)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s.Received(addrs[i%len(addrs)], 20, now, nil)
	}
}

func ExampleSources() {
	s := NewSources[struct{}](SourcesOptions{})
	now := time.Now()
	victim := netip.MustParseAddrPort("192.0.2.7:5683")
	s.Received(victim, 20, now, nil)      // a 20-byte request, maybe spoofed
	fmt.Println(s.Spend(victim, 61, now)) // a 61-byte answer: beyond 3 × 20
	fmt.Println(s.Spend(victim, 60, now))
	// Output:
	// false
	// true
}
