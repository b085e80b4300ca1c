package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/metrics"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/store"
)

// Synthetic sessions across a fleet (issue 13). With [cluster] the records of
// the CoAP and plain-UDP devices' sessions (sessionrecord.go) live in the
// fleet's JetStream bucket, which every instance shares, and a device is
// served by one instance at a time: the owner key of its record's key
// (store/natsstore/owner.go) names it. The design is the MQTT-SN engine's
// (udpgw/mqttsn/fleet.go), applied to the registry's sessions.
//
// # First datagram at an instance
//
// The registry's Created hook (sessionCreated) gives the new session its
// class at once (keepalive, will) but holds its birth: the device may come
// from another instance, where its session is still live. A loader goroutine
// (at most maxSessionLoads at once; the others wait in a queue, never the
// reader) takes the device's owner key (Take: the device is here now) and
// then reads its record, so the read sees every write the previous owner got
// in. A record whose last-seen time is within 1.5 keepalives is a live
// session moving here: it continues, with its first contact, and no birth; no
// record, or an older one, is a new session: the birth goes out as on one
// machine. Until its load ends, the device's record is not written.
//
// A Take (or read) that fails, the fleet's store away (after the store's
// own timeout), fails open: the birth goes out (a device must not go without
// its online status because the store is away; a second birth is the lesser
// harm), and the device is taken again, without a birth, every keeperRetry
// while its session lives, until a take succeeds. Meanwhile its record is not
// written. As the reader does not wait for the take, a device's first
// datagram's publishes may reach the broker before its birth.
//
// # Fenced writes, letting go
//
// The keeper writes a device's record only while it holds the device, with
// ApplyOwned fenced by the revision taken: once another instance took it, the
// write is refused. The keeper also watches the owner keys (WatchOwners, from
// New to the keeper's close). When another instance took a device held here
// at a later revision, or a write was refused, the device is let go: its
// session leaves the registry as taken over (no will, no offline status),
// its engine is told (a CoAP device's observations end), and nothing of it is
// written any more (the record is the new owner's). Its next datagram here
// takes it back, and continues its session from the record. Until the watch
// reports a take (a round trip or so), both instances may serve the device; a
// device that comes back to the old instance within that moment is let go
// there at its next write and taken again at its next datagram. In the same
// moment, a device silent at the old instance for nearly 1.5 keepalives that
// speaks at the new one may still be lost at the old one, its will published
// there, before the watch reports the take.
//
// A session lost here (its will published) has its record deleted, fenced,
// as on one machine, and the revision forgotten.
//
// # Orphans
//
// An instance that dies (kill -9, lost machine) or stops publishes no wills.
// Every owner lease the keeper reads the records (all of them: a Range of
// the bucket's sessions) and looks at those whose session ran out (last seen
// more than 1.5 keepalives ago, an owner read each): one whose owner is not
// alive (its live key expired), or is this instance without the device held
// (restarted under the same id), is adopted with a conditional take (TakeFrom: only if the
// owner key is still at the revision read, so one instance adopts it) and
// restored in the registry (Registry.Restore: no birth), whose next expiry
// publishes its will, once, and deletes its record. A record whose session is
// still within its keepalive is left alone: the device's next datagram, at
// whichever instance, takes it; if it stays silent, a later scan adopts it.
//
// # At start
//
// The records are the fleet's: only the live sessions whose owner key names
// this instance are restored (restoreOwned), those of its own run before a
// restart under the same id (kill -9, or a stop within the lease), as on one
// machine: no birth, and the CoAP engine then restores their observations
// (udpgw/coap persist.go, Options.Shared), which a device's next datagram
// could not bring back. A record of this instance whose keepalive ran out is
// left to the scan for orphans (its will). Every other device's next
// datagram continues its session wherever it lands.

// maxSessionLoads bounds the loader goroutines at once. A take is a write:
// the store retries it until its own timeout (natsstore.Options.Timeout)
// whatever the context, which only stops one not yet started.
const (
	maxSessionLoads = 64
	loadTimeout     = 5 * time.Second
)

