package coap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/metrics"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/store"
	"github.com/mqttgw/mqttgw/udpgw"
)

// Observations across a restart (issue 10, "Restarts"; RFC 7641). With
// Options.State every observation has one record in the store (record.go)
// under store.KindCoAPObservation, keyed by the listener's name, a NUL, the
// device's name, a NUL and the token: what the observer registered (its
// filter, token and the QoS of its subscription), the Observe sequence it has
// reached and the address it proved. The device's session (its address, class
// and liveness) is the registry's, kept by the gateway (store.KindSession):
// an observation is restored only when its device's session is.
//
// # Writes
//
// Nothing is written under Listener.mu or a device's mu. A change marks the
// observation's key dirty (saveLocked): its registration, its end for any
// reason — GET with Observe 1, a RST, a Confirmable notification never
// acknowledged, the device's session ended, a replaced token, an unproven
// address —, its device's address proved itself (prove) or moved, and its
// sequence half-way through its window; the writer goroutine takes the dirty
// keys, looks each up in the device table as it is then (an observation
// there: its record; none: a deletion), snapshots it under the device's mu
// and commits up to writeBatch of them in one State.Apply, after the unlock.
// A key is in at most one commit at a time, so its records reach the store
// in order; a failed commit leaves its keys dirty, retried every writeRetry.
//
// # Answers wait for their commit
//
// The registration response (2.05 with Observe) goes out once the
// observation's record is committed: an observer told it is registered is
// one a crash cannot forget. A store that does not commit within the
// request's time gets the registration refused with 5.03, as a broker away.
//
// # Sequence numbers
//
// A client takes a notification as newer than the last one only if its
// Observe value is greater (modulo 2^24, within 2^23) or more than 128 s
// passed since (RFC 7641 §3.4, §4.4), so after a restart the sequence must go
// on above every value sent before, whatever the downtime. Writing the value
// per notification would cost a write per notification; instead a record's
// Seq is a base: no notification goes out more than seqWindow above the base
// of the observation's last committed record (the sender holds it until a
// newer record is committed), and a new record is marked once the sequence is
// half a window above it, so in steady traffic nothing waits. A restored
// observation goes on at base + seqWindow, above all it sent, and its first
// notification waits for the record of that new base (else a second crash
// could restart below what the first restart sent). The jump, 2^16, is far
// below 2^23, so the client takes it as newer.
//
// # Restore
//
// Serve reads the listener's records before it reads a datagram. An
// observation whose device has no live session (never restored, or lost while
// the gateway was down: its will went out) is deleted, unless Options.Shared
// (a fleet: it may be another instance's device, left alone). The others are put back
// armed, with their subscription made again at the broker (on a goroutine, so
// Serve does not wait for the broker; the broker's retained message on the
// filter, sent for the new subscription, reaches the observer as it would
// after a registration); a subscription the broker side now refuses (the ACL
// changed) ends its observations. The first notification after a restart is
// Confirmable (RFC 7641 §4.5): the observer may have gone while the gateway
// was down, and an unacknowledged notification removes it. The address a
// record says the device proved is proven again if the device's session is
// still there, so that its notifications are not held (unproven.go). A
// record without one (the address had not proved itself, or the device moved
// since) restores an observation whose notifications wait for the address's
// proof, which a request of the device brings (the gateway pings it), and
// which ends if none comes (endUnproven): a restart makes no unproven address
// a target.
//
// Only aggregate listeners persist: in transparent mode the observation's
// subscription lives on the device's own broker connection, which a restart
// ends.

// restoredBudget is the request size an observation restored on an address
// not proven before the restart is credited with (udpgw.Sources budget:
// Factor times it): room for a ping and a small notification.
const restoredBudget = 64

// seqWindow is how far above a committed record's sequence base the Observe
// values may go before a newer record must be committed.
const seqWindow = 1 << 16

