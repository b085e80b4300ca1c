package auth

import (
	"container/list"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// FailureLimiter limits failed authentications per source address with a token
// bucket each: a source may fail burst times in a row, then once more every per.
// While a source has used its budget, Allow says no, and the caller refuses it
// without checking its credentials (which also spares the PBKDF2 work).
//
// Memory is bounded: at most maxSources addresses are remembered. Each Fail
// first forgets, least recently failed first, the sources whose buckets are
// full again; when the table is still full, it forgets the source that failed
// least recently to make room. So a flood of spoofed addresses costs no memory
// beyond the bound and O(1) time per call (amortized); at worst it makes the
// limiter forget a real attacker, who then starts with a whole budget again.
//
// Time is an argument (now), so tests need no clock. Addresses are compared
// without zone, and an IPv4-mapped IPv6 address is its IPv4 address.
//
// A FailureLimiter is safe for concurrent use and starts no goroutines; a nil
// *FailureLimiter allows everything.
type FailureLimiter struct {
	burst int
	per   time.Duration

	// mu guards sources and order; no other lock is taken under it.
	mu      sync.Mutex
	sources map[netip.Addr]*list.Element // value *failures
	order   *list.List                   // least recently failed first
	max     int
}

// failures is one source's bucket, kept as the time it will be full again
// (GCRA): each failure moves full by per; the budget is used up while full is
// more than (burst-1)*per away.
type failures struct {
	addr netip.Addr
	full time.Time
}

// NewFailureLimiter returns a limiter letting each source fail burst times in a
// row, then once more every per, remembering at most maxSources sources. It
// panics unless burst, per and maxSources are positive (configuration checks
// them first).
func NewFailureLimiter(burst int, per time.Duration, maxSources int) *FailureLimiter {
	if burst < 1 || per <= 0 || maxSources < 1 {
		panic(fmt.Sprintf("auth: NewFailureLimiter(%d, %v, %d): each must be positive", burst, per, maxSources))
	}
	return &FailureLimiter{
		burst:   burst,
		per:     per,
		sources: make(map[netip.Addr]*list.Element),
		order:   list.New(),
		max:     maxSources,
	}
}

// Allow reports whether a may try to authenticate at now: false while a has no
// failures left in its budget.
func (l *FailureLimiter) Allow(a netip.Addr, now time.Time) bool {
	if l == nil {
		return true
	}
	a = sourceKey(a)
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.sources[a]
	if !ok {
		return true
	}
	return l.allowed(e.Value.(*failures), now)
}

// allowed reports whether f has a failure left at now.
func (l *FailureLimiter) allowed(f *failures, now time.Time) bool {
	return f.full.Sub(now) <= time.Duration(l.burst-1)*l.per
}

// Fail records a failed authentication from a at now. Failing while the budget
// is used up does not push the next allowed try further out: a source waits at
// most per for its next try.
func (l *FailureLimiter) Fail(a netip.Addr, now time.Time) {
	if l == nil {
		return
	}
	a = sourceKey(a)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.forgetIdle(now)
	e, ok := l.sources[a]
	if !ok {
		for len(l.sources) >= l.max {
			l.forget(l.order.Front())
		}
		e = l.order.PushBack(&failures{addr: a, full: now})
		l.sources[a] = e
	}
	f := e.Value.(*failures)
	if f.full.Before(now) {
		f.full = now
	}
	f.full = f.full.Add(l.per)
	if limit := now.Add(time.Duration(l.burst) * l.per); f.full.After(limit) {
		f.full = limit
	}
	l.order.MoveToBack(e)
}

// forgetIdle forgets the least recently failed sources whose buckets are full
// again at now; they are the likeliest to be.
func (l *FailureLimiter) forgetIdle(now time.Time) {
	for e := l.order.Front(); e != nil; e = l.order.Front() {
		if e.Value.(*failures).full.After(now) {
			return
		}
		l.forget(e)
	}
}

func (l *FailureLimiter) forget(e *list.Element) {
	delete(l.sources, e.Value.(*failures).addr)
	l.order.Remove(e)
}

// Len counts the sources remembered.
func (l *FailureLimiter) Len() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sources)
}

// sourceKey is a as the limiter compares it: IPv4-mapped IPv6 as IPv4, no zone.
func sourceKey(a netip.Addr) netip.Addr {
	return a.Unmap().WithZone("")
}