// sessionOwners is the fleet's device ownership (store/natsstore's Store):
// MQTT-SN's Owners and what the adoption of orphans needs.
type sessionOwners interface {
	Instance() string
	Take(ctx context.Context, key string) (rev uint64, prev string, err error)
	TakeFrom(ctx context.Context, key string, rev uint64) (newRev uint64, ok bool, err error)
	Owner(key string) (instance string, rev uint64, err error)
	Alive(instance string) (bool, error)
	ApplyOwned(ctx context.Context, ops []store.Op, revs []uint64) (lost []int, err error)
	WatchOwners(fn func(key, instance string, rev uint64)) (stop func(), err error)
	RangeOwners(fn func(key, instance string, rev uint64) bool) error
}

// fleetKeeper is the keeper's fleet side (nil without [cluster]). Its maps are
// guarded by the keeper's mu (lock order there).
type fleetKeeper struct {
	k      *sessionKeeper
	owners sessionOwners
	me     string
	// keepalives are the keeper's listeners' default keepalives; set in New,
	// read-only after.
	keepalives map[string]time.Duration
	lease      time.Duration // between two scans for orphans

	owned    map[session.Key]uint64     // devices held here → revision taken: the fence of their writes
	loading  map[session.Key]*fleetLoad // devices being taken (queued or under way)
	queue    []session.Key              // loads waiting for a loader, oldest first
	loaders  int                        // loader goroutines running
	retake   map[session.Key]time.Time  // live sessions whose take failed → when to try again
	birthDue map[*session.Session]bool  // sessions whose Created hook a loader runs again, for the birth
	closed   bool                       // the keeper stops: no new loads
	nextScan time.Time                  // of orphans
	lastLog  time.Time                  // of a failed take: at most one line a second
	wg       sync.WaitGroup             // loaders
	stop     func()                     // ends the watch of the owner keys
	// mine are the device keys this instance owned at start, by listener:
	// restoreOwned's one read of the owner keys, for New only (start
	// drops it).
	mine map[string][]ownedKey
	// running is set by the keeper's start, once New made every listener:
	// the watch, which starts in New, ignores the owner keys until then
	// (nothing is held here yet) rather than read keepalives while New
	// writes it.
	running atomic.Bool

	loads   map[string]*[loadResults]*metrics.Counter // by listener
	letGo   map[string]*[letGoReasons]*metrics.Counter
	adopted map[string]*metrics.Counter
}

// fleetLoad is one device's take under way.
type fleetLoad struct {
	s     *session.Session // the device's latest session here
	birth bool             // the load decides the birth (first contact here); false: a retake after a failed one
}

// loadResult is how a device's first datagram at this instance was settled.
type loadResult uint8

const (
	loadContinued loadResult = iota // a live record: the session continues here, no birth
	loadNew                         // no live record: a new session, its birth published
	loadFailed                      // the take or the read failed: birth published, taken again later
	loadResults
)

var loadNames = [loadResults]string{"continued", "new", "failed"}

func (r loadResult) String() string { return loadNames[r] }

// letGoReason says how the keeper learnt that another instance took a device.
type letGoReason uint8

const (
	letGoTaken  letGoReason = iota // the watch of the owner keys
	letGoFenced                    // a write of its record was refused
	letGoReasons
)

var letGoNames = [letGoReasons]string{"taken", "fenced"}

func (r letGoReason) String() string { return letGoNames[r] }

func newFleetKeeper(k *sessionKeeper, o sessionOwners, lease time.Duration) *fleetKeeper {
	return &fleetKeeper{k: k, owners: o, me: o.Instance(), keepalives: map[string]time.Duration{}, lease: lease,
		owned: map[session.Key]uint64{}, loading: map[session.Key]*fleetLoad{}, retake: map[session.Key]time.Time{},
		birthDue: map[*session.Session]bool{}, nextScan: time.Now().Add(lease),
		loads: map[string]*[loadResults]*metrics.Counter{}, letGo: map[string]*[letGoReasons]*metrics.Counter{}, adopted: map[string]*metrics.Counter{}}
}

