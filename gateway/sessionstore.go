package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/metrics"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/store"
)

// Synthetic sessions across a restart (issue 10, "Restarts"). With [store]
// dir, the sessions of CoAP and plain-UDP devices (the registry's, created by
// a device's first datagram) are kept in the store under store.KindSession,
// one record per device (sessionrecord.go), keyed by the listener's name, a
// NUL and the device id: its class name, last address, first and last contact
// and user. MQTT-SN sessions are not here: the MQTT-SN engine keeps its
// persistent clients itself (KindMQTTSNSession), registry session included.
//
// # Writes
//
// sessionKeeper is the session.Saver of those listeners. The registry tells it
// which sessions changed (created, moved, user or class changed, ended or
// lost, or their traffic past the save mark: session.SaveEvery, a quarter
// keepalive), never under a lock of its own and never per datagram of a device
// whose save is not due. The keeper only marks the device's key dirty; its one
// writer goroutine snapshots the dirty sessions (Session.Save, off the
// datagram's path) and commits them, up to saveBatch at a time, in one
// State.Apply each: a record for a live session, a deletion for one that
// ended or was lost (its will is out: nothing to continue). A key is in at
// most one commit at a time, so its writes reach the store in order; a
// failed commit leaves its keys dirty and is retried every keeperRetry.
//
// # Precision of last seen
//
// A record's last-seen time is at most a quarter keepalive older than the
// device's real last datagram (plus the commit's latency), so after a restart
// the session is lost at the earliest 1.25 keepalives after that datagram:
// never because of the restart for a device that keeps its keepalive, and
// never later than 1.5 keepalives after the saved time.
//
// # Restore
//
// newListener restores a listener's records before anything is served
// (Registry.Restore: no Created hook, so no second birth), gives each device
// its class again from the config in force (keepalive and will; the record's
// class name is only compared, and a change logged), then runs the registry's
// expiry once: a device whose 1.5 keepalives ran out while the gateway was down
// is lost there, its will published once through the usual path
// (sessionLost), its record deleted. A record that does not decode is logged
// and left in the store.
//
// The record of a session that ended or was lost is deleted deleteGrace after
// the keeper heard of it: a lost session's will is handed to the proxy, which
// writes it to the store's queue in the background (it has no call that
// waits for that), and the record must not go first: a crash between the two
// would lose the will. With the grace that takes a queue write stalled for
// longer than it; a crash within the grace publishes the will twice (the
// restored session is lost again at start). A device heard between its last
// save and a crash may show an older last-seen time after the restart, within
// the precision above. With [cluster] the records are the fleet's:
// fleetsessions.go says what differs (ownership, fenced writes, no restore).

// saveBatch bounds the records of one commit (at most 1000: one atomic batch
// of the JetStream backend); keeperRetry is how long a failed commit waits
// before the next try.
const (
	saveBatch   = 1000
	keeperRetry = time.Second
	deleteGrace = time.Second
)

// sessionKeeper keeps the synthetic sessions of the store's listeners.
type sessionKeeper struct {
	g    *Gateway
	st   store.State
	log  *zap.Logger
	kick chan struct{} // capacity 1: the writer has work

	// mu guards dirty, inflight, gone and lastLog, and the maps of fl. It
	// is taken alone, or before the registry's locks (take looks sessions
	// up); the registry calls SessionDirty with none of its own held.
	mu       sync.Mutex
	dirty    map[session.Key]struct{}
	inflight map[session.Key]struct{}
	gone     map[session.Key]time.Time // sessions no longer live: their deletion is due then (deleteGrace)
	lastLog  time.Time                 // of a failed commit: at most one line a second

	stop chan struct{} // closed by close
	done chan struct{} // closed when the writer returned

	fl *fleetKeeper // with [cluster]: ownership of the devices; nil otherwise

	puts, deletes, failed *metrics.Counter
}

// keeper returns the session keeper of one machine's store (restored at
// start); nil without a store, and with [cluster], whose keeper
// (sessionsKeeper) restores nothing: CoAP observations, kept with their
// devices' sessions on one machine (coap.go), are not in a fleet yet.
func (g *Gateway) keeper() *sessionKeeper {
	if g.cfg.Clustered() {
		return nil
	}
	return g.sessionsKeeper()
}

