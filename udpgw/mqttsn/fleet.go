package mqttsn

import (
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/metrics"
	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/store"
)

// Sessions across a fleet (issue 13). With Options.SharedState the engine's
// State is shared by several gateways (the NATS JetStream store), any of
// which may receive a device's CONNECT: another instance (alive, or killed)
// may have written the client's record since this one last saw it.
//
// # Load on CONNECT
//
// A CONNECT with CleanSession false (MQTT-SN 1.2 §6.2) for a client the
// engine does not hold makes it read the client's record from State before
// the CONNECT is handled: its registrations, subscriptions, QoS 2 MsgIds
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
// # At start
//
// restore() is not run: the records in the shared State are the fleet's, not
// this instance's, and restoring them all would subscribe every device at
// every instance. A client of a restarted instance is loaded at its next
// CONNECT (a PUBLISH from it before that gets DISCONNECT, MQTT-SN 1.2 §6.12,
// and the client connects again).

// maxLoads bounds the session loads under way at once.
const maxLoads = 64

// loader is the engine's side of the fleet's shared State, nil without
// Options.SharedState; Engine.mu guards its map.
type loader struct {
	loading map[string]*pendingLoad // client id → the CONNECT to handle after the read
	wg      sync.WaitGroup          // loader goroutines

	loaded, missing, failed *metrics.Counter
}

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
	return &loader{loading: map[string]*pendingLoad{}, loaded: c("loaded"), missing: c("missing"), failed: c("failed")}
}

// loadFirst reports whether m must wait for its client's record: a
// persistent CONNECT for a client not held here. It then starts (or joins)
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
	if m.Flags.CleanSession {
		return false
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

// load reads id's record (no lock held), installs the client unless it
// appeared meanwhile, then handles the CONNECT that waited.
func (e *Engine) load(id string) {
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

// waitLoads waits for the loads under way (Serve's drain).
func (e *Engine) waitLoads() {
	if e.fl != nil {
		e.fl.wg.Wait()
	}
}
