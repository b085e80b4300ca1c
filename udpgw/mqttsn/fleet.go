package mqttsn

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/metrics"
	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/store"
)

// Sessions across a fleet (issue 13). With Options.Owners the engine's
// State is shared by several gateways (the NATS JetStream store), any of
// which may receive a device's CONNECT: another instance (alive, or killed)
// may have written the client's record since this one last saw it.
//
// # Load on CONNECT
//
// A CONNECT for a client the engine does not hold makes it take the
// client's ownership and, for CleanSession false (MQTT-SN 1.2 §6.2), read
// the client's record from State before the CONNECT is handled: its registrations, subscriptions, QoS 2 MsgIds
// awaiting PUBREL and buffered messages come back, the subscriptions are made
// again at the broker (no SUBACK: the client has had it), and the CONNECT then
// resumes the session as if it had never left this instance. The read is not
// done under Engine.mu, nor on the reader goroutine: a loader goroutine per
// client (at most maxLoads at once, tracked by Engine.loads and awaited by
// Serve) reads, then installs the client and handles the CONNECT under the
// lock. A CONNECT arriving while its client's load runs, clean or not,
// replaces the one to handle (the client's latest); beyond maxLoads a CONNECT is dropped and
// counted (the client retransmits it after T_RETRY). Only CONNECT pays a
// read: every other datagram is served from memory as before.
//
// # Ownership (Options.Owners)
//
// With Options.Owners a client is served by one instance at a time: the
// fleet's owner key of the client (its record's key) names it. Every CONNECT
// for a client not held here, clean or not, takes the key first, in the
// loader goroutine (Owners.Take, a compare-and-swap: the client is here now,
// whoever held it), then reads the record: the read follows the take, so it
// sees every write the previous owner got in. The revision taken fences
// every later write of the client's record (Owners.ApplyOwned): once another
// instance has taken it, this one's writes are refused, and a client whose
// write is refused is let go. The engine also watches the owner keys
// (Owners.WatchOwners, from Serve's start to its end) and lets go of a
// client another instance took at a later revision than its own. Letting go
// (letGo) ends the client's session in the registry as taken over (no will),
// removes its subscriptions at the broker, drops its answers waiting for a
// commit and forgets it without a write: a datagram from it then gets what an
// unknown client gets, and its next CONNECT here takes it back. A Take that
// fails (the fleet's store unreachable) answers the CONNECT with CONNACK
// "congestion": the client retries. A client held here is not taken again
// on CONNECT: until the watch reports that another instance took it (a
// round trip or so), both may serve it; the fence keeps the record the new
// owner's.
//
// # At start
//
// restore() is not run: the records in the shared State are the fleet's, not
// this instance's, and restoring them all would subscribe every device at
// every instance. A client of a restarted instance is loaded at its next
// CONNECT (a PUBLISH from it before that gets DISCONNECT, MQTT-SN 1.2 §6.12,
// and the client connects again).

// maxLoads bounds the session loads under way at once.
const maxLoads = 64

// Owners is the fleet's record of which gateway instance serves which
// client (store/natsstore's Store implements it). Its keys are the clients'
// record keys (the listener's name, a NUL, the client id).
type Owners interface {
	// Instance names this gateway instance.
	Instance() string
	// Take makes this instance the owner of key (compare-and-swap) and
	// returns the owner key's revision: the fence of the client's writes.
	// prev is the previous owner ("" none).
	Take(ctx context.Context, key string) (rev uint64, prev string, err error)
	// ApplyOwned applies ops atomically, op i only while the owner key of
	// ops[i].Key is at revs[i]; lost are the ops refused because another
	// instance took their client, the others are applied.
	ApplyOwned(ctx context.Context, ops []store.Op, revs []uint64) (lost []int, err error)
	// WatchOwners calls fn for every owner key written from now on until
	// stop; fn must not block.
	WatchOwners(fn func(key, instance string, rev uint64)) (stop func(), err error)
	// Instances lists the instances alive now (adopt.go).
	Instances() ([]string, error)
	// RangeOwners calls fn with every owner key, its instance and
	// revision, until fn returns false.
	RangeOwners(fn func(key, instance string, rev uint64) bool) error
	// TakeFrom makes this instance the owner of key only while its owner
	// key is at revision rev; ok false when it moved on.
	TakeFrom(ctx context.Context, key string, rev uint64) (newRev uint64, ok bool, err error)
}

// loader is the engine's side of the fleet's shared State, nil without
// Options.Owners; Engine.mu guards its maps.
type loader struct {
	loading map[string]*pendingLoad // client id → the CONNECT to handle after the read
	wg      sync.WaitGroup          // loader goroutines

	// owned maps each client id taken here to the revision taken, the
	// fence of its writes; stopWatch ends the watch of the owner keys.
	owners    Owners
	owned     map[string]uint64
	stopWatch func()
	adoptStop chan struct{} // closed to stop the adopter (adopt.go)

	loaded, missing, failed, adopted *metrics.Counter
	letGo                            [letGoReasons]*metrics.Counter
}

