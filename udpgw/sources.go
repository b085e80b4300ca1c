package udpgw

import (
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/mqttgw/mqttgw/metrics"
)

// ErrHeld means a datagram was not sent: its destination has not proven its
// address and the datagram is beyond its anti-amplification budget (Sources).
var ErrHeld = errors.New("held: the destination has not proven its address and the datagram exceeds its budget")

// Sources is one listener's table of the source addresses it hears from, for
// what a spoofed source address could abuse: reflection and state.
//
// A source is proven once it echoed a value only the gateway chose and sent to
// it (an RFC 9175 Echo, the Message ID of a Confirmable message, a DTLS cookie):
// it receives at that address. Until then it is unproven, and:
//
//   - anti-amplification: the gateway sends it at most Factor times the bytes it
//     received from it (RFC 9000 §8.1, RFC 9175 §2.4 item 3); Spend says whether
//     a datagram fits, and what does not is counted as held;
//   - rate limit: its datagrams are admitted at Rate per second (bursts of
//     Burst), before the engine creates any state for it (Received);
//   - its state is small (an entry with the engine's T), bounded (MaxUnproven:
//     the least recently heard is evicted to make room) and short-lived
//     (UnprovenTTL after its last datagram).
//
// A proof lasts ProvenTTL after the source was last checked or proven; at most
// MaxProven proofs are kept (an arbitrary one is forgotten beyond: that source
// proves itself again). Sources whose protocol has no way to prove anything
// (plain datagrams) stay unproven: they live on their budget alone.
//
// T is the engine's own per-source state for unproven sources (for CoAP: the
// last Message ID, for deduplication without a connection); it is reached only
// under the table's lock, through the callbacks of Received and Unproven.
//
// All methods are safe for concurrent use and never block on anything but the
// table's one mutex; none does I/O. The table starts no goroutine: expiry is
// lazy, done as the table is used.
type Sources[T any] struct {
	o SourcesOptions

	heldBytes, held, limited, evicted, proofs *metrics.Counter

	mu       sync.Mutex // guards the fields below
	unproven map[netip.AddrPort]*source[T]
	head     *source[T]               // least recently heard unproven source
	tail     *source[T]               // most recently heard
	proven   map[netip.AddrPort]int64 // proven source → expiry (Unix ns)
}

// SourcesOptions configure a Sources table; zero values take the defaults
// named beside them.
type SourcesOptions struct {
	// Factor (3) bounds what an unproven source is sent: Factor × what it sent.
	Factor int
	// MaxCredit (Factor × 64 KiB) bounds the unspent budget a source may bank.
	MaxCredit int
	// MaxUnproven (10000) bounds the unproven sources remembered.
	MaxUnproven int
	// UnprovenTTL (10 s) is how long an unproven source is remembered after its
	// last datagram; its budget and rate state go with it.
	UnprovenTTL time.Duration
	// MaxProven (131072) bounds the proofs remembered.
	MaxProven int
	// ProvenTTL (24 h) is how long a proof lasts after its source was last
	// checked (IsProven) or proven.
	ProvenTTL time.Duration
	// Rate is the datagrams per second admitted from one unproven source, with
	// bursts of Burst (default 2 × Rate, at least 1); 0: no limit.
	Rate  float64
	Burst int

	// Metrics and Listener name the series the table counts into:
	// mqttgw_amplification_held_bytes_total, mqttgw_amplification_held_total,
	// mqttgw_source_rate_limited_total, mqttgw_unproven_evicted_total,
	// mqttgw_sources_proven_total, and the gauges mqttgw_unproven_sources and
	// mqttgw_proven_sources, each labelled listener.
	Metrics  *metrics.Registry
	Listener string
}

// source is one unproven source: its budget, its rate state and the engine's T.
type source[T any] struct {
	addr       netip.AddrPort
	prev, next *source[T] // the recency list, least recent first
	last       int64      // when its last datagram came (Unix ns)
	credit     int32      // bytes it may still be sent
	tokens     float32    // rate limit bucket
	state      T
}

// Verdict is what Received decided about a datagram.
type Verdict uint8

const (
	// Proven: the source is proven; nothing was recorded.
	Proven Verdict = iota
	// Admitted: an unproven source's datagram, within its rate.
	Admitted
	// RateLimited: an unproven source above its rate: drop the datagram.
	RateLimited
)

