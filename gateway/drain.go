package gateway

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/proxy"
	"github.com/mqttgw/mqttgw/store"
	"github.com/mqttgw/mqttgw/store/natsstore"
)

// Draining dead instances' queues (issue 13). With [cluster], each instance
// looks every half owner_lease for queues of instances whose lease ran out
// and that still hold messages (natsstore.Store.Orphans). It claims one
// (ClaimDrain: one drainer at a time), then reads it in chunks in sequence
// order and hands each message to its own proxy with Publish, as a device's
// QoS 1 publish: to the broker once it acknowledges, or into this instance's
// durable queue while the broker is away. Only then is the message
// acknowledged in the orphan, so a drain cut short anywhere loses nothing
// (what was handed on and not acknowledged comes twice, as QoS 1 allows).
//
// Order: a device's messages are handed on one at a time in the orphan's
// order (devices of a chunk in parallel); a device whose message fails is
// not continued in that chunk, and the drain stops after the chunk and starts
// again at the orphan's first message at the next look, so its later messages
// never overtake it. A device that moved to another instance before the drain
// began waits there until the drain has taken what it left (fence.go).
//
// The drain stops when the orphan's instance is back (its Open waits for the
// claim to be released), when the claim is lost, and at shutdown.

// drainChunk bounds the messages read and handed on at once; drainParallel
// the devices handed on at once within a chunk.
const (
	drainChunk    = 256
	drainParallel = 64
)

// drainer runs the drains of this instance until ctx ends.
func (g *Gateway) drainer(ctx context.Context, st *natsstore.Store) {
	every := g.cfg.Cluster.OwnerLease.D() / 2
	t := time.NewTicker(every)
	defer t.Stop()
	drained := g.metrics.Counter("mqttgw_fleet_drained_total",
		"Messages of dead instances' queues handed to the broker (or to this instance's queue) and removed from theirs.")
	var warned time.Time
	for {
		orphans, err := st.Orphans(ctx)
		if err != nil && ctx.Err() == nil && time.Since(warned) > storeWarnEvery {
			warned = time.Now()
			g.log.Warn("fleet: cannot list dead instances' queues", zap.Error(err))
		}
		for _, o := range orphans {
			if ctx.Err() != nil {
				return
			}
			g.drainOne(ctx, st, o, drained.Add)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// storeWarnEvery rate-limits the drainer's warnings.
const storeWarnEvery = 10 * time.Second

// drainOne drains one orphan if this instance gets its claim.
func (g *Gateway) drainOne(ctx context.Context, st *natsstore.Store, o natsstore.Orphan, count func(uint64)) {
	log := g.log.With(zap.String("instance", o.Instance))
	d, err := st.ClaimDrain(ctx, o.Instance)
	if errors.Is(err, natsstore.ErrDrainClaimed) || ctx.Err() != nil {
		return
	}
	if err != nil {
		log.Warn("fleet: cannot claim a dead instance's queue", zap.Error(err))
		return
	}
	defer d.Release()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-d.Lost():
			cancel()
		case <-ctx.Done():
		}
	}()
	log.Info("fleet: draining the queue of a dead instance", zap.Uint64("messages", o.Messages))
	q := d.Queue()
	total := 0
	for {
		if back, err := d.OwnerBack(); err == nil && back {
			log.Info("fleet: the instance is back: its queue is its own again", zap.Int("drained", total))
			return
		}
		var chunk []store.Message
		err := q.Range(0, func(m store.Message) bool {
			chunk = append(chunk, m)
			return len(chunk) < drainChunk
		})
		if err != nil {
			log.Warn("fleet: cannot read a dead instance's queue", zap.Error(err))
			return
		}
		if len(chunk) == 0 {
			log.Info("fleet: drained the queue of a dead instance", zap.Int("drained", total))
			return
		}
		done, complete := g.handOn(ctx, chunk)
		if err := q.Ack(context.Background(), done...); err != nil {
			log.Warn("fleet: cannot remove drained messages from a dead instance's queue; they will be sent again", zap.Error(err))
			return
		}
		total += len(done)
		count(uint64(len(done)))
		if !complete {
			if ctx.Err() == nil {
				log.Info("fleet: drain paused: a message was not taken", zap.Int("drained", total))
			}
			return
		}
	}
}

// handOn publishes chunk through the proxy, each device's messages in order,
// and returns the sequence numbers taken (by the broker or this instance's
// queue); complete is false when any was not.
func (g *Gateway) handOn(ctx context.Context, chunk []store.Message) (done []uint64, complete bool) {
	groups := map[string][]store.Message{}
	var keys []string
	for _, m := range chunk {
		k := proxy.OrderKey(m.Listener, m.Device, m.Topic)
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], m)
	}
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		sem = make(chan struct{}, drainParallel)
	)
	complete = true
	for _, k := range keys {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			for _, m := range groups[k] {
				err := g.proxy.Publish(ctx, proxy.Message{Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain, Listener: m.Listener, Device: m.Device})
				mu.Lock()
				if err != nil {
					complete = false
					mu.Unlock()
					return // its later messages wait for the next drain
				}
				done = append(done, m.Seq)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return done, complete
}