// addListener makes the keeper serve listener's sessions in the fleet (New):
// its counters, and the watch of the owner keys once.
func (f *fleetKeeper) addListener(name string, keepalive time.Duration) error {
	m := f.k.g.metrics
	f.keepalives[name] = keepalive
	var lc [loadResults]*metrics.Counter
	for r := range loadResults {
		lc[r] = m.Counter("mqttgw_fleet_session_loads_total",
			"CoAP and plain-UDP devices taken by this instance on their first datagram here (continued: a live session from the fleet's store, no birth; new: birth published; failed: the store did not answer, birth published).",
			"listener", name, "result", r.String())
	}
	var lg [letGoReasons]*metrics.Counter
	for r := range letGoReasons {
		lg[r] = m.Counter("mqttgw_fleet_sessions_let_go_total",
			"CoAP and plain-UDP device sessions this instance ended, without a will, because another instance of the fleet took the device (taken: seen on the owner key; fenced: a record write was refused).",
			"listener", name, "reason", r.String())
	}
	f.loads[name], f.letGo[name] = &lc, &lg
	f.adopted[name] = m.Counter("mqttgw_fleet_sessions_adopted_total",
		"CoAP and plain-UDP device sessions of a dead instance (or of this one before a restart) adopted here to publish their will.", "listener", name)
	if f.stop != nil {
		return nil
	}
	stop, err := f.owners.WatchOwners(f.watched)
	if err != nil {
		return err
	}
	f.stop = stop
	return nil
}

// restoreOwned puts back, before listener serves, the live sessions of its
// devices that this instance owns (see "At start"). It reads the owner keys
// once, then each owned device's record.
func (f *fleetKeeper) restoreOwned(listener string) error {
	if f.mine == nil {
		// One pass for every listener New makes; start drops it.
		f.mine = map[string][]ownedKey{}
		err := f.owners.RangeOwners(func(rk, instance string, rev uint64) bool {
			if l, d, ok := strings.Cut(rk, "\x00"); ok && instance == f.me {
				f.mine[l] = append(f.mine[l], ownedKey{session.Key{Listener: l, Device: d}, rev})
			}
			return true
		})
		if err != nil {
			f.mine = nil // the next listener tries again
			return fmt.Errorf("this instance's device sessions: %w", err)
		}
	}
	now, restored := time.Now(), 0
	for _, o := range f.mine[listener] {
		r, err := f.read(recordKey(o.key), o.key.Device)
		if err != nil {
			return fmt.Errorf("this instance's device sessions: %w", err)
		}
		if r == nil || !recordLive(r, f.keepalive(o.key), now) {
			continue // none, or lost meanwhile: the scan for orphans publishes its will
		}
		f.k.mu.Lock()
		f.owned[o.key] = o.rev
		f.k.mu.Unlock()
		if f.k.g.sessions.Restore(o.key, r.Saved) != nil { // its class: the Restored hook
			restored++
		}
	}
	if restored > 0 {
		f.k.log.Info("device sessions of this instance restored", zapListener(listener), zap.Int("sessions", restored))
	}
	return nil
}

// ownedKey is a device key this instance owned at start, at rev.
type ownedKey struct {
	key session.Key
	rev uint64
}

// keeps reports whether key's session is a fleet session kept here.
func (f *fleetKeeper) keeps(key session.Key) bool {
	_, ok := f.keepalives[key.Listener]
	return ok
}

// fleetCreated is the fleet's part of the Created hook: in a fleet, a kept
// session gets its class at once and its birth once its load decided it; it
// reports whether it did so (sessionCreated then returns).
func (g *Gateway) fleetCreated(s *session.Session) bool {
	k := g.sessionKeeper
	if k == nil || k.fl == nil || !k.fl.keeps(s.Key) {
		return false
	}
	f := k.fl
	k.mu.Lock()
	if f.birthDue[s] {
		delete(f.birthDue, s) // the loader's call: the birth goes out
		k.mu.Unlock()
		return false
	}
	if f.closed {
		k.mu.Unlock()
		return false
	}
	k.mu.Unlock()
	g.applyClass(s)
	k.mu.Lock()
	f.queueLoadLocked(s, true)
	k.mu.Unlock()
	return true
}