// sessionsKeeper returns the gateway's session keeper, made on first use; nil
// without a store. With [cluster] it writes to the fleet's store, for the
// devices this instance holds (fleetsessions.go).
func (g *Gateway) sessionsKeeper() *sessionKeeper {
	if g.store == nil {
		return nil
	}
	if g.sessionKeeper == nil {
		k := &sessionKeeper{g: g, st: g.store.State(), log: g.log.Named("sessions"), kick: make(chan struct{}, 1),
			dirty: map[session.Key]struct{}{}, inflight: map[session.Key]struct{}{}, gone: map[session.Key]time.Time{}}
		if o := g.sessionOwners(); o != nil {
			k.fl = newFleetKeeper(k, o, g.cfg.Cluster.OwnerLease.D())
		}
		c := func(result string) *metrics.Counter {
			return g.metrics.Counter("mqttgw_session_writes_total",
				"CoAP and plain-UDP device session records written to the store (put, delete) or whose commit failed (failed, retried).", "result", result)
		}
		k.puts, k.deletes, k.failed = c("put"), c("delete"), c("failed")
		g.metrics.GaugeFunc("mqttgw_session_writes_pending", "CoAP and plain-UDP device session records changed and not yet committed to the store.",
			func() float64 { return float64(k.pending()) })
		g.sessionKeeper = k
	}
	return g.sessionKeeper
}

// keepsSessions reports whether lc's sessions are the keeper's: the synthetic
// ones of CoAP and plain-UDP listeners.
func keepsSessions(lc config.Listener) bool {
	switch lc.Type {
	case config.ListenerUDP, config.ListenerCoAP, config.ListenerCoAPS:
		return true
	}
	return false
}

// SessionDirty implements session.Saver: it only marks the key.
func (k *sessionKeeper) SessionDirty(s *session.Session) { k.markDirty(s.Key) }

// markDirty marks key for the writer.
func (k *sessionKeeper) markDirty(key session.Key) {
	k.mu.Lock()
	k.dirty[key] = struct{}{}
	k.mu.Unlock()
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

// pending is the number of keys waiting for a commit.
func (k *sessionKeeper) pending() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := len(k.inflight)
	for key := range k.dirty {
		if _, ok := k.inflight[key]; !ok {
			n++
		}
	}
	for key := range k.gone {
		_, d := k.dirty[key]
		if _, ok := k.inflight[key]; !ok && !d {
			n++
		}
	}
	return n
}

// start starts the writer; Run calls it once the gateway runs, and close after
// the listeners stopped.
func (k *sessionKeeper) start() {
	if k == nil {
		return
	}
	k.stop, k.done = make(chan struct{}), make(chan struct{})
	if k.fl != nil {
		k.fl.mine = nil // New's, done with
		k.fl.running.Store(true)
	}
	go k.run()
}

// close stops the writer after a last write of what is dirty, bounded by the
// gateway's drain timeout (in a fleet, after the device takes under way).
func (k *sessionKeeper) close() {
	if k == nil || k.stop == nil {
		return
	}
	close(k.stop)
	<-k.done
	if k.fl != nil {
		k.fl.stopWatch()
	}
}

func (k *sessionKeeper) run() {
	defer close(k.done)
	retry := time.NewTimer(keeperRetry)
	retry.Stop()
	defer retry.Stop()
	if k.fl != nil {
		retry.Reset(k.fl.lease) // the first scan for orphans
	}
	for {
		select {
		case <-k.kick:
		case <-retry.C:
		case <-k.stop:
			if k.fl != nil {
				k.fl.close() // the takes under way, whose records are due
			}
			// No grace now: the wills handed to the proxy are written to
			// the store's queue by its Close, which Run calls next.
			ctx, cancel := context.WithTimeout(context.Background(), k.g.cfg.Gateway.DrainTimeout.D())
			k.write(ctx, true)
			cancel()
			return
		}
		ok := k.write(context.Background(), false)
		if now := time.Now(); k.fl != nil && k.fl.scanDue(now) {
			k.fl.scan(context.Background(), now)
		}
		switch next := k.nextDue(); {
		case !ok:
			retry.Reset(keeperRetry)
		case !next.IsZero():
			retry.Reset(max(time.Until(next), time.Millisecond))
		}
	}
}