// NewSources returns an empty table.
func NewSources[T any](o SourcesOptions) *Sources[T] {
	if o.Factor <= 0 {
		o.Factor = 3
	}
	if o.MaxCredit <= 0 {
		o.MaxCredit = o.Factor * 64 << 10
	}
	if o.MaxUnproven <= 0 {
		o.MaxUnproven = 10000
	}
	if o.UnprovenTTL <= 0 {
		o.UnprovenTTL = 10 * time.Second
	}
	if o.MaxProven <= 0 {
		o.MaxProven = 1 << 17
	}
	if o.ProvenTTL <= 0 {
		o.ProvenTTL = 24 * time.Hour
	}
	if o.Rate > 0 && o.Burst <= 0 {
		o.Burst = max(1, int(2*o.Rate))
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New()
	}
	s := &Sources[T]{o: o, unproven: map[netip.AddrPort]*source[T]{}, proven: map[netip.AddrPort]int64{}}
	m, l := o.Metrics, o.Listener
	s.heldBytes = m.Counter("mqttgw_amplification_held_bytes_total", "Bytes not sent to a source that has not proven its address: beyond its anti-amplification budget (3 × what it sent).", "listener", l)
	s.held = m.Counter("mqttgw_amplification_held_total", "Datagrams not sent to a source that has not proven its address: beyond its anti-amplification budget.", "listener", l)
	s.limited = m.Counter("mqttgw_source_rate_limited_total", "Datagrams dropped from a source that has not proven its address: above its rate limit.", "listener", l)
	s.evicted = m.Counter("mqttgw_unproven_evicted_total", "Unproven sources forgotten to make room for a new one (the table was full).", "listener", l)
	s.proofs = m.Counter("mqttgw_sources_proven_total", "Sources that proved their address (an echoed value only the gateway chose).", "listener", l)
	m.GaugeFunc("mqttgw_unproven_sources", "Sources remembered that have not proven their address.", func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(len(s.unproven))
	}, "listener", l)
	m.GaugeFunc("mqttgw_proven_sources", "Sources whose proof of address is remembered.", func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(len(s.proven))
	}, "listener", l)
	return s
}

// Received records an n-byte datagram from a source before the engine does
// anything with it. A proven source's datagram is Proven and nothing is kept.
// Otherwise the source's entry is made or refreshed (evicting the least
// recently heard one when MaxUnproven are kept), its budget grows by Factor ×
// n, and its rate is checked: RateLimited means drop the datagram (counted).
// fn, when set, runs on the source's T under the table's lock, whatever the
// verdict (not for a proven source): it must be quick and must not call back
// into the table.
func (s *Sources[T]) Received(from netip.AddrPort, n int, now time.Time, fn func(*T)) Verdict {
	t := now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.provenLocked(from, t) {
		return Proven
	}
	e := s.unproven[from]
	if e != nil && t-e.last > int64(s.o.UnprovenTTL) {
		s.removeLocked(e) // expired: start afresh
		e = nil
	}
	if e == nil {
		s.expireLocked(t)
		if len(s.unproven) >= s.o.MaxUnproven {
			s.removeLocked(s.head)
			s.evicted.Inc()
		}
		e = &source[T]{addr: from, last: t, tokens: float32(s.o.Burst)}
		s.unproven[from] = e
	} else {
		s.unlinkLocked(e)
	}
	s.linkLocked(e)
	if s.o.Rate > 0 {
		e.tokens = min(float32(s.o.Burst), e.tokens+float32(float64(t-e.last)/1e9*s.o.Rate))
	}
	e.last = t
	e.credit = int32(min(int64(s.o.MaxCredit), int64(e.credit)+int64(s.o.Factor)*int64(n)))
	if fn != nil {
		fn(&e.state)
	}
	if s.o.Rate > 0 {
		if e.tokens < 1 {
			s.limited.Inc()
			return RateLimited
		}
		e.tokens--
	}
	return Admitted
}

