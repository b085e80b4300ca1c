package coap

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/netip"
	"time"

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
	d *device
	o *observation
	p *pending // Confirmable: its device's wait for the ACK (notify.go)
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
	if old := d.obsLocked(string(token)); old != nil {
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
	_, subscribed := d.subCount(filter)
	d.addObsLocked(o)
	l.saveLocked(d, o)
	d.mu.Unlock()
	if subscribed {
		return o, false, nil
	}
	if _, err := l.env.Broker.Subscribe(ctx, d.key, filter, qos, l.deliverer(d)); err != nil {
		l.endObservation(d, o, endError, false)
		d.mu.Lock()
		d.dropSubLocked(filter)
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
	start := l.readyLocked(d)
	d.mu.Unlock()
	if start {
		l.schedule(d)
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
	wait := d.endWaitLocked(o)
	d.removeObsLocked(o)
	l.saveLocked(d, o) // its record goes
	last := false
	if i := d.subIndex(o.filter); i >= 0 {
		d.subs[i].n--
		last = d.subs[i].n == 0
	}
	recent := o.recent
	d.mu.Unlock()
	if wait != nil {
		// Its device waited for this observation's ACK or proof: the others
		// go on.
		l.dropWait(wait)
		l.reschedule(d)
	}
	// Count the end before the observations gauge drops, so that a reader who
	// sees the gauge fall also sees why.
	l.ctr.observationEnded(why)

	l.mu.Lock()
	for _, k := range recent {
		if ref, ok := l.sent[k]; ok && ref.o == o {
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
// matching observation (dropping the oldest when full, RFC 7641 §4.5.2: a
// newer state replaces the oldest waiting) and puts the device on the
// sender's ready list (notify.go) unless it is there or waits.
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
		start := l.readyLocked(d)
		d.mu.Unlock()
		if start {
			l.schedule(d)
		}
	}
}

// nextLocked picks the next observation with a notification that may go,
// round robin, so one busy topic does not starve another; d.mu must be held.
func (l *Listener) nextLocked(d *device) *observation {
	n := len(d.obs)
	for i := range n {
		if o := d.obs[(int(d.rr)+i)%n]; l.sendableLocked(o) {
			d.rr = uint16((int(d.rr) + i + 1) % n)
			return o
		}
	}
	return nil
}

// forgetSent removes the record of one notification of o.
func (l *Listener) forgetSent(key sentKey, o *observation) {
	l.mu.Lock()
	if cur, ok := l.sent[key]; ok && cur.o == o {
		delete(l.sent, key)
	}
	l.mu.Unlock()
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
	if ok && (reset || ref.p != nil) {
		delete(l.sent, key)
	}
	l.mu.Unlock()
	if !ok {
		return false
	}
	switch {
	case ref.p != nil:
		l.acked(ref.p, !reset)
	case reset:
		l.endObservation(ref.d, ref.o, endReset, false)
	}
	l.refresh(ref.d, from, l.env.Now())
	return true
}

// popFront removes a queue's first element. A queue that it empties keeps
// its array from the start (not the slice past the element), so that the
// next append reuses it.
func popFront[T any](q []T) []T {
	var zero T
	q[0] = zero
	if len(q) == 1 {
		return q[:0]
	}
	return q[1:]
}