// queueLoadLocked queues the take of s's device and starts a loader when
// fewer than maxSessionLoads run. k.mu is held.
func (f *fleetKeeper) queueLoadLocked(s *session.Session, birth bool) {
	if l := f.loading[s.Key]; l != nil {
		l.s, l.birth = s, l.birth || birth // lost and back while queued: the latest session
		return
	}
	delete(f.retake, s.Key)
	f.loading[s.Key] = &fleetLoad{s: s, birth: birth}
	f.k.g.fences.pending(s.Key) // until its take answers: it may have moved here (fence.go)
	f.queue = append(f.queue, s.Key)
	if f.loaders < maxSessionLoads {
		f.loaders++
		f.wg.Go(f.loader)
	}
}

// loader takes queued devices until the queue is empty.
func (f *fleetKeeper) loader() {
	k := f.k
	for {
		k.mu.Lock()
		if len(f.queue) == 0 {
			f.loaders--
			f.queue = nil // the backing array of a burst goes
			k.mu.Unlock()
			return
		}
		key := f.queue[0]
		f.queue[0] = session.Key{}
		f.queue = f.queue[1:]
		k.mu.Unlock()
		f.load(key)
	}
}

// load takes key's owner key, reads its record (no lock held), and settles
// the device's session: continued, or born here.
func (f *fleetKeeper) load(key session.Key) {
	k := f.k
	rk := recordKey(key)
	ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
	rev, prev, err := f.owners.Take(ctx, rk)
	cancel()
	var rec *deviceRecord
	if err == nil {
		rec, err = f.read(rk, key.Device)
	}
	now := time.Now()
	k.mu.Lock()
	l := f.loading[key]
	delete(f.loading, key)
	if err == nil {
		f.owned[key] = rev
	} else {
		f.retake[key] = now.Add(keeperRetry)
	}
	s, birth := l.s, l.birth
	k.mu.Unlock()

	result := loadNew
	switch {
	case err != nil:
		result = loadFailed
		f.logFailed(key, err)
	case rec != nil && recordLive(rec, s.Keepalive(), now):
		result = loadContinued
		s.SetCreated(rec.Created)
		if ce := k.log.Check(zap.DebugLevel, "device session continued from another instance"); ce != nil && prev != f.me {
			ce.Write(zapListener(key.Listener), zap.String("device", key.Device), zap.String("from", prev))
		}
	}
	if birth {
		f.loads[key.Listener][result].Inc()
		if result != loadContinued && s.Live() {
			k.mu.Lock()
			f.birthDue[s] = true
			k.mu.Unlock()
			k.g.sessionCreated(s) // fleetCreated lets it through, once
		}
	}
	// Its record, held back during the load, is written now (fenced), or
	// its deletion when the session ended meanwhile.
	k.markDirty(key)
}

// read reads key's record; nil when there is none. A record that does not
// decode is logged and taken as none: the session starts anew.
func (f *fleetKeeper) read(rk, device string) (*deviceRecord, error) {
	v, ok, err := f.k.st.Get(store.KindSession, rk)
	if err != nil || !ok {
		return nil, err
	}
	r, err := decodeDeviceRecord(v)
	if err == nil && r.Device != device {
		err = errors.New("device id is not the key's")
	}
	if err != nil {
		f.k.log.Warn("device session record not readable: a new session starts", zap.String("device", device), zap.Error(err))
		return nil, nil
	}
	return &r, nil
}

// recordLive reports whether a record's session is still live at now: last
// seen within 1.5 keepalives (the record's last seen time lags the device's
// real one by at most a quarter keepalive: sessionstore.go), or never lost.
func recordLive(r *deviceRecord, keepalive time.Duration, now time.Time) bool {
	return keepalive <= 0 || now.Sub(r.LastSeen) <= keepalive*3/2
}

// logFailed logs a failed take, at most once a second.
func (f *fleetKeeper) logFailed(key session.Key, err error) {
	if errors.Is(err, store.ErrClosed) || errors.Is(err, context.Canceled) {
		return
	}
	f.k.mu.Lock()
	logIt := time.Since(f.lastLog) >= time.Second
	if logIt {
		f.lastLog = time.Now()
	}
	f.k.mu.Unlock()
	if logIt {
		f.k.log.Warn("device not taken in the fleet's store: its birth is published, its session not written until a take succeeds",
			zapListener(key.Listener), zap.String("device", key.Device), zap.Error(err))
	}
}