// writeBatch bounds the records of one commit (at most 1000: one atomic
// batch of the JetStream backend); writeRetry is how long a failed commit
// waits before the next try.
const (
	writeBatch = 1000
	writeRetry = time.Second
)

// persister is the listener's store side, nil without Options.State.
type persister struct {
	st     store.State
	prefix string        // of the keys: the listener's name and a NUL
	kick   chan struct{} // capacity 1: the writer has work

	// mu guards dirty, inflight and lastLog. It is a leaf: taken alone or
	// with Listener.mu or a device's mu held, and takes no other lock.
	mu       sync.Mutex
	dirty    map[string]obsKey // record key → the observation it names
	inflight map[string]struct{}
	lastLog  time.Time // of a failed commit: at most one line a second

	puts, deletes, failed *metrics.Counter
}

// obsKey names an observation in the device table: its device and token.
type obsKey struct {
	device string
	token  string
}

func newPersister(st store.State, env udpgw.Env) *persister {
	c := func(result string) *metrics.Counter {
		return env.Metrics.Counter("mqttgw_coap_observation_writes_total",
			"CoAP observation records written to the store (put, delete) or whose commit failed (failed, retried).",
			"listener", env.Name, "result", result)
	}
	ps := &persister{st: st, prefix: env.Name + "\x00", kick: make(chan struct{}, 1),
		dirty: map[string]obsKey{}, inflight: map[string]struct{}{}, puts: c("put"), deletes: c("delete"), failed: c("failed")}
	env.Metrics.GaugeFunc("mqttgw_coap_observation_writes_pending", "CoAP observation records changed and not yet committed to the store.",
		func() float64 { return float64(ps.pending()) }, "listener", env.Name)
	return ps
}

func (ps *persister) pending() int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	n := len(ps.inflight)
	for k := range ps.dirty {
		if _, ok := ps.inflight[k]; !ok {
			n++
		}
	}
	return n
}

// key is the record key of the observation of device with token.
func (ps *persister) key(device string, token []byte) string {
	return ps.prefix + device + "\x00" + string(token)
}

// mark makes the record of k dirty.
func (ps *persister) mark(key string, k obsKey) {
	ps.mu.Lock()
	ps.dirty[key] = k
	ps.mu.Unlock()
	select {
	case ps.kick <- struct{}{}:
	default:
	}
}

// saveLocked marks o's record to be written (or deleted, once o has ended);
// d.mu is held. It does nothing without a store, or when o is marked already
// and not yet snapshot.
func (l *Listener) saveLocked(d *device, o *observation) {
	if l.ps == nil || o.marked {
		return
	}
	o.marked = true
	l.ps.mark(l.ps.key(d.key, o.token), obsKey{device: d.key, token: string(o.token)})
}

// sendableLocked reports whether o has a notification that may go now: armed,
// queued, and (with a store) its next sequence number within the window of
// its last committed record; d.mu is held.
func (l *Listener) sendableLocked(o *observation) bool {
	return o.armed && len(o.queue) > 0 && (l.ps == nil || (o.seq+1-o.durable)&seqMask <= seqWindow)
}

// sentLocked is the sender's bookkeeping once it took o's next sequence number
// for a notification to addr: a new record once the sequence is half a window
// above the committed one, or once the device's address is not the one the
// last record was taken for; d.mu is held. Two comparisons: the hot path.
func (l *Listener) sentLocked(d *device, o *observation, addr netip.AddrPort) {
	if l.ps != nil && ((o.seq-o.durable)&seqMask >= seqWindow/2 || addr != o.savedTo) {
		l.saveLocked(d, o)
	}
}

// provenSave marks the records of the observations of the device last seen at
// addr, which has just proven it receives there: they are written again with
// the address, which a restart then takes as proven. It never blocks.
func (l *Listener) provenSave(addr netip.AddrPort) {
	if l.ps == nil {
		return
	}
	s := l.env.Sessions.ByPeer(l.env.Name, session.Peer{Addr: addr})
	if s == nil {
		return
	}
	l.mu.Lock()
	d := l.devices[s.Key.Device]
	l.mu.Unlock()
	if d == nil {
		return
	}
	d.mu.Lock()
	for _, o := range d.obs {
		l.saveLocked(d, o)
	}
	d.mu.Unlock()
}