// nextDue is when the next deferred deletion is due (in a fleet, also the
// next retake or scan for orphans); zero when none waits.
func (k *sessionKeeper) nextDue() time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	var next time.Time
	for _, at := range k.gone {
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	if k.fl != nil {
		for _, at := range []time.Time{k.fl.nextRetakeLocked(), k.fl.nextScan} {
			if !at.IsZero() && (next.IsZero() || at.Before(next)) {
				next = at
			}
		}
	}
	return next
}

// write commits every dirty key, a batch at a time, and the deletions whose
// grace has passed (all of them when final); false when a commit failed (its
// keys stay dirty).
func (k *sessionKeeper) write(ctx context.Context, final bool) bool {
	for {
		keys, revs := k.take(time.Now(), final)
		if len(keys) == 0 {
			return true
		}
		if !k.commit(ctx, keys, revs) {
			return false
		}
	}
}

// take moves up to saveBatch keys that are in no commit into flight: dirty
// keys of live sessions, and the deletions whose grace has passed (all of
// them when final). A dirty key whose session is no longer live waits in
// gone for deleteGrace first; one that came back meanwhile is written. In a
// fleet, revs are the revisions that fence their writes: a key waiting for
// its device's take stays dirty, one not held here is dropped.
func (k *sessionKeeper) take(now time.Time, final bool) (keys []session.Key, revs []uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	add := func(key session.Key, rev uint64) bool {
		if len(keys) == saveBatch {
			return false
		}
		if _, busy := k.inflight[key]; busy {
			return true // its commit kicks the writer again
		}
		k.inflight[key] = struct{}{}
		keys = append(keys, key)
		if k.fl != nil {
			revs = append(revs, rev)
		}
		return true
	}
	// fenced is key's fence in a fleet; wait: not yet known, drop: not
	// held here.
	fenced := func(key session.Key) (rev uint64, wait, drop bool) {
		if k.fl == nil {
			return 0, false, false
		}
		rev, wait = k.fl.writableLocked(key, now)
		return rev, wait, !wait && rev == 0
	}
	for key := range k.dirty {
		if _, busy := k.inflight[key]; busy {
			continue
		}
		rev, wait, drop := fenced(key)
		switch {
		case wait:
			continue
		case drop:
			delete(k.dirty, key)
			delete(k.gone, key)
			continue
		}
		if k.g.sessions.Lookup(key) == nil {
			if _, waiting := k.gone[key]; !waiting {
				k.gone[key] = now.Add(deleteGrace)
			}
			delete(k.dirty, key)
			continue
		}
		delete(k.gone, key) // it came back: a record, not a deletion
		if !add(key, rev) {
			break
		}
		delete(k.dirty, key)
	}
	for key, at := range k.gone {
		if !final && now.Before(at) {
			continue
		}
		if _, busy := k.inflight[key]; busy {
			continue
		}
		rev, wait, drop := fenced(key)
		switch {
		case wait:
			continue
		case drop:
			delete(k.gone, key)
			continue
		}
		if !add(key, rev) {
			break
		}
		delete(k.gone, key)
	}
	return keys, revs
}

