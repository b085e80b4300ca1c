package auth

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// limitStep is one call on a FailureLimiter at t0+at: Fail, Allow (want is
// its answer) or Len (n is its answer).
type limitStep struct {
	at   time.Duration
	op   string // "fail", "allow", "len"
	addr string
	want bool
	n    int
}

func failAt(at time.Duration, addr string) limitStep {
	return limitStep{at: at, op: "fail", addr: addr}
}
func allowAt(at time.Duration, addr string, want bool) limitStep {
	return limitStep{at: at, op: "allow", addr: addr, want: want}
}
func lenAt(at time.Duration, n int) limitStep { return limitStep{at: at, op: "len", n: n} }

func TestFailureLimiter(t *testing.T) {
	const s = time.Second
	tests := []struct {
		name              string
		burst, maxSources int
		per               time.Duration
		steps             []limitStep
	}{{
		// A source never seen may try; asking takes no memory.
		name: "unknown source", burst: 3, per: 10 * s, maxSources: 10,
		steps: []limitStep{allowAt(0, "192.0.2.1", true), lenAt(0, 0)},
	}, {
		// burst failures in a row use the budget up; one more comes back
		// every per.
		name: "burst then one per period", burst: 3, per: 10 * s, maxSources: 10,
		steps: []limitStep{
			failAt(0, "192.0.2.1"), allowAt(0, "192.0.2.1", true),
			failAt(0, "192.0.2.1"), allowAt(0, "192.0.2.1", true),
			failAt(0, "192.0.2.1"), allowAt(0, "192.0.2.1", false),
			allowAt(9*s, "192.0.2.1", false),
			allowAt(10*s, "192.0.2.1", true),
			failAt(10*s, "192.0.2.1"), allowAt(10*s, "192.0.2.1", false),
			allowAt(19*s, "192.0.2.1", false),
			allowAt(20*s, "192.0.2.1", true),
			// After burst*per without failures the budget is whole again.
			allowAt(40*s, "192.0.2.1", true),
			failAt(40*s, "192.0.2.1"), failAt(40*s, "192.0.2.1"), allowAt(40*s, "192.0.2.1", true),
		},
	}, {
		// Failures spread out slower than the refill never block.
		name: "slow failures pass", burst: 1, per: 10 * s, maxSources: 10,
		steps: []limitStep{
			failAt(0, "192.0.2.1"), allowAt(0, "192.0.2.1", false),
			allowAt(10*s, "192.0.2.1", true), failAt(10*s, "192.0.2.1"),
			allowAt(20*s, "192.0.2.1", true), failAt(20*s, "192.0.2.1"),
			allowAt(30*s, "192.0.2.1", true),
		},
	}, {
		// Failing on while blocked does not push the next try further out.
		name: "no debt beyond the burst", burst: 2, per: 10 * s, maxSources: 10,
		steps: []limitStep{
			failAt(0, "192.0.2.1"), failAt(0, "192.0.2.1"), failAt(0, "192.0.2.1"), failAt(s, "192.0.2.1"),
			failAt(2*s, "192.0.2.1"), allowAt(2*s, "192.0.2.1", false),
			allowAt(12*s, "192.0.2.1", true),
		},
	}, {
		// Each source has its own budget.
		name: "sources are independent", burst: 1, per: 10 * s, maxSources: 10,
		steps: []limitStep{
			failAt(0, "192.0.2.1"), allowAt(0, "192.0.2.1", false),
			allowAt(0, "192.0.2.2", true), allowAt(0, "2001:db8::1", true),
			failAt(0, "2001:db8::1"), allowAt(0, "2001:db8::1", false), allowAt(0, "2001:db8::2", true),
			lenAt(0, 2),
		},
	}, {
		// An IPv4-mapped IPv6 address is its IPv4 address; a zone does
		// not make another source.
		name: "mapped and zoned addresses", burst: 1, per: 10 * s, maxSources: 10,
		steps: []limitStep{
			failAt(0, "::ffff:192.0.2.1"), allowAt(0, "192.0.2.1", false),
			failAt(0, "fe80::1%eth0"), allowAt(0, "fe80::1", false), allowAt(0, "fe80::1%eth1", false),
			lenAt(0, 2),
		},
	}, {
		// A source whose budget is whole again is forgotten at the next
		// failure.
		name: "idle sources are forgotten", burst: 2, per: 10 * s, maxSources: 10,
		steps: []limitStep{
			failAt(0, "192.0.2.1"), failAt(5*s, "192.0.2.2"), lenAt(5*s, 2),
			failAt(12*s, "192.0.2.3"), lenAt(12*s, 2), // .1 was whole at 10s
			failAt(100*s, "192.0.2.4"), lenAt(100*s, 1),
		},
	}, {
		// A full table forgets the source that failed least recently.
		name: "full table forgets the oldest", burst: 1, per: 100 * s, maxSources: 2,
		steps: []limitStep{
			failAt(0, "192.0.2.1"), failAt(s, "192.0.2.2"), failAt(2*s, "192.0.2.1"), // .1 failed last
			failAt(3*s, "192.0.2.3"), lenAt(3*s, 2),
			allowAt(3*s, "192.0.2.2", true), // forgotten: a whole budget again
			allowAt(3*s, "192.0.2.1", false),
			allowAt(3*s, "192.0.2.3", false),
		},
	}, {
		// An idle source makes room: the one still blocked is kept.
		name: "full table: an idle source makes room", burst: 1, per: 10 * s, maxSources: 2,
		steps: []limitStep{
			failAt(0, "192.0.2.1"), failAt(5*s, "192.0.2.2"),
			failAt(12*s, "192.0.2.3"), lenAt(12*s, 2),
			allowAt(12*s, "192.0.2.2", false), allowAt(12*s, "192.0.2.3", false),
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			l := NewFailureLimiter(tt.burst, tt.per, tt.maxSources)
			for i, st := range tt.steps {
				now := t0.Add(st.at)
				var a netip.Addr
				if st.addr != "" {
					a = netip.MustParseAddr(st.addr)
				}
				switch st.op {
				case "fail":
					l.Fail(a, now)
				case "allow":
					if got := l.Allow(a, now); got != st.want {
						t.Fatalf("step %d: Allow(%s) at +%v = %v, want %v", i, st.addr, st.at, got, st.want)
					}
				case "len":
					if got := l.Len(); got != st.n {
						t.Fatalf("step %d: Len at +%v = %d, want %d", i, st.at, got, st.n)
					}
				}
			}
		})
	}
}

