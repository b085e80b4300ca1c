package coap

import (
	"bytes"
	"container/heap"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/mqttgw/mqttgw/udpgw"
)

// The sender. Notifications leave from one goroutine per listener (sender),
// never from one per device:
//
//   - A device with a notification that may go (armed, queued, within its
//     sequence window: sendableLocked) and nothing in flight is put once on
//     the ready list (readyLocked, then schedule). The sender takes the list,
//     sends one notification per device and puts back the devices that have
//     more: round robin, so a busy device does not starve the others.
//   - A Confirmable notification makes its device wait (d.wait) until its
//     ACK or RST (the reader: ackOrReset, then acked), or until its timer in
//     the sender's heap fires: a retransmission after ACK_TIMEOUT × a random
//     factor up to ACK_RANDOM_FACTOR (1.5), doubling each time, at most
//     MaxRetransmit of them, then the observation ends (RFC 7252 §4.2, §4.8;
//     RFC 7641 §4.5). One Confirmable notification in flight per device
//     (NSTART 1, RFC 7252 §4.7): a silent device delays only itself, and its
//     observations' queues (ObserverQueue, drop-oldest) absorb what comes
//     meanwhile.
//   - A notification beyond the budget of an address that has not proven it
//     receives (unproven.go) goes back first in line, and its device waits
//     (a proof wait in the same heap) while the address is challenged with
//     CoAP pings, backing off like a Confirmable message; the proof (prove)
//     ends the wait, MaxRetransmit unanswered challenges end the observation.
//
// Every write is one datagram on the listener's socket (plain CoAP) or on the
// device's DTLS session; no lock is held across it. The sender reads time
// with time.Now for its timers (durations, like go-coap's own), Env.Now for
// what it records.

// pending is what a device's sending waits for: the ACK of a Confirmable
// notification, or its address's proof. Its fields other than index are
// guarded by its device's mu (tries, timeout and at are the sender's alone).
type pending struct {
	d    *device
	o    *observation
	addr netip.AddrPort
	// CON: the notification's key in l.sent, its datagram (for the
	// retransmissions) and, for coaps, the DTLS session it went on.
	key sentKey
	b   []byte
	cc  *udpclient.Conn
	// proof: it waits for addr to prove it receives, not for an ACK.
	proof bool

	tries   int           // retransmissions (or challenges) so far
	timeout time.Duration // the current back-off
	at      time.Time     // when its timer fires
	index   int           // in l.timers; -1 when not there (guarded by sendMu)
}

// timerHeap orders the pending waits by when they fire.
type timerHeap []*pending

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *timerHeap) Push(x any) {
	p := x.(*pending)
	p.index = len(*h)
	*h = append(*h, p)
}
func (h *timerHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	p.index = -1
	return p
}

// schedule puts d on the sender's ready list; the caller set d.scheduled
// (readyLocked) and holds no lock.
func (l *Listener) schedule(d *device) {
	l.sendMu.Lock()
	l.ready = append(l.ready, d)
	l.sendMu.Unlock()
	l.wakeSender()
}

func (l *Listener) wakeSender() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// arm puts p's timer in the heap, to fire after p.timeout.
func (l *Listener) armTimer(p *pending) {
	p.at = time.Now().Add(p.timeout)
	l.sendMu.Lock()
	wakeUp := len(l.timers) == 0 || p.at.Before(l.timers[0].at)
	heap.Push(&l.timers, p)
	l.sendMu.Unlock()
	if wakeUp {
		l.wakeSender()
	}
}

// dropTimer takes p's timer out of the heap, if it is there.
func (l *Listener) dropTimer(p *pending) {
	l.sendMu.Lock()
	if p.index >= 0 {
		heap.Remove(&l.timers, p.index)
	}
	l.sendMu.Unlock()
}

// readyLocked reports whether d must be put on the ready list, and marks it
// so; d.mu is held. The caller then calls schedule.
func (l *Listener) readyLocked(d *device) bool {
	if d.scheduled || d.wait != nil || d.gone || d.sess == nil {
		return false
	}
	for _, o := range d.obs {
		if l.sendableLocked(o) {
			d.scheduled = true
			return true
		}
	}
	return false
}

// reschedule puts d on the ready list when it has a notification that may go.
func (l *Listener) reschedule(d *device) {
	d.mu.Lock()
	start := l.readyLocked(d)
	d.mu.Unlock()
	if start {
		l.schedule(d)
	}
}

