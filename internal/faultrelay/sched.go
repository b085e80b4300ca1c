package faultrelay

import (
	"container/heap"
	"sync"
	"time"
)

// scheduler runs functions at their due time on one goroutine: the writes of
// delayed datagrams and the ends of holds. Functions due at the same time run
// in the order they were scheduled.
type scheduler struct {
	wake chan struct{} // a new event may be due earlier than the one waited for

	mu  sync.Mutex // guards the fields below
	q   events
	seq uint64
}

type event struct {
	due time.Time
	seq uint64
	fn  func()
}

// events is a min-heap by (due, seq).
type events []event

func (q events) Len() int { return len(q) }
func (q events) Less(i, j int) bool {
	if c := q[i].due.Compare(q[j].due); c != 0 {
		return c < 0
	}
	return q[i].seq < q[j].seq
}
func (q events) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *events) Push(x any)   { *q = append(*q, x.(event)) }
func (q *events) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = event{}
	*q = old[:len(old)-1]
	return e
}

func newScheduler() *scheduler {
	return &scheduler{wake: make(chan struct{}, 1)}
}

// at schedules fn at due. It never blocks, and may be called from fn.
func (s *scheduler) at(due time.Time, fn func()) {
	s.mu.Lock()
	s.seq++
	heap.Push(&s.q, event{due: due, seq: s.seq, fn: fn})
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *scheduler) pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.q)
}

// run runs the due functions until done is closed; what is still scheduled
// then is discarded.
func (s *scheduler) run(done <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-done:
			return
		default:
		}
		var fn func()
		wait := time.Duration(-1)
		s.mu.Lock()
		if len(s.q) > 0 {
			if d := time.Until(s.q[0].due); d <= 0 {
				fn = heap.Pop(&s.q).(event).fn
			} else {
				wait = d
			}
		}
		s.mu.Unlock()
		if fn != nil {
			fn()
			continue
		}
		var tick <-chan time.Time
		if wait >= 0 {
			timer.Reset(wait)
			tick = timer.C
		}
		select {
		case <-done:
			return
		case <-s.wake:
			timer.Stop()
		case <-tick:
		}
	}
}
