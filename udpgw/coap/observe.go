package coap

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// observation is one entry of a resource's list of observers (RFC 7641 §4.1),
// keyed by its device and token. Its fields are guarded by its device's mu.
type observation struct {
	token  []byte
	filter string // the MQTT filter observed, in the device's topic space
	qos    byte   // the QoS its broker subscription asks for

	queue     []udpgw.Message // waiting notifications, oldest first, at most ObserverQueue
	seq       uint32          // last Observe value sent (24 bits, RFC 7641 §4.4)
	armed     bool            // the registration response is out: notifications may follow
	ended     bool            // removed from its device
	lastCON   time.Time       // last acknowledged Confirmable notification
	recent    [4]sentKey      // the last notifications sent, for matching a RST (§3.6)
	recentPos int

	// With a store (persist.go): the sequence base of its last committed
	// record (no notification goes more than seqWindow above it), the
	// address its last record was taken for, whether its record is marked
	// dirty and not yet snapshot, and whether one was ever committed (then
	// saved, which its registration response waits for, is closed).
	durable   uint32
	savedTo   netip.AddrPort
	marked    bool
	committed bool
	saved     chan struct{}
}

// sentKey names a notification on the wire: a message id is unique per remote
// endpoint (RFC 7252 §4.4), and two devices may use one address in turn.
type sentKey struct {
	addr netip.AddrPort
	mid  int32
}

// sentRef is what an ACK or RST to a notification refers to.
type sentRef struct {
	d   *device
	o   *observation
	ack chan bool // Confirmable: the pump waits here (true ACK, false RST)
}

// endReason says why an observation was removed, for metrics and logs.
type endReason string

const (
	endDeregister endReason = "deregister" // GET with Observe=1 (RFC 7641 §3.6)
	endReset      endReason = "reset"      // RST to a notification (RFC 7641 §3.6)
	endTimeout    endReason = "timeout"    // Confirmable notification never acknowledged (§4.5)
	endLost       endReason = "lost"       // the device's session ended (SessionEnded)
	endReplaced   endReason = "replaced"   // same token registered for another path (§4.1)
	endError      endReason = "error"      // the broker refused the subscription
	endUnanswered endReason = "unanswered" // the registration response was not sent (RFC 7967, or held)
	endUnproven   endReason = "unproven"   // notifications held: the address never proved it receives
	endConnLost   endReason = "connection" // transparent mode: the broker dropped the device's connection
	endStore      endReason = "store"      // its record was not committed in time: the registration was refused
)

// sequence values are 24 bits (RFC 7641 §4.4).
const seqMask = 1<<24 - 1

// register adds (or, for the same token, renews) an observation of filter by d
// and subscribes the broker when d did not observe filter yet. It runs on a
// handler goroutine. refused is set when a limit says no: the caller answers
// as for a plain GET (RFC 7641 §4.1).
func (l *Listener) register(ctx context.Context, d *device, token []byte, filter string, qos byte) (o *observation, refused bool, err error) {
	d.subOp.Lock()
	defer d.subOp.Unlock()

	d.mu.Lock()
	if old := d.obs[string(token)]; old != nil {
		if old.filter == filter {
			// §4.1: the same client and token again: update, do not add.
			d.mu.Unlock()
			return old, false, nil
		}
		d.mu.Unlock()
		l.endObservation(d, old, endReplaced, false)
		d.mu.Lock()
	}
	if len(d.obs) >= l.opts.MaxObserversPerDevice {
		d.mu.Unlock()
		return nil, true, nil
	}
	d.mu.Unlock()

	l.mu.Lock()
	if l.perTopic[filter] >= l.opts.MaxObserversPerTopic {
		l.mu.Unlock()
		return nil, true, nil
	}
	l.perTopic[filter]++
	l.mu.Unlock()

	o = &observation{token: bytes.Clone(token), filter: filter, qos: qos, seq: rand.Uint32() & seqMask, lastCON: l.env.Now()}
	if l.ps != nil {
		o.durable, o.saved = o.seq, make(chan struct{})
	}
	d.mu.Lock()
	d.obs[string(token)] = o
	n, subscribed := d.subs[filter]
	d.subs[filter] = n + 1
	l.saveLocked(d, o)
	d.mu.Unlock()
	if subscribed {
		return o, false, nil
	}
	if _, err := l.env.Broker.Subscribe(ctx, d.key, filter, qos, l.deliverer(d)); err != nil {
		l.endObservation(d, o, endError, false)
		d.mu.Lock()
		if d.subs[filter] == 0 {
			delete(d.subs, filter)
		}
		d.mu.Unlock()
		return nil, false, err
	}
	return o, false, nil
}