// awaitSaved waits until o's first record is committed (without a store, at
// once), or ctx ends.
func (l *Listener) awaitSaved(ctx context.Context, d *device, o *observation) error {
	d.mu.Lock()
	ch := o.saved
	d.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: observation not written to the store: %v", udpgw.ErrUnavailable, ctx.Err())
	}
}

// pendingWrite is one record of a commit: a snapshot of o, or a deletion (o nil).
type pendingWrite struct {
	key string
	k   obsKey
	d   *device
	o   *observation
	rec observationRecord
}

// writer commits dirty records until the listener closes; Serve writes what
// is left after that (finalWrite).
func (l *Listener) writer() {
	retry := time.NewTimer(writeRetry)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-l.ps.kick:
		case <-retry.C:
		case <-l.ctx.Done():
			return
		}
		if !l.write(l.ctx) && l.ctx.Err() == nil {
			retry.Reset(writeRetry)
		}
	}
}

// finalWrite commits what is left at the end of Serve, for at most
// DrainTimeout (a stalled disk must not hold the shutdown forever).
func (l *Listener) finalWrite() {
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.DrainTimeout)
	defer cancel()
	l.write(ctx)
}

// write commits every dirty record, a batch at a time; false when a commit
// failed (its keys stay dirty).
func (l *Listener) write(ctx context.Context) bool {
	for {
		batch := l.takeDirty()
		if len(batch) == 0 {
			return true
		}
		if !l.commit(ctx, batch) {
			return false
		}
	}
}

// takeDirty takes up to writeBatch dirty keys that are in no commit and
// snapshots what the device table holds for each, then.
func (l *Listener) takeDirty() []pendingWrite {
	type taken struct {
		key string
		k   obsKey
	}
	var keys []taken
	l.ps.mu.Lock()
	for key, k := range l.ps.dirty {
		if len(keys) == writeBatch {
			break
		}
		if _, busy := l.ps.inflight[key]; busy {
			continue // its commit kicks the writer again
		}
		delete(l.ps.dirty, key)
		l.ps.inflight[key] = struct{}{}
		keys = append(keys, taken{key, k})
	}
	l.ps.mu.Unlock()
	if len(keys) == 0 {
		return nil
	}
	batch := make([]pendingWrite, 0, len(keys))
	for _, t := range keys {
		w := pendingWrite{key: t.key, k: t.k}
		l.mu.Lock()
		d := l.devices[t.k.device]
		l.mu.Unlock()
		if d != nil {
			d.mu.Lock()
			if o := d.obsLocked(t.k.token); o != nil && !o.ended && !d.gone && d.sess != nil {
				o.marked = false
				addr := d.sess.Addr()
				o.savedTo = addr
				w.d, w.o = d, o
				w.rec = observationRecord{Device: d.key, Token: o.token, Filter: o.filter, QoS: o.qos, Seq: o.seq, Addr: addr}
			}
			d.mu.Unlock()
		}
		if w.o != nil && !l.provenAddr(w.rec.Addr) {
			w.rec.Addr = netip.AddrPort{}
		}
		batch = append(batch, w)
	}
	return batch
}

// provenAddr reports whether a device at addr has proven it receives there:
// it has a go-coap connection, or a proof in l.sources (plain CoAP). A DTLS
// session proves nothing a restart keeps: the device handshakes again.
func (l *Listener) provenAddr(addr netip.AddrPort) bool {
	if l.dtls != nil || !addr.IsValid() {
		return false
	}
	return l.livePeer(addr) != nil || l.sources.IsProven(addr, l.env.Now())
}