// Spend reports whether an n-byte datagram may be sent to a source, and
// takes it from the budget when it is unproven. A datagram to an unproven
// source beyond its budget, or to one the table does not remember (or
// remembers no more), is held: Spend counts it and returns false.
func (s *Sources[T]) Spend(to netip.AddrPort, n int, now time.Time) bool {
	t := now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.provenLocked(to, t) {
		return true
	}
	if e := s.unproven[to]; e != nil && t-e.last <= int64(s.o.UnprovenTTL) && int(e.credit) >= n {
		e.credit -= int32(n)
		return true
	}
	s.held.Inc()
	s.heldBytes.Add(uint64(n))
	return false
}

// Hold counts an n-byte datagram the engine did not send to an unproven
// source for a reason of its own (it would have needed more than the budget
// allows later on, such as a block-wise transfer).
func (s *Sources[T]) Hold(n int) {
	s.held.Inc()
	s.heldBytes.Add(uint64(n))
}

// Prove records that a source proved its address. Its unproven entry stays
// until it expires, so that the engine may still read its T (Unproven).
func (s *Sources[T]) Prove(addr netip.AddrPort, now time.Time) {
	t := now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.proven[addr]; !ok {
		s.proofs.Inc()
		if len(s.proven) >= s.o.MaxProven {
			for a, exp := range s.proven {
				if exp < t {
					delete(s.proven, a)
				}
			}
			for a := range s.proven { // still full: forget any one
				if len(s.proven) < s.o.MaxProven {
					break
				}
				delete(s.proven, a)
			}
		}
	}
	s.proven[addr] = t + int64(s.o.ProvenTTL)
}

// IsProven reports whether a source has proven its address, and extends the
// proof by ProvenTTL when it has.
func (s *Sources[T]) IsProven(addr netip.AddrPort, now time.Time) bool {
	t := now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.provenLocked(addr, t)
}

// Unproven runs fn on an unproven source's T under the table's lock, when the
// table still remembers the source; it reports whether it did. The same rules
// as for Received's fn apply.
func (s *Sources[T]) Unproven(addr netip.AddrPort, now time.Time, fn func(*T)) bool {
	t := now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.unproven[addr]
	if e == nil || t-e.last > int64(s.o.UnprovenTTL) {
		return false
	}
	fn(&e.state)
	return true
}

// Forget drops what the table knows of a source: its proof and its entry.
func (s *Sources[T]) Forget(addr netip.AddrPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.proven, addr)
	if e := s.unproven[addr]; e != nil {
		s.removeLocked(e)
	}
}

// Expire forgets every unproven source silent for longer than UnprovenTTL and
// every proof past its expiry. The table also expires entries as it is used;
// an engine with a periodic driver calls Expire from it so that a quiet table
// shrinks too.
func (s *Sources[T]) Expire(now time.Time) {
	t := now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.head != nil && t-s.head.last > int64(s.o.UnprovenTTL) {
		s.removeLocked(s.head)
	}
	for a, exp := range s.proven {
		if exp < t {
			delete(s.proven, a)
		}
	}
}

// Len returns how many proven and unproven sources the table holds.
func (s *Sources[T]) Len() (proven, unproven int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.proven), len(s.unproven)
}

func (s *Sources[T]) provenLocked(addr netip.AddrPort, t int64) bool {
	exp, ok := s.proven[addr]
	if !ok {
		return false
	}
	if exp < t {
		delete(s.proven, addr)
		return false
	}
	s.proven[addr] = t + int64(s.o.ProvenTTL)
	return true
}

// expireLocked forgets the unproven sources silent for longer than
// UnprovenTTL: the least recently heard come first, so it stops at the first
// live one. It removes a few at a time, so that no datagram pays for many.
func (s *Sources[T]) expireLocked(t int64) {
	for i := 0; i < 8 && s.head != nil && t-s.head.last > int64(s.o.UnprovenTTL); i++ {
		s.removeLocked(s.head)
	}
}

func (s *Sources[T]) removeLocked(e *source[T]) {
	s.unlinkLocked(e)
	delete(s.unproven, e.addr)
}

func (s *Sources[T]) linkLocked(e *source[T]) {
	e.prev, e.next = s.tail, nil
	if s.tail != nil {
		s.tail.next = e
	} else {
		s.head = e
	}
	s.tail = e
}

func (s *Sources[T]) unlinkLocked(e *source[T]) {
	if e.prev != nil {
		e.prev.next = e.next
	} else if s.head == e {
		s.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else if s.tail == e {
		s.tail = e.prev
	}
	e.prev, e.next = nil, nil
}
