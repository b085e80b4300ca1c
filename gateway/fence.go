package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/metrics"
	"github.com/mqttgw/mqttgw/proxy"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/store/natsstore"
)

// Per-device order across instances (issue 13: "per-device order is kept").
// A device that moves from instance A to this one may have left QoS >= 1
// messages in A's durable queue: A died with the broker away, or its broker
// link is behind. Its new messages must not reach the broker before those.
// When a take finds a previous owner (natsstore Take's prev) whose queue holds
// messages of the device (each device's have a subject of their own), the
// device is fenced: its last message there bounds what it left, and its QoS
// >= 1 publishes here wait until A's queue no longer holds any of the
// device's at or below it — A sent them, or a drain (drain.go) handed them
// to some instance's proxy. A device that left nothing there never waits.
// Meanwhile:
//
//   - a publish a device waits for (MQTT-SN, CoAP, an acknowledged plain-UDP
//     datagram) waits, at most the upstream publish_timeout; then the device
//     gets its congestion answer (or no ack) and retries: nothing is
//     acknowledged out of order;
//   - a plain-UDP publish nobody waits for (Enqueue) is parked in memory, at
//     most maxParked per device (beyond: dropped and counted), and enqueued
//     in order once the fence is lifted.
//
// A CoAP or plain-UDP device is fenced from its first datagram here until its
// take answers (fleetsessions.go loads it on another goroutine), so that even
// that datagram's publish waits for the answer. One watcher per previous
// owner reads its queue's backlog (one stream info request) every fenceEvery
// while any device waits for it. QoS 0 is never held: it has no order to
// keep across instances. At shutdown the parked messages are enqueued
// unfenced: out of order rather than lost.

const (
	// fenceEvery: how often a previous owner's queue is read while devices
	// wait for it.
	fenceEvery = 250 * time.Millisecond
	// maxParked bounds one fenced device's parked plain-UDP publishes.
	maxParked = 1024
)

// errFenced: a moved device's publish waited for its previous owner's queue
// longer than it may.
var errFenced = errors.New("the device's messages at its previous instance are not delivered yet")

// backlogs is natsstore.Store's view of other instances' queues.
type backlogs interface {
	QueueBacklog(ctx context.Context, instance string) (natsstore.Backlog, error)
	DeviceBacklog(ctx context.Context, instance, listener, device string) (last uint64, err error)
}

// fences holds the fenced devices of this instance; nil without [cluster]
// (every method is then a no-op).
type fences struct {
	g  *Gateway
	st backlogs
	me string

	n atomic.Int32 // len(held): a publish checks it before taking mu

	mu       sync.Mutex
	held     map[session.Key]*fence
	watching map[string]bool // previous owners with a watcher
	closed   bool

	stop chan struct{}
	wg   sync.WaitGroup

	waited, parkedDropped *metrics.Counter
	warned                time.Time // under mu: rate-limits the watchers' warnings
}

// fence is one held device.
type fence struct {
	prev   string // the previous owner; "" while its take is under way
	upTo   uint64 // its queue's last sequence at the take; 0: not read yet
	done   chan struct{}
	parked []proxy.Message
}

func newFences(g *Gateway, st *natsstore.Store) *fences {
	return &fences{g: g, st: st, me: st.Instance(), held: map[session.Key]*fence{}, watching: map[string]bool{},
		stop: make(chan struct{}),
		waited: g.metrics.Counter("mqttgw_fleet_fenced_total",
			"QoS >= 1 publishes of devices that moved here which waited for their previous instance's queue (per-device order)."),
		parkedDropped: g.metrics.Counter("mqttgw_fleet_parked_dropped_total",
			"Plain-UDP publishes of a device waiting for its previous instance's queue dropped: more than 1024 were parked."),
	}
}

// pending fences key until its take answers (moved). Callers may hold the
// session keeper's mu: fences never take it.
func (f *fences) pending(key session.Key) {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || f.held[key] != nil {
		return
	}
	f.held[key] = &fence{done: make(chan struct{})}
	f.n.Add(1)
}