// commit writes a batch (no lock held), then records what it made durable.
func (l *Listener) commit(ctx context.Context, batch []pendingWrite) bool {
	ops := make([]store.Op, 0, len(batch))
	puts := 0
	for i := range batch {
		w := &batch[i]
		op := store.Op{Kind: store.KindCoAPObservation, Key: w.key, Delete: true}
		if w.o != nil {
			v, err := appendObservationRecord(nil, &w.rec)
			if err != nil {
				// A filter or device name beyond 64 KiB: not from a
				// datagram of at most MaxDatagram; a stale record must not
				// come back.
				l.log.Error("coap: observation record not encodable: deleted", zap.String("device", w.rec.Device), zap.Error(err))
				w.o = nil
			} else {
				op.Value, op.Delete = v, false
				puts++
			}
		}
		ops = append(ops, op)
	}
	err := l.ps.st.Apply(ctx, ops...)
	l.ps.mu.Lock()
	for i := range batch {
		delete(l.ps.inflight, batch[i].key)
		if err != nil {
			if _, ok := l.ps.dirty[batch[i].key]; !ok {
				l.ps.dirty[batch[i].key] = batch[i].k
			}
		}
	}
	more := err == nil && len(l.ps.dirty) > 0
	logIt := err != nil && !errors.Is(err, store.ErrClosed) && !errors.Is(err, context.Canceled) && time.Since(l.ps.lastLog) >= time.Second
	if logIt {
		l.ps.lastLog = time.Now()
	}
	l.ps.mu.Unlock()
	if err != nil {
		l.ps.failed.Add(uint64(len(ops)))
		if logIt {
			l.log.Error("coap: observations not written to the store: retrying; their notifications may wait", zap.Int("records", len(ops)), zap.Error(err))
		}
		return false
	}
	l.ps.puts.Add(uint64(puts))
	l.ps.deletes.Add(uint64(len(ops) - puts))
	for i := range batch {
		w := &batch[i]
		if w.o == nil {
			continue
		}
		d, o := w.d, w.o
		d.mu.Lock()
		o.durable = w.rec.Seq
		if !o.committed {
			o.committed = true
			if o.saved != nil {
				close(o.saved)
			}
		}
		start := l.readyLocked(d) // notifications that waited for this record
		d.mu.Unlock()
		if start {
			l.schedule(d)
		}
	}
	if more {
		select {
		case l.ps.kick <- struct{}{}:
		default:
		}
	}
	return true
}

// restoreCounts are what restore found, for its log line.
type restoreCounts struct {
	restored, orphaned, others, overLimit, unreadable int
}

