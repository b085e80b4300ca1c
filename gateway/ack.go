package gateway

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/mapping"
	"github.com/mqttgw/mqttgw/session"
)

// maxAcksInFlight bounds the acknowledged datagrams waiting for the broker at
// once; beyond it a datagram is dropped unacknowledged (the device retries).
const maxAcksInFlight = 4096

// acker publishes the datagrams of rules with [rule.ack] and answers the device
// once the broker acknowledged every publish: a battery sensor retries until it
// gets the ack, as with MQTT-SN QoS 1. While the broker is away nothing is
// acknowledged. A retry with a dedup key seen within the rule's window is
// acknowledged again but published once.
//
// Goroutines: one per datagram waiting for the broker, at most maxAcksInFlight;
// wait returns after they all ended. Lock order: acker.mu only.
type acker struct {
	g   *Gateway
	sem chan struct{}
	wg  sync.WaitGroup
	n   outcomes

	mu   sync.Mutex // guards seen
	seen map[string]*dedupEntry
}

type dedupEntry struct {
	done    bool // published: a retry is acknowledged at once
	expires time.Time
}

func newAcker(g *Gateway) *acker {
	return &acker{g: g, sem: make(chan struct{}, maxAcksInFlight), seen: map[string]*dedupEntry{},
		n: newOutcomes(g, "mqttgw_acks_total", "Acknowledged-datagram outcomes: sent, resent (a deduplicated retry), in_progress (a retry while the first is at the broker), failed (broker away: no ack), busy.",
			"sent", "resent", "in_progress", "failed", "busy")}
}

// handle takes a mapped datagram whose rule acknowledges; res is the reader's
// and is copied.
func (a *acker) handle(listener string, from netip.AddrPort, res *mapping.Result, now time.Time) {
	ack := append([]byte(nil), res.Ack...)
	key := res.DedupKey
	if key != "" {
		a.mu.Lock()
		e := a.seen[key]
		if e != nil && now.Before(e.expires) {
			done := e.done
			a.mu.Unlock()
			if done {
				a.n.inc(listener, "resent")
				a.send(listener, from, ack)
			} else {
				a.n.inc(listener, "in_progress")
			}
			return
		}
		a.seen[key] = &dedupEntry{expires: now.Add(res.DedupWindow)}
		a.mu.Unlock()
	}
	select {
	case a.sem <- struct{}{}:
	default:
		a.n.inc(listener, "busy")
		a.forget(key)
		return
	}
	msgs := append([]mapping.Message(nil), res.Publishes...)
	device := res.Device
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer func() { <-a.sem }()
		u := a.g.cfg.Upstream
		ctx, cancel := context.WithTimeout(context.Background(), u.PublishTimeout.D()+u.ConnectTimeout.D())
		defer cancel()
		err := a.g.fences.wait(ctx, session.Key{Listener: listener, Device: device})
		if err == nil {
			err = a.g.publishAll(ctx, listener, device, msgs)
		}
		if err != nil {
			a.n.inc(listener, "failed")
			a.forget(key)
			if ce := a.g.log.Check(zap.DebugLevel, "datagram not acknowledged: broker did not take it"); ce != nil {
				ce.Write(zapListener(listener), zap.Stringer("from", from), zap.Error(err))
			}
			return
		}
		if key != "" {
			a.mu.Lock()
			if e := a.seen[key]; e != nil {
				e.done = true
			}
			a.mu.Unlock()
		}
		a.n.inc(listener, "sent")
		a.send(listener, from, ack)
	}()
}

func (a *acker) forget(key string) {
	if key == "" {
		return
	}
	a.mu.Lock()
	delete(a.seen, key)
	a.mu.Unlock()
}

func (a *acker) send(listener string, to netip.AddrPort, b []byte) {
	if l := a.g.raws[listener]; l != nil {
		if err := l.Send(to, b); err != nil {
			a.g.log.Debug("ack not sent", zapListener(listener), zap.Stringer("to", to), zap.Error(err))
		}
	}
}

// expire forgets the dedup keys whose window ended at now; the driver calls it.
func (a *acker) expire(now time.Time) {
	a.mu.Lock()
	for k, e := range a.seen {
		if !now.Before(e.expires) {
			delete(a.seen, k)
		}
	}
	a.mu.Unlock()
}

// wait returns once every datagram at the broker was answered or given up.
func (a *acker) wait() { a.wg.Wait() }