// arm lets notifications flow once the registration response is written, so that
// none overtakes it (a client drops a notification for a token it does not know
// yet, and answers it with RST).
func (l *Listener) arm(d *device, o *observation) {
	d.mu.Lock()
	o.armed = true
	start := l.shouldPumpLocked(d)
	d.mu.Unlock()
	if start {
		l.startPump(d)
	}
}

// endObservation removes o from d. When sync is set it also unsubscribes the
// broker from a filter nobody observes any more, on the calling goroutine;
// otherwise on a new one. It never blocks the caller on the network when sync
// is false, so the reader may call it.
func (l *Listener) endObservation(d *device, o *observation, why endReason, sync bool) {
	d.mu.Lock()
	if o.ended {
		d.mu.Unlock()
		return
	}
	o.ended = true
	o.queue = nil
	if d.obs[string(o.token)] == o {
		delete(d.obs, string(o.token))
	}
	l.saveLocked(d, o) // its record goes
	last := false
	if n, ok := d.subs[o.filter]; ok {
		d.subs[o.filter] = n - 1
		last = n == 1
	}
	recent := o.recent
	d.mu.Unlock()
	// Count the end before the observations gauge drops, so that a reader who
	// sees the gauge fall also sees why.
	l.ctr.observationEnded(why)

	l.mu.Lock()
	for _, k := range recent {
		if ref, ok := l.sent[k]; ok && ref.o == o && ref.ack == nil {
			delete(l.sent, k)
		}
	}
	if l.perTopic[o.filter] <= 1 {
		delete(l.perTopic, o.filter)
	} else {
		l.perTopic[o.filter]--
	}
	l.mu.Unlock()
	if ce := l.log.Check(zap.DebugLevel, "observation ended"); ce != nil {
		ce.Write(zap.String("device", d.key), zap.String("filter", o.filter), zap.String("reason", string(why)))
	}
	if !last || why == endError || why == endLost {
		return // endError: register cleans up; endLost: SessionEnded does
	}
	if sync {
		l.syncSubscription(d, o.filter)
		return
	}
	filter := o.filter
	l.goStart(func() { l.syncSubscription(d, filter) })
}

// deliverer is the broker delivery callback of d's subscriptions. It runs on the
// broker's delivery goroutine and never blocks: it queues the message on every
// matching observation (dropping the oldest when full) and starts the device's
// pump if none runs.
func (l *Listener) deliverer(d *device) func(udpgw.Message) {
	return func(m udpgw.Message) {
		if len(m.Payload) > l.opts.MaxPayload {
			l.ctr.notifyTooLarge.Inc()
			return
		}
		d.mu.Lock()
		for _, o := range d.obs {
			// The broker delivers a message once per device even when several of
			// its filters match (MQTT 3.1.1 §3.3.5), so match each observation.
			if !udpgw.MatchTopic(o.filter, m.Topic) {
				continue
			}
			if len(o.queue) >= l.opts.ObserverQueue {
				copy(o.queue, o.queue[1:])
				o.queue = o.queue[:len(o.queue)-1]
				l.ctr.notifyQueueFull.Inc()
			}
			o.queue = append(o.queue, m)
		}
		start := l.shouldPumpLocked(d)
		d.mu.Unlock()
		if start {
			l.startPump(d)
		}
	}
}

// shouldPumpLocked reports whether a pump must start, and marks it started;
// d.mu must be held.
func (l *Listener) shouldPumpLocked(d *device) bool {
	if d.pumping || d.gone || d.sess == nil {
		return false
	}
	for _, o := range d.obs {
		if l.sendableLocked(o) {
			d.pumping = true
			return true
		}
	}
	return false
}

func (l *Listener) startPump(d *device) {
	if !l.goStart(func() { l.pump(d) }) {
		d.mu.Lock()
		d.pumping = false
		d.mu.Unlock()
	}
}