// commit writes the records of keys as the registry has them now (no lock
// held): the live session's record, or a deletion; in a fleet fenced by revs,
// and the devices whose write was refused are let go.
func (k *sessionKeeper) commit(ctx context.Context, keys []session.Key, revs []uint64) bool {
	ops := make([]store.Op, 0, len(keys))
	puts := 0
	for _, key := range keys {
		op := store.Op{Kind: store.KindSession, Key: recordKey(key), Delete: true}
		if s := k.g.sessions.Lookup(key); s != nil {
			if v, live := s.Save(); live {
				b, err := appendDeviceRecord(nil, &deviceRecord{Device: key.Device, Saved: v})
				if err != nil {
					// A device id or user beyond 64 KiB: cannot come from a
					// datagram; a stale record must not come back.
					k.log.Error("device session record not encodable: deleted", zapListener(key.Listener), zap.String("device", key.Device), zap.Error(err))
				} else {
					op.Value, op.Delete = b, false
					puts++
				}
			}
		}
		ops = append(ops, op)
	}
	var (
		err  error
		lost []int
	)
	if k.fl != nil {
		lost, err = k.fl.owners.ApplyOwned(ctx, ops, revs)
	} else {
		err = k.st.Apply(ctx, ops...)
	}
	refused := make(map[int]bool, len(lost))
	for _, i := range lost {
		refused[i] = true
		if !ops[i].Delete {
			puts--
		}
	}
	var deleted []session.Key
	k.mu.Lock()
	for i, key := range keys {
		delete(k.inflight, key)
		switch {
		case refused[i]:
		case err != nil:
			k.dirty[key] = struct{}{}
		case ops[i].Delete:
			deleted = append(deleted, key)
		}
	}
	if k.fl != nil && err == nil {
		k.fl.committedLocked(deleted)
	}
	more := err == nil && len(k.dirty) > 0
	logIt := err != nil && !errors.Is(err, store.ErrClosed) && time.Since(k.lastLog) >= time.Second
	if logIt {
		k.lastLog = time.Now()
	}
	k.mu.Unlock()
	for _, i := range lost {
		k.fl.letGoOf(keys[i], revs[i], letGoFenced) // another instance took it: the record is its
	}
	if err != nil {
		k.failed.Add(uint64(len(ops) - len(lost)))
		if logIt {
			k.log.Error("device sessions not written to the store: retrying", zap.Int("records", len(ops)), zap.Error(err))
		}
		return false
	}
	k.puts.Add(uint64(puts))
	k.deletes.Add(uint64(len(ops) - len(lost) - puts))
	if more {
		select {
		case k.kick <- struct{}{}:
		default:
		}
	}
	return true
}

// recordKey is a session's key in the store: the listener's name, a NUL, the
// device id (a listener's name holds no NUL).
func recordKey(k session.Key) string { return k.Listener + "\x00" + k.Device }

// restore puts lc's kept sessions back into the registry, before anything is
// served (see the notes above), and loses at once those whose keepalive ran
// out while the gateway was down.
func (k *sessionKeeper) restore(lc config.Listener) error {
	prefix := lc.Name + "\x00"
	var (
		recs       []deviceRecord
		unreadable int
	)
	err := k.st.Range(store.KindSession, func(key string, v []byte) bool {
		dev, ok := strings.CutPrefix(key, prefix)
		if !ok {
			return true // another listener's
		}
		r, err := decodeDeviceRecord(v)
		if err == nil && r.Device != dev {
			err = errors.New("device id is not the key's")
		}
		if err != nil {
			if unreadable == 0 {
				k.log.Warn("device session record not readable: left in the store, not restored", zapListener(lc.Name), zap.String("device", dev), zap.Error(err))
			}
			unreadable++
			return true
		}
		recs = append(recs, r)
		return true
	})
	if err != nil {
		return fmt.Errorf("gateway: listener %q: restore device sessions: %w", lc.Name, err)
	}
	if len(recs) == 0 && unreadable == 0 {
		return nil
	}
	restored := 0
	for i := range recs {
		r := &recs[i]
		s := k.g.sessions.Restore(session.Key{Listener: lc.Name, Device: r.Device}, r.Saved)
		if s == nil {
			continue
		}
		restored++ // its class again: the Restored hook
		if c := s.Class(); c != r.Class {
			k.log.Info("device's class changed since it was saved: the config's applies", zapListener(lc.Name),
				zap.String("device", r.Device), zap.String("saved", r.Class), zap.String("class", c))
		}
	}
	// The registry's expiry, once, before any datagram: a restored session
	// silent for 1.5 keepalives is lost now, its will published once.
	lost := 0
	k.g.sessions.Expire(time.Now(), func(s *session.Session) {
		if s.Key.Listener == lc.Name {
			lost++
		}
		k.g.sessionLost(s)
	})
	k.log.Info("device sessions restored", zapListener(lc.Name), zap.Int("active", restored-lost),
		zap.Int("lost_while_down", lost), zap.Int("unreadable", unreadable))
	return nil
}
