package mqttsn

import (
	"context"
	"errors"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/store"
)

// Clients of a dead instance (issue 13: no instance loses a device's session
// when it dies). A client whose instance died is served again wherever its
// next CONNECT arrives (fleet.go). One that never connects again — gone with
// its instance, or asleep — must still get what a single gateway gives it
// after a crash: its will once its keepalive has run out, its subscriptions'
// messages buffered until SessionExpiry. So the engine adopts the persistent
// clients of dead instances.
//
// Every Options.AdoptEvery the adopter reads the instances alive
// (Owners.Instances). When one it saw alive is gone — and at its first look,
// and every adoptFullEvery looks in case an instance lived and died between
// two — it reads the fleet's owner keys (Owners.RangeOwners) and, for each
// client of this listener owned by an instance not alive (or by this one
// without being held here: this instance's own clients from before it was
// killed and started again within its lease), takes it with
// Owners.TakeFrom: only while its owner key is still at the revision read, so
// that of several instances adopting at once one wins, and a client that
// connected somewhere meanwhile stays there. Then it reads the client's
// record and restores it as a single gateway's start does (restoreClient):
// its session at its last-seen time, so the registry's driver loses it (and
// publishes its will) 1.5 keepalives after it was last heard, and its
// subscriptions made again at the broker. Its next CONNECT, here or anywhere,
// continues it. The adopter holds no lock across a request, and at most one
// client's restore at a time under Engine.mu.

// adoptFullEvery: every this many looks, the owner keys are read even if no
// instance was seen to die.
const adoptFullEvery = 12

// startAdopter starts the adopter (Serve, with Options.Owners); waitLoads
// stops it.
func (e *Engine) startAdopter() {
	e.fl.adoptStop = make(chan struct{})
	e.fl.wg.Go(func() { e.adopter(e.fl.adoptStop) })
}

// adopter looks for dead instances' clients until stop is closed.
func (e *Engine) adopter(stop <-chan struct{}) {
	t := time.NewTicker(e.o.AdoptEvery)
	defer t.Stop()
	var (
		seen  map[string]bool // alive at the last look; nil before the first
		looks int
		again bool // the last pass did not finish
	)
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		names, err := e.fl.owners.Instances()
		if err != nil {
			e.adoptWarn("mqttsn: cannot read the fleet's instances alive: dead instances' clients not adopted yet", err)
			continue
		}
		alive := make(map[string]bool, len(names))
		for _, n := range names {
			alive[n] = true
		}
		looks++
		pass := seen == nil || again || looks%adoptFullEvery == 0
		for n := range seen {
			pass = pass || !alive[n]
		}
		seen = alive
		if pass {
			again = !e.adoptOrphans(alive, stop)
		}
	}
}

// orphan is a client of this listener owned by a dead instance.
type orphan struct {
	id       string
	rev      uint64 // its owner key's, as read
	instance string
}

// adoptOrphans adopts the clients of this listener whose owner is not in
// alive, and reports whether it went through all of them.
func (e *Engine) adoptOrphans(alive map[string]bool, stop <-chan struct{}) bool {
	o := e.fl.owners
	me := o.Instance()
	var orphans []orphan
	err := o.RangeOwners(func(key, instance string, rev uint64) bool {
		// A client of a dead instance; or one this instance owns and does
		// not hold: its earlier run's (killed and started again within the
		// lease), or one whose adoption did not finish.
		if id, ok := strings.CutPrefix(key, e.ps.prefix); ok && (instance == me || !alive[instance]) {
			orphans = append(orphans, orphan{id, rev, instance})
		}
		return true
	})
	if err != nil {
		e.adoptWarn("mqttsn: cannot read the fleet's owner keys: dead instances' clients not adopted yet", err)
		return false
	}
	complete := true
	adopted := map[string]int{} // per dead instance
	for _, c := range orphans {
		select {
		case <-stop:
			return false
		default:
		}
		switch ok, err := e.adoptOne(c); {
		case err != nil:
			complete = false
			e.adoptWarn("mqttsn: a dead instance's client not adopted yet", err, zap.String("client", c.id))
		case ok:
			adopted[c.instance]++
		}
	}
	for inst, n := range adopted {
		e.log.Info("mqttsn: adopted the persistent clients of a dead instance", zap.String("instance", inst), zap.Int("clients", n))
	}
	return complete
}

// adoptOne takes client c and restores its record; ok reports that it did.
func (e *Engine) adoptOne(c orphan) (ok bool, err error) {
	e.mu.Lock()
	_, loading := e.fl.loading[c.id]
	here := e.byID[c.id] != nil || loading
	e.mu.Unlock()
	if here {
		return false, nil // connecting or connected here: its CONNECT took it
	}
	ctx, cancel := context.WithTimeout(e.opCtx, e.o.OpTimeout)
	rev, taken, err := e.fl.owners.TakeFrom(ctx, e.ps.prefix+c.id, c.rev)
	cancel()
	if err != nil || !taken {
		return false, err // taken: by another instance, or by the client's CONNECT somewhere
	}
	v, found, err := e.ps.st.Get(store.KindMQTTSNSession, e.ps.prefix+c.id)
	if err != nil {
		return false, err // this instance owns it now and does not hold it: the next pass tries again
	}
	var rec *sessionRecord
	if found {
		r, derr := decodeSessionRecord(v)
		if derr == nil && r.ID != c.id {
			derr = errors.New("client id is not the key's")
		}
		if derr != nil {
			e.fl.failed.Inc()
			e.log.Warn("mqttsn: a dead instance's client's record not readable: not adopted", zap.String("client", c.id), zap.Error(derr))
		} else {
			rec = &r
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	_, loading = e.fl.loading[c.id]
	if e.stopping || e.byID[c.id] != nil || loading {
		return false, nil
	}
	e.fl.owned[c.id] = rev
	if rec == nil || rec.Clean {
		e.forgetOwned(c.id) // nothing to continue (a clean client keeps no record)
		return false, nil
	}
	var n restoreCounts
	e.restoreClient(rec, e.env.Now(), &n)
	if e.byID[c.id] == nil {
		e.forgetOwned(c.id) // expired, or over max_clients: not restored
		return false, nil
	}
	e.fl.adopted.Inc()
	return true, nil
}

// adoptWarn logs an adopter's trouble, rate-limited; ErrClosed at shutdown is
// not trouble.
func (e *Engine) adoptWarn(msg string, err error, fields ...zap.Field) {
	if errors.Is(err, store.ErrClosed) || errors.Is(err, context.Canceled) {
		return
	}
	if ok, suppressed := e.badLog.allow(time.Now()); ok {
		e.log.Warn(msg, append(fields, zap.Int("suppressed_before", suppressed), zap.Error(err))...)
	}
}