// nextLocked picks the next observation with a notification that may go,
// round robin, so one busy topic does not starve another; d.mu must be held.
func (l *Listener) nextLocked(d *device) *observation {
	if len(d.obs) == 0 {
		return nil
	}
	keys := make([]string, 0, len(d.obs))
	for k, o := range d.obs {
		if l.sendableLocked(o) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	// Map order is random; a sorted pass keeps the rotation fair.
	slices.Sort(keys)
	d.rr++
	return d.obs[keys[d.rr%len(keys)]]
}

// pump sends d's waiting notifications one at a time, until none waits: the
// next one starts after the previous Confirmable one was acknowledged (NSTART = 1,
// RFC 7252 §4.7). One pump runs per device with waiting notifications, so a slow
// or absent observer delays nobody else.
func (l *Listener) pump(d *device) {
	for {
		d.mu.Lock()
		o := l.nextLocked(d)
		if o == nil || d.gone || l.ctx.Err() != nil {
			d.pumping = false
			d.mu.Unlock()
			return
		}
		cc0, s := d.cc, d.sess
		d.mu.Unlock()

		addr := s.Addr() // the registry's: where the device was last seen
		cc := l.liveConn(cc0, addr)
		// A plain CoAP address that has not proven it receives has no
		// connection: its notifications go through sendTo, within its budget.
		direct := cc == nil && l.dtls == nil && addr.IsValid()

		d.mu.Lock()
		if d.cc != cc0 || d.sess != s || s.Addr() != addr {
			d.mu.Unlock()
			continue // the device moved meanwhile: use its new address
		}
		if cc == nil && !direct {
			// A DTLS device whose session ended: its notifications wait (bounded)
			// until it comes back; attach restarts the pump.
			d.pumping = false
			d.mu.Unlock()
			return
		}
		if o.ended || len(o.queue) == 0 {
			d.mu.Unlock()
			continue
		}
		m := o.queue[0]
		copy(o.queue, o.queue[1:])
		o.queue = o.queue[:len(o.queue)-1]
		o.seq = (o.seq + 1) & seqMask
		l.sentLocked(d, o, addr)
		con := l.opts.NotifyCON || l.env.Now().Sub(o.lastCON) >= conNotifyEvery
		// The key is where the notification goes, and whence its ACK or RST
		// comes: the connection's address, or addr itself. To an unproven
		// address the Message ID is random: its ACK then proves the address.
		key := sentKey{addr: addr, mid: message.RandMID()}
		if !direct {
			key = sentKey{addr: connAddr(cc), mid: cc.GetMessageID()}
		}
		evicted := o.recent[o.recentPos%len(o.recent)]
		o.recent[o.recentPos%len(o.recent)] = key
		o.recentPos++
		token, seq := o.token, o.seq
		d.mu.Unlock()

		ref := sentRef{d: d, o: o}
		if con {
			ref.ack = make(chan bool, 1)
		}
		l.mu.Lock()
		if old, ok := l.sent[evicted]; ok && old.o == o {
			delete(l.sent, evicted)
		}
		l.sent[key] = ref
		l.mu.Unlock()

		msg := l.notification(token, seq, m.Payload, con, key.mid, l.maxAge(s))
		write := func() error { return cc.Session().WriteMessage(msg) }
		if direct {
			write = func() error {
				b, err := msg.MarshalWithEncoder(coder.DefaultCoder)
				if err != nil {
					return err
				}
				return l.sendTo(addr, b)
			}
		}
		err := write()
		if errors.Is(err, udpgw.ErrHeld) {
			// Beyond the budget of an address that has not proven it receives:
			// the notification waits, first in line, while the address is
			// challenged; an address that never answers loses the observation.
			l.pool.ReleaseMessage(msg)
			l.forgetSent(key, o)
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
			d.mu.Unlock()
			if !l.awaitProof(addr) {
				l.endObservation(d, o, endUnproven, true)
			}
			continue
		}
		if !con {
			l.pool.ReleaseMessage(msg)
			if err == nil {
				l.ctr.notifyNON.Inc()
			}
			continue
		}
		l.ctr.notifyCON.Inc()
		var closed <-chan struct{}
		if l.dtls != nil {
			// The DTLS session is the only path to the device.
			closed = cc.Context().Done()
		}
		resend := func() {
			// A plain CoAP connection may have been closed for idleness
			// meanwhile; the device is still at its address.
			if c := l.liveConn(cc, addr); c != nil {
				_ = c.Session().WriteMessage(msg)
			}
		}
		if direct {
			resend = func() { _ = write() }
		}
		result := l.awaitAck(ref.ack, closed, resend)
		l.pool.ReleaseMessage(msg)
		l.forgetSent(key, o)
		if result == ackReceived {
			d.mu.Lock()
			o.lastCON = l.env.Now()
			d.mu.Unlock()
		}
		switch result {
		case ackReset:
			l.endObservation(d, o, endReset, true)
		case ackTimeout:
			// RFC 7641 §4.5: a Confirmable notification that times out removes
			// the observer.
			l.endObservation(d, o, endTimeout, true)
		case ackClosed:
			d.mu.Lock()
			d.pumping = false
			d.mu.Unlock()
			return
		}
	}
}

// forgetSent removes the record of one notification of o.
func (l *Listener) forgetSent(key sentKey, o *observation) {
	l.mu.Lock()
	if cur, ok := l.sent[key]; ok && cur.o == o {
		delete(l.sent, key)
	}
	l.mu.Unlock()
}

type ackResult int

const (
	ackReceived ackResult = iota
	ackReset
	ackTimeout
	ackClosed
)

// awaitAck retransmits a Confirmable notification (resend) with exponential
// back-off until the ACK or RST arrives (the reader signals ack), at most
// MaxRetransmit times (RFC 7252 §4.2, §4.8); closed, when set, ends the wait
// (the DTLS session that was the only path to the device ended).
func (l *Listener) awaitAck(ack chan bool, closed <-chan struct{}, resend func()) ackResult {
	timeout := time.Duration(float64(l.opts.AckTimeout) * (1 + rand.Float64()/2)) // ACK_RANDOM_FACTOR 1.5
	t := time.NewTimer(timeout)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case ok := <-ack:
			if ok {
				return ackReceived
			}
			return ackReset
		case <-l.ctx.Done():
			return ackClosed
		case <-closed:
			return ackClosed
		case <-t.C:
		}
		if n >= l.opts.MaxRetransmit {
			return ackTimeout
		}
		timeout *= 2
		t.Reset(timeout)
		resend()
		l.ctr.notifyRetransmit.Inc()
	}
}