// moved records the answer of key's take: prev is its previous owner ("": none),
// err the take's failure (the device is not held then: it is not served here
// either way). The device stays fenced while prev's queue holds what it may
// have left there.
func (f *fences) moved(key session.Key, prev string, err error) {
	if f == nil {
		return
	}
	if err != nil || prev == "" || prev == f.me {
		f.mu.Lock()
		f.liftLocked(key)
		f.mu.Unlock()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), fenceEvery*4)
	last, berr := f.st.DeviceBacklog(ctx, prev, key.Listener, key.Device)
	cancel()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	if berr == nil && last == 0 {
		f.liftLocked(key) // it left nothing there: nothing to wait for
		return
	}
	fe := f.held[key]
	if fe == nil {
		fe = &fence{done: make(chan struct{})}
		f.held[key] = fe
		f.n.Add(1)
	}
	fe.prev = prev
	if berr == nil {
		fe.upTo = last
	} // else the watcher's first read bounds it: its queue's last message
	if !f.watching[prev] {
		f.watching[prev] = true
		f.wg.Go(func() { f.watch(prev) })
	}
	if ce := f.g.log.Check(zap.DebugLevel, "fleet: device moved here waits for its previous instance's queue"); ce != nil {
		ce.Write(zapListener(key.Listener), zap.String("device", key.Device), zap.String("from", prev), zap.Uint64("up_to", fe.upTo))
	}
}

// liftLocked ends key's fence: its parked publishes are enqueued, in order,
// before any later one can be (the caller holds mu, which park takes).
func (f *fences) liftLocked(key session.Key) {
	fe := f.held[key]
	if fe == nil {
		return
	}
	delete(f.held, key)
	f.n.Add(-1)
	for _, m := range fe.parked {
		_ = f.g.proxy.Enqueue(m) // refusals are counted by the proxy
	}
	close(fe.done)
}

// watch reads prev's queue every fenceEvery and lifts the fences it no
// longer holds back, until none waits for prev.
func (f *fences) watch(prev string) {
	t := time.NewTicker(fenceEvery)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), fenceEvery*4)
		bl, err := f.st.QueueBacklog(ctx, prev)
		cancel()
		f.mu.Lock()
		if err != nil && time.Since(f.warned) > storeWarnEvery {
			f.warned = time.Now()
			f.g.log.Warn("fleet: cannot read a previous instance's queue; devices that moved from it wait", zap.String("instance", prev), zap.Error(err))
		}
		left := 0
		for key, fe := range f.held {
			if fe.prev != prev {
				continue
			}
			if err == nil && fe.upTo == 0 {
				fe.upTo = bl.Last
			}
			if err == nil && !bl.Holds(key.Listener, key.Device, fe.upTo) {
				f.liftLocked(key)
				continue
			}
			left++
		}
		if left == 0 {
			delete(f.watching, prev)
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()
	}
}

// wait holds a QoS >= 1 publish of key's device while it is fenced, at most
// until ctx ends or the upstream publish_timeout; then errFenced wrapping
// proxy.ErrUnavailable (the device's congestion answer).
func (f *fences) wait(ctx context.Context, key session.Key) error {
	if f == nil || f.n.Load() == 0 {
		return nil
	}
	f.mu.Lock()
	fe := f.held[key]
	f.mu.Unlock()
	if fe == nil {
		return nil
	}
	f.waited.Inc()
	t := time.NewTimer(f.g.cfg.Upstream.PublishTimeout.D())
	defer t.Stop()
	select {
	case <-fe.done:
		return nil
	case <-ctx.Done():
	case <-t.C:
	case <-f.stop:
	}
	return fmt.Errorf("%w: %w", proxy.ErrUnavailable, errFenced)
}

// park keeps m (a QoS >= 1 publish nobody waits for) while its device is
// fenced and reports true; false when it is not, and m goes on at once.
func (f *fences) park(m proxy.Message) bool {
	if f == nil || m.QoS == 0 || f.n.Load() == 0 {
		return false
	}
	key := session.Key{Listener: m.Listener, Device: m.Device}
	f.mu.Lock()
	defer f.mu.Unlock()
	fe := f.held[key]
	if fe == nil {
		return false
	}
	f.waited.Inc()
	if len(fe.parked) >= maxParked {
		f.parkedDropped.Inc()
		return true
	}
	fe.parked = append(fe.parked, m)
	return true
}

// close stops the watchers and lets every fenced device go: its parked
// publishes are enqueued (out of order rather than lost), its waiting
// publishes fail. Before the proxy closes.
func (f *fences) close() {
	if f == nil {
		return
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	close(f.stop)
	for key := range f.held {
		f.liftLocked(key)
	}
	f.mu.Unlock()
	f.wg.Wait()
}