// restore reads the listener's records and puts their observations back,
// before Serve reads a datagram (see the notes above). A record that does not
// decode (damaged, or from a newer mqttgw) is logged and left alone.
func (l *Listener) restore() error {
	var (
		recs []observationRecord
		n    restoreCounts
	)
	err := l.ps.st.Range(store.KindCoAPObservation, func(key string, v []byte) bool {
		rest, ok := strings.CutPrefix(key, l.ps.prefix)
		if !ok {
			return true // another listener's
		}
		r, err := decodeObservationRecord(v)
		if err == nil && rest != r.Device+"\x00"+string(r.Token) {
			err = errors.New("device and token are not the key's")
		}
		if err != nil {
			if n.unreadable == 0 {
				l.log.Warn("coap: observation record not readable: left in the store, not restored", zap.Error(err))
			}
			n.unreadable++
			return true
		}
		recs = append(recs, r)
		return true
	})
	if err != nil {
		return fmt.Errorf("coap: %s: restore observations: %w", l.env.Name, err)
	}
	if len(recs) == 0 && n.unreadable == 0 {
		return nil
	}
	now := l.env.Now()
	type resub struct {
		d      *device
		filter string
		qos    byte
	}
	var subs []resub
	for i := range recs {
		r := &recs[i]
		key := l.ps.key(r.Device, r.Token)
		drop := func() { l.ps.mark(key, obsKey{device: r.Device, token: string(r.Token)}) } // nothing there: deleted
		s := l.env.Sessions.Lookup(session.Key{Listener: l.env.Name, Device: r.Device})
		if s == nil && l.opts.Shared {
			n.others++ // a device another instance of the fleet serves
			continue
		}
		if s == nil {
			// Its session was not kept, or was lost while the gateway was
			// down (its will is out): the observation ends with it.
			n.orphaned++
			drop()
			continue
		}
		d := l.lookup(r.Device)
		l.mu.Lock()
		full := l.perTopic[r.Filter] >= l.opts.MaxObserversPerTopic
		if !full {
			l.perTopic[r.Filter]++
		}
		l.mu.Unlock()
		o := &observation{token: bytes.Clone(r.Token), filter: r.Filter, qos: r.QoS,
			seq: (r.Seq + seqWindow) & seqMask, durable: r.Seq, armed: true, committed: true}
		d.mu.Lock()
		if full || d.obsLocked(string(r.Token)) != nil || len(d.obs) >= l.opts.MaxObserversPerDevice {
			d.mu.Unlock()
			if !full {
				l.mu.Lock()
				l.perTopic[r.Filter]--
				l.mu.Unlock()
			}
			n.overLimit++
			drop()
			continue
		}
		if d.sess == nil {
			d.sess = s
		}
		subscribed := d.addObsLocked(o)
		// A record of the new base before the first notification.
		l.saveLocked(d, o)
		d.mu.Unlock()
		if subscribed == 0 {
			subs = append(subs, resub{d, r.Filter, r.QoS})
		}
		switch {
		case l.sources == nil: // coaps: the handshake proves
		case r.Addr.IsValid() && r.Addr == s.Addr():
			l.sources.Prove(r.Addr, now)
		default:
			// Not proven before the restart (its record has no address):
			// it gets again what its registration brought, the budget of
			// a small request, so that its first notification, which is
			// Confirmable, can go and its ACK prove the address; and it
			// is watched as a new registration is, ended if the address
			// has not proven itself within UnprovenTTL. Without the
			// budget nothing could ever go to it: an unproven source's
			// budget comes from what it sends, and an observer sends
			// nothing.
			l.sources.Received(s.Addr(), restoredBudget, now, nil)
			l.watchObserver(s.Addr(), d, o, now)
		}
		n.restored++
	}
	for _, s := range subs {
		l.goStart(func() { l.resubscribe(s.d, s.filter, s.qos) })
	}
	l.log.Info("observations restored", zap.Int("restored", n.restored), zap.Int("device_gone", n.orphaned), zap.Int("other_instances", n.others),
		zap.Int("over_limits", n.overLimit), zap.Int("unreadable", n.unreadable))
	return nil
}

// resubscribe makes a restored observation's subscription again at the
// broker. A broker away is not a refusal: the gateway subscribes once it is
// back. A refusal (the ACL changed) ends the filter's observations.
func (l *Listener) resubscribe(d *device, filter string, qos byte) {
	d.subOp.Lock()
	ctx, cancel := context.WithTimeout(l.ctx, l.opts.PublishTimeout)
	_, err := l.env.Broker.Subscribe(ctx, d.key, filter, qos, l.deliverer(d))
	cancel()
	d.subOp.Unlock()
	switch {
	case err == nil:
		return
	case errors.Is(err, udpgw.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		l.log.Warn("coap: restored observation's subscription not confirmed by the broker", zap.String("device", d.key), zap.String("filter", filter), zap.Error(err))
		return
	}
	l.log.Warn("coap: restored observation's subscription refused: observation ended", zap.String("device", d.key), zap.String("filter", filter), zap.Error(err))
	d.mu.Lock()
	var ended []*observation
	for _, o := range d.obs {
		if o.filter == filter {
			ended = append(ended, o)
		}
	}
	d.mu.Unlock()
	for _, o := range ended {
		l.endObservation(d, o, endError, false)
	}
	d.mu.Lock()
	d.dropSubLocked(filter)
	d.mu.Unlock()
}