// sender is the listener's one notification goroutine (see above); Serve
// starts it, Close stops it.
func (l *Listener) sender() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	var batch []*device
	var due []*pending
	for l.ctx.Err() == nil {
		now := time.Now()
		l.sendMu.Lock()
		batch, l.ready = l.ready, batch[:0]
		due = due[:0]
		for len(l.timers) > 0 && !l.timers[0].at.After(now) {
			due = append(due, heap.Pop(&l.timers).(*pending))
		}
		next := time.Duration(-1)
		if len(l.timers) > 0 {
			next = l.timers[0].at.Sub(now)
		}
		l.sendMu.Unlock()
		for _, p := range due {
			l.fired(p)
		}
		for _, d := range batch {
			l.sendNext(d)
		}
		if len(batch) > 0 || len(due) > 0 {
			clear(batch)
			clear(due)
			continue
		}
		if next < 0 {
			next = time.Hour
		}
		t.Reset(next)
		select {
		case <-l.ctx.Done():
			return
		case <-l.wake:
		case <-t.C:
		}
	}
}

// nextMID is the Message ID of d's next message of the gateway's own (a
// notification, a Non-confirmable answer) to a proven address: one sequence
// per device, so that no two of them share one within EXCHANGE_LIFETIME
// unless 65536 went out (RFC 7252 §4.4).
func (d *device) nextMID() uint16 {
	return uint16(d.mid.Add(1))
}

// sendNext sends one notification of d, the next of its observations round
// robin, and puts d back on the ready list when it has more that may go. It
// runs on the sender.
func (l *Listener) sendNext(d *device) {
	now := l.env.Now()
	d.mu.Lock()
	d.scheduled = false
	if d.wait != nil || d.gone || d.sess == nil {
		d.mu.Unlock()
		return
	}
	cc, s := d.cc, d.sess
	d.mu.Unlock()

	addr := s.Addr() // the registry's: where the device was last seen
	proven := true
	if l.dtls != nil {
		if cc == nil || cc.Context().Err() != nil {
			// A DTLS device whose session ended: its notifications wait
			// (bounded) until it comes back; attach puts it back on the list.
			return
		}
	} else {
		cc = nil // a plain CoAP connection is for block-wise transfers only
		if !addr.IsValid() {
			return
		}
		proven = l.sources.IsProven(addr, now) || l.livePeer(addr) != nil
	}

	d.mu.Lock()
	o := l.nextLocked(d)
	if o == nil || d.wait != nil || d.gone || d.sess != s || s.Addr() != addr || (l.dtls != nil && d.cc != cc) {
		// It moved, or an ACK or an end came meanwhile: look again.
		start := l.readyLocked(d)
		d.mu.Unlock()
		if start {
			l.schedule(d)
		}
		return
	}
	m := o.queue[0]
	o.queue = popFront(o.queue)
	o.seq = (o.seq + 1) & seqMask
	l.sentLocked(d, o, addr)
	con := l.opts.NotifyCON || now.Sub(o.lastCON) >= conNotifyEvery
	// The key is where the notification goes, and whence its ACK or RST
	// comes. To an unproven address the Message ID is random: its ACK then
	// proves the address.
	var key sentKey
	switch {
	case cc != nil:
		key = sentKey{addr: connAddr(cc), mid: cc.GetMessageID()}
	case proven:
		key = sentKey{addr: addr, mid: int32(d.nextMID())}
	default:
		key = sentKey{addr: addr, mid: message.RandMID()}
	}
	evicted := o.recent[o.recentPos%len(o.recent)]
	o.recent[o.recentPos%len(o.recent)] = key
	o.recentPos++
	token, seq := o.token, o.seq
	var p *pending
	if con {
		p = &pending{d: d, o: o, addr: addr, key: key, cc: cc, index: -1}
		d.wait = p
	}
	d.mu.Unlock()

	l.mu.Lock()
	if old, ok := l.sent[evicted]; ok && old.o == o {
		delete(l.sent, evicted)
	}
	l.sent[key] = sentRef{d: d, o: o, p: p}
	l.mu.Unlock()

	// The sender's own buffer: a Non-confirmable notification is written
	// and forgotten; a Confirmable one keeps a copy for its retransmissions.
	l.sendBuf = appendNotification(l.sendBuf[:0], con, uint16(key.mid), token, seq, l.maxAge(s), m.Payload)
	b := l.sendBuf
	err := l.writeTo(cc, addr, b)
	if errors.Is(err, udpgw.ErrHeld) {
		// Beyond the budget of an address that has not proven it receives:
		// the notification waits, first in line, while the address is
		// challenged; an address that never answers loses the observation.
		l.forgetSent(key, o)
		hold := &pending{d: d, o: o, addr: addr, proof: true, timeout: l.opts.AckTimeout, index: -1}
		d.mu.Lock()
		if !o.ended {
			if len(o.queue) >= l.opts.ObserverQueue {
				l.ctr.notifyQueueFull.Inc() // the held one is the oldest
			} else {
				o.queue = append(o.queue, udpgw.Message{})
				copy(o.queue[1:], o.queue)
				o.queue[0] = m
			}
		}
		ended := o.ended
		if !ended {
			d.wait = hold
		} else if d.wait == p {
			d.wait = nil
		}
		d.mu.Unlock()
		if ended {
			l.reschedule(d)
			return
		}
		l.proofMu.Lock()
		l.proofWait[addr] = append(l.proofWait[addr], hold)
		l.proofMu.Unlock()
		if l.sources.IsProven(addr, l.env.Now()) {
			l.proven(hold) // proved meanwhile: prove found no waiter
			return
		}
		l.challenge(addr, l.env.Now())
		l.armTimer(hold)
		return
	}
	if !con {
		if err == nil {
			l.ctr.notifyNON.Inc()
		}
		l.reschedule(d)
		return
	}
	l.ctr.notifyCON.Inc()
	p.b = bytes.Clone(b)
	p.timeout = time.Duration(float64(l.opts.AckTimeout) * (1 + rand.Float64()/2)) // ACK_RANDOM_FACTOR 1.5
	l.armTimer(p)
}