// watched is the watch of the owner keys: a device held here that another
// instance took at a later revision is let go. It runs on the store's
// watch goroutine and takes only the keeper's and the registry's locks.
func (f *fleetKeeper) watched(rk, instance string, rev uint64) {
	if instance == f.me || !f.running.Load() {
		return
	}
	listener, device, ok := strings.Cut(rk, "\x00")
	key := session.Key{Listener: listener, Device: device}
	if !ok || !f.keeps(key) {
		return // an MQTT-SN client, or another fleet's
	}
	f.k.mu.Lock()
	r, held := f.owned[key]
	f.k.mu.Unlock()
	if held && rev > r {
		f.letGoOf(key, r, letGoTaken)
	}
}

// letGoOf stops serving key's device, which another instance took: unless
// it was taken again here since rev, its session leaves the registry as taken
// over (no will), its engine drops its protocol state, and nothing of it is
// written any more.
func (f *fleetKeeper) letGoOf(key session.Key, rev uint64, why letGoReason) {
	k := f.k
	k.mu.Lock()
	if r, held := f.owned[key]; !held || r != rev {
		k.mu.Unlock()
		return
	}
	delete(f.owned, key)
	delete(k.dirty, key)
	delete(k.gone, key)
	k.mu.Unlock()
	s := k.g.sessions.Lookup(key)
	if s == nil || !k.g.sessions.End(s, session.EndTakenOver) {
		return
	}
	f.letGo[key.Listener][why].Inc()
	if ce := k.log.Check(zap.DebugLevel, "device let go: another instance took it over"); ce != nil {
		ce.Write(zapListener(key.Listener), zap.String("device", key.Device), zap.Stringer("how", why))
	}
	if o := k.g.sessionOwner(key.Listener); o != nil {
		o.SessionEnded(s, session.EndTakenOver)
	}
}

// sessionOwner is the engine that owns listener's sessions, or nil.
func (g *Gateway) sessionOwner(listener string) session.Owner {
	for _, l := range g.listeners {
		if l.Name() == listener {
			o, _ := l.(session.Owner)
			return o
		}
	}
	return nil
}

// writable sorts a dirty key for the keeper's take: the revision that fences
// its write, or why it waits or is dropped. k.mu is held.
func (f *fleetKeeper) writableLocked(key session.Key, now time.Time) (rev uint64, wait bool) {
	if _, busy := f.loading[key]; busy {
		return 0, true // written once its load ends
	}
	if r, held := f.owned[key]; held {
		return r, false
	}
	if at, ok := f.retake[key]; ok {
		// Its take failed: taken again (no birth) when due, while it lives.
		if s := f.k.g.sessions.Lookup(key); s != nil {
			if !f.closed && !now.Before(at) {
				f.queueLoadLocked(s, false)
			}
			return 0, true
		}
		delete(f.retake, key)
	}
	return 0, false // not held here (let go): the record is another's
}

