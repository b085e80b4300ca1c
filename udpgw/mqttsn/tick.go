package mqttsn

import (
	"time"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/session"
)

// TickEvery implements udpgw.Ticker: fine enough for RetryInterval, at most 1s.
func (e *Engine) TickEvery() time.Duration {
	return min(max(e.o.RetryInterval/4, 5*time.Millisecond), time.Second)
}

// Tick implements udpgw.Ticker: it does every timed thing of the engine due at
// now: retransmissions towards clients, will exchanges that stalled, persistent
// sessions past SessionExpiry, and ADVERTISE. The gateway's one driver calls
// it (ARCHITECTURE.md rule 7); the engine has no timer of its own. Session
// expiry after 1.5 keepalives is not here: the registry's, on the same driver.
func (e *Engine) Tick(now time.Time) {
	ob := getOutbox()
	e.mu.Lock()
	for c := range e.retrying {
		e.retransmit(ob, c, now)
	}
	// A will exchange the client abandoned: it would retransmit CONNECT
	// within N_RETRY × T_RETRY if it were still there.
	stale := time.Duration(e.o.MaxRetries+1) * e.o.RetryInterval
	for p, pc := range e.pending {
		if now.Sub(pc.started) > stale {
			e.dropPending(p)
		}
	}
	e.tickUnproven(ob, now)
	for c := range e.parked {
		if now.Sub(c.since) > e.o.SessionExpiry {
			e.dropClient(c)
		}
	}
	if e.ps != nil && len(e.ps.dirty) > 0 {
		// Records a failed commit left, or marked while no writer ran.
		select {
		case e.ps.kick <- struct{}{}:
		default:
		}
	}
	if e.o.AdvertiseInterval > 0 && !now.Before(e.nextAdv) {
		// MQTT-SN 1.2 §6.1: ADVERTISE every T_ADV, Duration = T_ADV in seconds.
		e.nextAdv = now.Add(e.o.AdvertiseInterval)
		secs := uint16(min(e.o.AdvertiseInterval/time.Second, 0xFFFF))
		// To the operator's address: no budget.
		_ = e.put(ob, session.Peer{Addr: e.advAddr}, &mqttsn.Advertise{GwID: e.o.GatewayID, Duration: secs}, false)
	}
	expire := e.sources != nil && !now.Before(e.nextExpire)
	if expire {
		e.nextExpire = now.Add(2 * time.Second)
	}
	e.mu.Unlock()
	e.flush(ob)
	if expire {
		// The table's expiry walks its proofs: not under e.mu.
		e.sources.Expire(now)
	}
}