// writeTo sends one datagram of the gateway's own to a device: on its DTLS
// session (cc), else from the plain CoAP socket to addr within addr's budget
// (udpgw.ErrHeld beyond it).
func (l *Listener) writeTo(cc *udpclient.Conn, addr netip.AddrPort, b []byte) error {
	if cc != nil {
		_, err := cc.NetConn().Write(b)
		return err
	}
	return l.sendTo(addr, b)
}

// fired handles the timer of p: a Confirmable notification not acknowledged
// in time is sent again, or ends its observation after MaxRetransmit
// retransmissions; a proof wait challenges its address again, or ends its
// observation. It runs on the sender.
func (l *Listener) fired(p *pending) {
	d, o := p.d, p.o
	proven := p.proof && l.sources.IsProven(p.addr, l.env.Now()) // not under d.mu: see the lock order
	d.mu.Lock()
	if d.wait != p {
		d.mu.Unlock()
		return // acknowledged, proven or ended meanwhile
	}
	if p.proof {
		if !o.ended && !proven && p.tries < l.opts.MaxRetransmit {
			p.tries++
			p.timeout *= 2
			d.mu.Unlock()
			l.challenge(p.addr, l.env.Now())
			l.armTimer(p)
			return
		}
		d.wait = nil
		unproven := !o.ended && !proven
		d.mu.Unlock()
		l.unwaitProof(p)
		if unproven {
			l.endObservation(d, o, endUnproven, false)
		}
		l.reschedule(d)
		return
	}
	closed := p.cc != nil && p.cc.Context().Err() != nil
	if o.ended || closed || p.tries >= l.opts.MaxRetransmit {
		d.wait = nil
		d.mu.Unlock()
		l.forgetSent(p.key, o)
		switch {
		case closed:
			// The DTLS session was the only path to the device: it waits
			// for the device to come back (attach).
			return
		case !o.ended:
			// RFC 7641 §4.5: a Confirmable notification that times out
			// removes the observer.
			l.endObservation(d, o, endTimeout, false)
		}
		l.reschedule(d)
		return
	}
	p.tries++
	p.timeout *= 2
	d.mu.Unlock()
	_ = l.writeTo(p.cc, p.addr, p.b)
	l.ctr.notifyRetransmit.Inc()
	l.armTimer(p)
}