// nextRetakeLocked is when the next retake is due; zero when none waits. k.mu
// is held.
func (f *fleetKeeper) nextRetakeLocked() time.Time {
	var next time.Time
	for _, at := range f.retake {
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next
}

// committed is told the keys whose deletion was written: a device whose
// session is gone and has nothing more to write is no longer held (its owner
// key still names this instance; its next datagram here takes it again).
// k.mu is held.
func (f *fleetKeeper) committedLocked(deleted []session.Key) {
	for _, key := range deleted {
		_, dirty := f.k.dirty[key]
		_, gone := f.k.gone[key]
		_, busy := f.loading[key]
		if !dirty && !gone && !busy && f.k.g.sessions.Lookup(key) == nil {
			delete(f.owned, key)
		}
	}
}

// close stops new loads, waits for those under way, and ends the watch
// (the keeper's close, before its last write).
func (f *fleetKeeper) close() {
	f.k.mu.Lock()
	f.closed = true
	f.k.mu.Unlock()
	f.wg.Wait()
}

// stopWatch ends the watch of the owner keys (after the keeper's last
// write: a take seen until then still lets a device go).
func (f *fleetKeeper) stopWatch() {
	if f.stop != nil {
		f.stop()
	}
}

// scanDue reports whether the orphans' scan is due at now, and moves the
// next one a lease on.
func (f *fleetKeeper) scanDue(now time.Time) bool {
	f.k.mu.Lock()
	defer f.k.mu.Unlock()
	if f.closed || now.Before(f.nextScan) {
		return false
	}
	f.nextScan = now.Add(f.lease)
	return true
}

// scan adopts the orphans among the records (see Orphans above): records
// whose session ran out, owned by an instance that is not alive, or by this
// one without the device held. It runs on the keeper's writer goroutine,
// one lease apart.
func (f *fleetKeeper) scan(ctx context.Context, now time.Time) {
	k := f.k
	type orphan struct {
		key session.Key
		rec deviceRecord
	}
	var cands []orphan
	err := k.st.Range(store.KindSession, func(rk string, v []byte) bool {
		listener, device, ok := strings.Cut(rk, "\x00")
		key := session.Key{Listener: listener, Device: device}
		if !ok || !f.keeps(key) {
			return true
		}
		r, err := decodeDeviceRecord(v)
		if err != nil || r.Device != device {
			return true // logged by the load that reads it
		}
		if ka := f.keepalive(key); ka <= 0 || now.Sub(r.LastSeen) <= ka*3/2 {
			return true // within its keepalive: its device's next datagram takes it
		}
		k.mu.Lock()
		_, held := f.owned[key]
		_, busy := f.loading[key]
		k.mu.Unlock()
		if !held && !busy {
			cands = append(cands, orphan{key, r})
		}
		return true
	})
	if err != nil {
		if !errors.Is(err, store.ErrClosed) {
			k.log.Warn("fleet's device sessions not scanned for orphans: next lease", zap.Error(err))
		}
		return
	}
	adopted := 0
	defer func() {
		if adopted > 0 {
			// The registry's expiry at once, as after a restart: an adopted
			// session is lost now, its will published once, rather than
			// continued by its device's next datagram.
			if n := k.g.sessions.Expire(time.Now(), k.g.sessionLost); n > 0 {
				k.g.expiredDownlinks.Add(uint64(n))
			}
		}
	}()
	alive := map[string]bool{}
	for _, c := range cands {
		rk := recordKey(c.key)
		owner, rev, err := f.owners.Owner(rk)
		if err != nil {
			return // the store is away: the next scan
		}
		if owner != f.me && owner != "" {
			ok, seen := alive[owner]
			if !seen {
				if ok, err = f.owners.Alive(owner); err != nil {
					return
				}
				alive[owner] = ok
			}
			if ok {
				continue // its owner deletes it after the will
			}
		}
		if owner != f.me {
			r, ok, err := f.owners.TakeFrom(ctx, rk, rev)
			if err != nil {
				return
			}
			if !ok {
				continue // another instance took it since
			}
			rev = r
		}
		if f.adopt(c.key, c.rec, rev) {
			adopted++
		}
	}
}

// keepalive is what a session of key would have: its class's keepalive, else
// its listener's default.
func (f *fleetKeeper) keepalive(key session.Key) time.Duration {
	if c := f.k.g.rules().Class(key.Listener, key.Device); c != nil && c.Keepalive > 0 {
		return c.Keepalive
	}
	return f.keepalives[key.Listener]
}

// adopt restores an orphan's session as it was at its record, held here at
// rev, for the expiry that publishes its will; false when its device spoke
// here meanwhile (its own load takes it).
func (f *fleetKeeper) adopt(key session.Key, r deviceRecord, rev uint64) bool {
	k := f.k
	k.mu.Lock()
	if _, busy := f.loading[key]; busy || f.closed {
		k.mu.Unlock()
		return false
	}
	if _, held := f.owned[key]; !held {
		f.owned[key] = rev
	}
	k.mu.Unlock()
	s := k.g.sessions.Restore(key, r.Saved) // its class again: the Restored hook
	if s == nil {
		return false
	}
	f.adopted[key.Listener].Inc()
	k.log.Info("orphaned device session adopted: its will follows", zapListener(key.Listener), zap.String("device", key.Device),
		zap.Time("last_seen", r.LastSeen))
	return true
}