// TestFailureLimiterBounded: a flood of failures from distinct (spoofed)
// addresses never holds more than maxSources, and the latest ones stay
// blocked.
func TestFailureLimiterBounded(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	l := NewFailureLimiter(1, time.Hour, 100)
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	for i := range 100_000 {
		l.Fail(addr(i), now)
		if l.Len() > 100 {
			t.Fatalf("after %d sources, Len = %d", i+1, l.Len())
		}
	}
	if l.Allow(addr(99_999), now) || l.Allow(addr(99_900), now) {
		t.Error("the latest sources are not blocked")
	}
	if !l.Allow(addr(99_899), now) || !l.Allow(addr(0), now) {
		t.Error("the oldest sources are still remembered")
	}
}

func TestFailureLimiterNil(t *testing.T) {
	var l *FailureLimiter
	a := netip.MustParseAddr("192.0.2.1")
	l.Fail(a, time.Now())
	if !l.Allow(a, time.Now()) || l.Len() != 0 {
		t.Error("a nil FailureLimiter limits")
	}
}

func TestNewFailureLimiterPanicsOnNonPositive(t *testing.T) {
	for _, args := range [][3]int{{0, 1, 1}, {1, 0, 1}, {1, 1, 0}, {-1, 1, 1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewFailureLimiter%v did not panic", args)
				}
			}()
			NewFailureLimiter(args[0], time.Duration(args[1]), args[2])
		}()
	}
}

// TestFailureLimiterConcurrentUse runs under -race: goroutines failing and
// asking for overlapping sources.
func TestFailureLimiterConcurrentUse(t *testing.T) {
	l := NewFailureLimiter(5, time.Second, 50)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				a := netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", (g*31+i)%200))
				now := t0.Add(time.Duration(i) * time.Millisecond)
				if l.Allow(a, now) {
					l.Fail(a, now)
				}
			}
		})
	}
	wg.Wait()
	if n := l.Len(); n > 50 {
		t.Errorf("Len = %d, want at most 50", n)
	}
}