// acked ends the wait of the Confirmable notification p: the device
// acknowledged it (ok), or rejected it with a RST, which ends its
// observation (RFC 7641 §3.6). The reader calls it.
func (l *Listener) acked(p *pending, ok bool) {
	d := p.d
	d.mu.Lock()
	if d.wait != p {
		d.mu.Unlock()
		return
	}
	d.wait = nil
	if ok {
		p.o.lastCON = l.env.Now()
	}
	d.mu.Unlock()
	l.dropTimer(p)
	if !ok {
		l.endObservation(d, p.o, endReset, false)
	}
	l.reschedule(d)
}

// proven ends the proof wait p: its address proved it receives.
func (l *Listener) proven(p *pending) {
	d := p.d
	d.mu.Lock()
	mine := d.wait == p
	if mine {
		d.wait = nil
	}
	d.mu.Unlock()
	l.unwaitProof(p)
	l.dropTimer(p)
	if mine {
		l.reschedule(d)
	}
}

// unwaitProof takes p off the list of waits for its address's proof.
func (l *Listener) unwaitProof(p *pending) {
	l.proofMu.Lock()
	defer l.proofMu.Unlock()
	ws := l.proofWait[p.addr]
	for i, w := range ws {
		if w == p {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(l.proofWait, p.addr)
	} else {
		l.proofWait[p.addr] = ws
	}
}

// endWaitLocked clears d's wait when it is for o, which ended; d.mu is held.
// The caller drops what it returns (dropWait) once d.mu is released.
func (d *device) endWaitLocked(o *observation) *pending {
	p := d.wait
	if p == nil || p.o != o {
		return nil
	}
	d.wait = nil
	return p
}

// dropWait forgets a wait cleared by endWaitLocked: its timer, its proof
// wait, its record in l.sent.
func (l *Listener) dropWait(p *pending) {
	l.dropTimer(p)
	if p.proof {
		l.unwaitProof(p)
	} else {
		l.forgetSent(p.key, p.o)
	}
}

// appendNotification appends one notification (RFC 7641 §4.2) to b: 2.05
// Content with the observation's token, its Observe sequence number and a
// Max-Age; a payload above one block goes as its first block, the client
// fetching the rest with GET and Block2 (RFC 7959 §2.6, §3.4).
//
//	 0                   1                   2                   3
//	|Ver| T |  TKL  |  Code (2.05)  |          Message ID           |
//	|   Token (TKL bytes) ...
//	|   Observe (6) | Max-Age (14) | [Block2 (23) | Size2 (28)]      |
//	|1 1 1 1 1 1 1 1|    Payload (if any) ...
//
// Options are in ascending order, each a delta and length nibble (RFC 7252
// §3.1), their values unsigned integers in the fewest bytes (§3.2). It is
// pure: no I/O, no allocation beyond b's growth.
func appendNotification(b []byte, con bool, mid uint16, token []byte, seq, maxAge uint32, payload []byte) []byte {
	typ := message.NonConfirmable
	if con {
		typ = message.Confirmable
	}
	b = append(b, 1<<6|byte(typ)<<4|byte(len(token)), byte(codes.Content), byte(mid>>8), byte(mid))
	b = append(b, token...)
	last := 0
	b, last = appendUintOption(b, last, message.Observe, seq)
	b, last = appendUintOption(b, last, message.MaxAge, maxAge)
	if len(payload) > blockSize {
		v, _ := blockwise.EncodeBlockOption(blockwise.SZX1024, 0, true) // valid: cannot fail
		b, last = appendUintOption(b, last, message.Block2, v)
		b, _ = appendUintOption(b, last, message.Size2, uint32(len(payload)))
		payload = payload[:blockSize]
	}
	if len(payload) > 0 {
		b = append(b, 0xff)
		b = append(b, payload...)
	}
	return b
}

// appendUintOption appends option id with an unsigned value after option
// number last (RFC 7252 §3.1: the delta in the nibble, or extended by one
// or two bytes).
func appendUintOption(b []byte, last int, id message.OptionID, v uint32) ([]byte, int) {
	n := 0 // value bytes: none for 0
	for x := v; x != 0; x >>= 8 {
		n++
	}
	delta := int(id) - last
	switch {
	case delta < 13:
		b = append(b, byte(delta)<<4|byte(n))
	case delta < 269:
		b = append(b, 13<<4|byte(n), byte(delta-13))
	default:
		b = append(b, 14<<4|byte(n))
		b = binary.BigEndian.AppendUint16(b, uint16(delta-269))
	}
	for i := n - 1; i >= 0; i-- {
		b = append(b, byte(v>>(8*i)))
	}
	return b, int(id)
}