// letGoReason says how the engine learnt that another instance took a
// client.
type letGoReason uint8

const (
	letGoTaken  letGoReason = iota // the watch of the owner keys
	letGoFenced                    // a write of its record was refused
	letGoReasons
)

var letGoNames = [letGoReasons]string{"taken", "fenced"}

func (r letGoReason) String() string { return letGoNames[r] }

// pendingLoad is the CONNECT waiting for its client's record.
type pendingLoad struct {
	p session.Peer
	m *mqttsn.Connect
}

func newLoader(e *Engine) *loader {
	c := func(result string) *metrics.Counter {
		return e.env.Metrics.Counter("mqttgw_mqttsn_session_loads_total",
			"MQTT-SN persistent sessions read from the fleet's shared store on CONNECT (loaded: continued here; missing: none there; failed: not readable).",
			"listener", e.env.Name, "result", result)
	}
	l := &loader{loading: map[string]*pendingLoad{}, loaded: c("loaded"), missing: c("missing"), failed: c("failed"),
		owners: e.o.Owners, owned: map[string]uint64{},
		adopted: e.env.Metrics.Counter("mqttgw_mqttsn_clients_adopted_total",
			"Persistent MQTT-SN clients of dead instances of the fleet this instance took over and restored (their wills go out here if they stay silent).",
			"listener", e.env.Name)}
	for r := range letGoReasons {
		l.letGo[r] = e.env.Metrics.Counter("mqttgw_mqttsn_clients_let_go_total",
			"MQTT-SN clients this instance stopped serving because another instance of the fleet took them over (taken: seen on the owner key; fenced: a record write was refused).",
			"listener", e.env.Name, "reason", r.String())
	}
	return l
}

// loadFirst reports whether m must wait for its client's ownership (and,
// when persistent, its record): a CONNECT for a client not held here. It then starts (or joins)
// the client's load, which handles m once the record is in. e.mu is held.
func (e *Engine) loadFirst(p session.Peer, m *mqttsn.Connect, now time.Time) bool {
	if e.fl == nil {
		return false
	}
	if pl := e.fl.loading[m.ClientID]; pl != nil {
		// The client's latest CONNECT is the one answered, clean or not,
		// so that CONNECTs take effect in the order they came.
		pl.p, pl.m = p, m
		return true
	}
	if c := e.byID[m.ClientID]; c != nil && c.state != stateGone {
		return false
	}
	if len(e.fl.loading) >= maxLoads {
		e.m.drop(dropLoadBusy)
		e.debugBad(now, "CONNECT dropped: too many session loads under way", p.Addr, nil, zap.String("client", m.ClientID))
		return true
	}
	e.fl.loading[m.ClientID] = &pendingLoad{p: p, m: m}
	e.fl.wg.Add(1)
	go func() {
		defer e.fl.wg.Done()
		e.load(m.ClientID)
	}()
	return true
}

// load takes id's ownership (with Options.Owners) and reads its record (no
// lock held), installs the client unless it appeared meanwhile, then handles
// the CONNECT that waited.
func (e *Engine) load(id string) {
	rev, ok := e.take(id)
	if !ok {
		return
	}
	v, ok, err := e.ps.st.Get(store.KindMQTTSNSession, e.ps.prefix+id)
	var rec *sessionRecord
	switch {
	case err != nil:
		e.fl.failed.Inc()
		if !errors.Is(err, store.ErrClosed) {
			e.log.Warn("mqttsn: persistent session not read from the fleet's store: a new session starts", zap.String("client", id), zap.Error(err))
		}
	case !ok:
		e.fl.missing.Inc()
	default:
		r, derr := decodeSessionRecord(v)
		if derr == nil && r.ID != id {
			derr = errors.New("client id is not the key's")
		}
		if derr != nil {
			e.fl.failed.Inc()
			e.log.Warn("mqttsn: persistent session record not readable: a new session starts", zap.String("client", id), zap.Error(derr))
			break
		}
		rec = &r
	}
	ob := getOutbox()
	e.mu.Lock()
	pl := e.fl.loading[id]
	delete(e.fl.loading, id)
	if !e.stopping {
		now := e.env.Now()
		if rev != 0 {
			e.fl.owned[id] = rev
		}
		if rec != nil && !pl.m.Flags.CleanSession && e.adopt(rec, now) {
			e.fl.loaded.Inc()
		}
		e.connect(ob, pl.p, pl.m, now, true)
	}
	e.mu.Unlock()
	e.flush(ob)
}