// notification builds one notification (RFC 7641 §4.2): 2.05 with the
// observation's token and the next sequence number. A payload above one block
// goes out as its first block; the client fetches the rest with GET and Block2
// (RFC 7959 §2.6, §3.4).
func (l *Listener) notification(token []byte, seq uint32, payload []byte, con bool, mid int32, maxAge uint32) *pool.Message {
	msg := l.pool.AcquireMessage(l.ctx)
	msg.SetCode(codes.Content)
	msg.SetToken(token)
	msg.SetMessageID(mid)
	if con {
		msg.SetType(message.Confirmable)
	} else {
		msg.SetType(message.NonConfirmable)
	}
	msg.SetObserve(seq)
	msg.SetOptionUint32(message.MaxAge, maxAge)
	if len(payload) > blockSize {
		if v, err := blockwise.EncodeBlockOption(blockwise.SZX1024, 0, true); err == nil {
			msg.SetOptionUint32(message.Block2, v)
			msg.SetOptionUint32(message.Size2, uint32(len(payload)))
			payload = payload[:blockSize]
		}
	}
	msg.SetBody(bytes.NewReader(payload))
	return msg
}

// maxAge is the Max-Age of a device's notifications: the representation stays
// fresh for as long as the observation lives (RFC 7641 §3.3.1), so a sleepy
// client does not consider it stale and re-register after the default 60 s. The
// observation lives as long as the device's session: 1.5 times its keepalive
// (its class's, or the listener's default), for ever when that is 0.
func (l *Listener) maxAge(s *session.Session) uint32 {
	ka := l.opts.Keepalive
	if s != nil {
		ka = s.Keepalive()
	}
	secs := ka * 3 / 2 / time.Second
	if ka <= 0 || secs > 1<<32-1 {
		secs = 1<<32 - 1
	}
	return uint32(secs)
}

// ackOrReset is the reader's handling of an empty ACK or RST (RFC 7252 §4.2,
// RFC 7641 §3.6): it completes a pending Confirmable notification, or ends the
// observation a Non-confirmable one belonged to. It never blocks. It reports
// whether mid was a notification's: then from echoed a Message ID the gateway
// chose, which proves it receives there.
func (l *Listener) ackOrReset(from netip.AddrPort, mid int32, reset bool) bool {
	key := sentKey{addr: from, mid: mid}
	l.mu.Lock()
	ref, ok := l.sent[key]
	if ok && (reset || ref.ack != nil) {
		delete(l.sent, key)
	}
	l.mu.Unlock()
	if !ok {
		return false
	}
	switch {
	case ref.ack != nil:
		select {
		case ref.ack <- !reset:
		default:
		}
	case reset:
		l.endObservation(ref.d, ref.o, endReset, false)
	}
	l.refresh(ref.d, from, l.env.Now())
	return true
}
