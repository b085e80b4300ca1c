package faultrelay

import (
	"math/rand/v2"
	"sync"
	"time"
)

// pipe is one direction of one device: it decides each datagram's fate and
// writes the copies, now or through the scheduler.
type pipe struct {
	f     Faults
	c     *counters
	sched *scheduler
	done  <-chan struct{} // closed when the relay closes
	write func([]byte) error

	mu   sync.Mutex // guards the fields below
	rng  *rand.Rand
	held *datagram // held back for reordering, or nil
}

// datagram is a datagram that passed the loss draw, with the delay of each
// copy (one, or two when duplicated), drawn when it arrived so that the fate
// of the n-th datagram does not depend on when a hold ends.
type datagram struct {
	b      []byte
	delays []time.Duration
}

// send is one copy to write at due.
type send struct {
	b   []byte
	due time.Time
}

// pass decides the fate of b, which arrived at now. Every datagram takes the
// same five draws, whatever their outcome: loss, duplicate, reorder and one
// jitter per possible copy.
func (p *pipe) pass(b []byte, now time.Time) {
	p.c.received.Add(1)
	p.mu.Lock()
	lost := p.rng.Float64() < p.f.Loss
	dup := p.rng.Float64() < p.f.Duplicate
	hold := p.rng.Float64() < p.f.Reorder
	j1, j2 := p.rng.Float64(), p.rng.Float64()
	if lost {
		p.mu.Unlock()
		p.c.dropped.Add(1)
		return
	}
	d := &datagram{b: b, delays: []time.Duration{p.f.delay(j1)}}
	if dup {
		d.delays = append(d.delays, p.f.delay(j2))
		p.c.duplicated.Add(1)
	}
	if hold && p.held == nil {
		p.held = d
		p.mu.Unlock()
		p.c.held.Add(1)
		p.sched.at(now.Add(p.f.hold()), func() { p.release(d) })
		return
	}
	out := d.sends(now, now)
	if h := p.held; h != nil {
		// The held datagram goes right after the one that overtook it.
		p.held = nil
		out = append(out, h.sends(now, out[len(out)-1].due)...)
		p.c.reordered.Add(1)
	}
	p.mu.Unlock()
	p.emit(out, now)
}

// sends lists d's copies, due after their delays from now but not before
// notBefore.
func (d *datagram) sends(now, notBefore time.Time) []send {
	out := make([]send, 0, len(d.delays))
	for _, dl := range d.delays {
		due := now.Add(dl)
		if due.Before(notBefore) {
			due = notBefore
		}
		out = append(out, send{d.b, due})
	}
	return out
}

// release writes the held d when Hold ended without a datagram overtaking
// it; it runs on the scheduler.
func (p *pipe) release(d *datagram) {
	p.mu.Lock()
	if p.held != d {
		p.mu.Unlock()
		return // already overtaken and written
	}
	p.held = nil
	p.mu.Unlock()
	now := time.Now()
	p.emit(d.sends(now, now), now)
}

// emit writes the copies due by now and schedules the others, in order.
func (p *pipe) emit(out []send, now time.Time) {
	for _, s := range out {
		if s.due.After(now) {
			b := s.b
			p.sched.at(s.due, func() { p.writeOne(b) })
			continue
		}
		p.writeOne(s.b)
	}
}

func (p *pipe) writeOne(b []byte) {
	if err := p.write(b); err != nil {
		select {
		case <-p.done: // closing: not an error
		default:
			p.c.errors.Add(1)
		}
		return
	}
	p.c.forwarded.Add(1)
}