// adopt installs the client of a record read from the fleet's store as
// disconnected since now (its CONNECT follows), unless the engine holds it
// already or its persistent session expired; e.mu is held. Whatever
// instance wrote it, connected or not, the client's connection there is over:
// it is connecting here.
func (e *Engine) adopt(r *sessionRecord, now time.Time) bool {
	if c := e.byID[r.ID]; c != nil || r.Clean {
		return false
	}
	if r.State == recDisconnected && now.Sub(r.Since) > e.o.SessionExpiry {
		return false // expired: the CONNECT starts a new one, and its save replaces the record
	}
	r.State, r.Since = recDisconnected, now
	var n restoreCounts
	e.restoreClient(r, now, &n)
	return n.disconnected == 1
}

// waitLoads stops the adopter and waits for it and the loads under way
// (Serve's drain), then ends the watch of the owner keys.
func (e *Engine) waitLoads() {
	if e.fl != nil {
		if e.fl.adoptStop != nil {
			close(e.fl.adoptStop)
		}
		e.fl.wg.Wait()
		if e.fl.stopWatch != nil {
			e.fl.stopWatch()
		}
	}
}

// take makes this instance id's owner, returning the revision taken (the fence
// of its writes). When the fleet's store does not answer, the CONNECT waiting is
// answered with congestion (the client retries) and ok is false.
func (e *Engine) take(id string) (rev uint64, ok bool) {
	o := e.fl.owners
	ctx, cancel := context.WithTimeout(e.opCtx, e.o.OpTimeout)
	rev, prev, err := o.Take(ctx, e.ps.prefix+id)
	cancel()
	if err == nil {
		if prev != "" && prev != o.Instance() {
			if ce := e.log.Check(zap.DebugLevel, "client taken over from another instance"); ce != nil {
				ce.Write(zap.String("client", id), zap.String("from", prev))
			}
		}
		return rev, true
	}
	e.fl.failed.Inc()
	if !errors.Is(err, store.ErrClosed) && !errors.Is(err, context.Canceled) {
		if ok, suppressed := e.badLog.allow(time.Now()); ok {
			e.log.Warn("mqttsn: client not taken over in the fleet's store: CONNECT answered with congestion", zap.String("client", id),
				zap.Int("suppressed_before", suppressed), zap.Error(err))
		}
	}
	ob := getOutbox()
	e.mu.Lock()
	pl := e.fl.loading[id]
	delete(e.fl.loading, id)
	if !e.stopping {
		e.m.refuse(refuseCongestion)
		e.send(ob, pl.p, &mqttsn.Connack{ReturnCode: mqttsn.Congestion})
	}
	e.mu.Unlock()
	e.flush(ob)
	return 0, false
}

// owns reports whether the engine may write id's record: always without
// Options.Owners, else while it holds id's ownership. e.mu is held.
func (e *Engine) owns(id string) bool {
	if e.fl == nil {
		return true
	}
	_, ok := e.fl.owned[id]
	return ok
}

// forgetOwned drops the fence of a client no longer held once no write of
// its record is due (the commit calls it again when one was); its next
// CONNECT takes it again. e.mu is held.
func (e *Engine) forgetOwned(id string) {
	if e.fl == nil || e.byID[id] != nil {
		return
	}
	_, dirty := e.ps.dirty[id]
	_, busy := e.ps.inflight[id]
	if !dirty && !busy {
		delete(e.fl.owned, id)
	}
}

// watchOwners starts the watch of the owner keys (Serve, before the first
// datagram).
func (e *Engine) watchOwners() error {
	if e.fl == nil {
		return nil
	}
	me := e.fl.owners.Instance()
	stop, err := e.fl.owners.WatchOwners(func(key, instance string, rev uint64) {
		if instance == me {
			return
		}
		id, ok := strings.CutPrefix(key, e.ps.prefix)
		if !ok {
			return // another listener's client
		}
		e.mu.Lock()
		if r, held := e.fl.owned[id]; held && rev > r {
			e.letGo(id, letGoTaken)
		}
		e.mu.Unlock()
	})
	if err != nil {
		return err
	}
	e.fl.stopWatch = stop
	return nil
}

// letGo stops serving client id, which another instance took over: its
// session leaves the registry as taken over (no will), its subscriptions go
// at the broker (this instance's; the new owner made its own), its answers
// waiting for a commit are dropped, and nothing of it is written any more.
// No DISCONNECT is sent: the client is talking to the other instance. e.mu
// is held.
func (e *Engine) letGo(id string, why letGoReason) {
	delete(e.fl.owned, id)
	delete(e.ps.dirty, id)
	c := e.byID[id]
	if c == nil || c.state == stateGone {
		return
	}
	e.fl.letGo[why].Inc()
	if ce := e.log.Check(zap.DebugLevel, "client let go: another instance took it over"); ce != nil {
		ce.Write(zap.String("client", id), zap.Stringer("how", why))
	}
	e.endSession(c, session.EndTakenOver)
	if c.ps != nil {
		c.ps.acks = nil
	}
	e.clearCheck(c)
	e.resetSession(c)
	c.state = stateGone
	c.gen++
	c.stored = false
	delete(e.parked, c)
	e.maybeRemove(c)
}
