package proxy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/metrics"
	"github.com/mqttgw/mqttgw/store"
)

// The durable store-and-forward queue (issue 10: "acknowledged" means
// "durable"), used when Options.Store is set.
//
// Publish (a device waits for its acknowledgement): a QoS >= 1 message goes to
// the broker directly while it is connected and the store is empty, and the
// device is acknowledged with the broker's PUBACK. Otherwise — the broker away,
// or older messages still in the store, which a device's newer one must not
// overtake — or when the broker does not acknowledge it in time, it is
// appended to the store and the device is acknowledged once the append is
// committed (Append returns after fsync). A full store is ErrUnavailable: the
// device gets its congestion answer and retries.
//
// Enqueue (nobody waits): QoS >= 1 messages go to an in-memory spool that the
// spooler writes to the store, so that the raw listener's reader never waits
// for a commit. The spooler takes the spool in batches and appends each
// device's (or, without a Device, each topic's) messages in order, devices in
// parallel so that they share commits.
//
// Replay: the sender publishes the store's messages in sequence order after
// the memory queue, up to Window in flight; the status topic's "online" went
// out before (onConnect publishes it before it wakes the sender). The acker
// removes a message (Queue.Ack) only after its PUBACK. A message whose publish
// failed (timeout, connection lost: a clean session forgets it) sets rewind:
// the sender sends nothing more from the store until every message in flight
// is settled, then starts again from the store's first message, so nothing is
// skipped (what the broker took meanwhile may come twice, as QoS 1 allows).
// A message's removal may fail (a store error): it is then sent again too.
//
// Counting: sent (under mu) is the number of store messages published and not
// settled yet — a failure settles at once, an acknowledgement once its removal
// is committed — so that a rewind never resends one whose removal is under
// way, and Close knows when nothing is in flight.

// Sources and reasons of mqttgw_store_refused_total.
const (
	sourcePublish = "publish" // Publish: the device got ErrUnavailable (its congestion answer)
	sourceEnqueue = "enqueue" // Enqueue: the message was dropped

	reasonFull      = "full"       // store.ErrFull: max_messages or max_bytes reached
	reasonTooLarge  = "too_large"  // store.ErrTooLarge: larger than max_bytes
	reasonClosed    = "closed"     // the store was closed (shutdown)
	reasonError     = "error"      // another store error (disk): logged
	reasonSpoolFull = "spool_full" // Enqueue: queue_messages or queue_bytes already waiting for the store
)

const (
	// replayChunk bounds the store messages the sender reads at once.
	replayChunk = 64
	// spoolBatch bounds the Enqueue messages the spooler appends at once (and
	// so its goroutines).
	spoolBatch = 256
	// storeWarnEvery rate-limits the warnings of store trouble.
	storeWarnEvery = 10 * time.Second
)

// publishDurable is Publish of a QoS >= 1 message with a store.
func (p *Proxy) publishDurable(ctx context.Context, m Message) error {
	if n, _ := p.q.Len(); n == 0 && p.online() {
		err := p.publishNow(ctx, m)
		if err == nil || ctx.Err() != nil {
			return err
		}
		// Not acknowledged (connection lost, timeout): the store takes it.
		// The broker may have it already; QoS 1 allows the duplicate.
		if ce := p.log.Check(zap.DebugLevel, "publish not acknowledged: writing it to the durable store"); ce != nil {
			ce.Write(zap.String("topic", m.Topic), zap.Error(err))
		}
	}
	return p.appendDurable(ctx, m, sourcePublish)
}

// online reports whether onConnect has run for the current connection: the
// status topic's "online" went out, so a direct publish cannot overtake it
// (paho reports the connection open before it calls onConnect).
func (p *Proxy) online() bool {
	p.mu.Lock()
	connected := p.connected
	p.mu.Unlock()
	select {
	case <-connected:
		return p.Connected()
	default:
		return false
	}
}

// publishNow publishes m and waits for its acknowledgement, giving up when the
// connection it went out on is lost.
func (p *Proxy) publishNow(ctx context.Context, m Message) error {
	p.mu.Lock()
	lost := p.lost
	p.mu.Unlock()
	tok, err := p.publishPaho(ctx, m, false)
	if err != nil {
		return fmt.Errorf("proxy: publish %q: %w", m.Topic, err)
	}
	t := time.NewTimer(p.opts.PublishTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
	case <-lost:
		if !isDone(tok) {
			p.m.failed.Inc()
			return fmt.Errorf("proxy: publish %q: connection lost: %w", m.Topic, ErrUnavailable)
		}
	case <-t.C:
		p.m.failed.Inc()
		return fmt.Errorf("proxy: publish %q: %w", m.Topic, ErrTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := tok.Error(); err != nil {
		p.m.failed.Inc()
		return fmt.Errorf("proxy: publish %q: %w", m.Topic, err)
	}
	p.m.published.Inc()
	return nil
}

// appendDurable appends m to the store and wakes the sender. A refusal is
// counted by source and reason and returned wrapping ErrUnavailable (ErrClosed
// when the store is closed) and the store's error.
func (p *Proxy) appendDurable(ctx context.Context, m Message, source string) error {
	_, err := p.q.Append(ctx, store.Message{
		Device: m.Device, Listener: m.Listener,
		Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain,
		Enqueued: time.Now(),
	})
	if err == nil {
		p.m.stored.Inc()
		p.wake()
		return nil
	}
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return err // the caller gave up before the commit: not written
	}
	reason := reasonError
	switch {
	case errors.Is(err, store.ErrFull):
		reason = reasonFull
	case errors.Is(err, store.ErrTooLarge):
		reason = reasonTooLarge
	case errors.Is(err, store.ErrClosed):
		reason = reasonClosed
	}
	p.refused(source, reason).Inc()
	switch reason {
	case reasonClosed:
		return fmt.Errorf("proxy: %w: %w", ErrClosed, err)
	case reasonFull:
		p.warn(reasonFull, "durable store full: QoS >= 1 publishes are refused with the congestion answer (devices) or dropped (plain datagrams) until the broker takes what it holds", err)
	case reasonError:
		p.warn(reasonError, "durable store: cannot write a message", err)
	}
	return fmt.Errorf("proxy: %w: %w", ErrUnavailable, err)
}

func (p *Proxy) refused(source, reason string) *metrics.Counter {
	return p.opts.Metrics.Counter("mqttgw_store_refused_total",
		"QoS >= 1 publishes the durable store did not take, by source (publish: the device got the congestion answer; enqueue: dropped) and reason.",
		"source", source, "reason", reason)
}

// warn logs a store problem, at most once per storeWarnEvery for each key.
func (p *Proxy) warn(key, msg string, err error) {
	if p.warned.allow(key, time.Now()) {
		p.log.Warn(msg, zap.Error(err))
	}
}

// warnLimiter lets one warning of each key through per storeWarnEvery.
type warnLimiter struct {
	mu   sync.Mutex
	last map[string]time.Time
}

func (w *warnLimiter) allow(key string, now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if t, ok := w.last[key]; ok && now.Sub(t) < storeWarnEvery {
		return false
	}
	if w.last == nil {
		w.last = map[string]time.Time{}
	}
	w.last[key] = now
	return true
}

// spoolMessage is Enqueue of a QoS >= 1 message with a store: it joins the
// spool, which the spooler writes to the store. When QueueSize or QueueBytes
// of messages are already waiting (the store cannot keep up) it is dropped.
func (p *Proxy) spoolMessage(m Message) error {
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return ErrClosed
	}
	if n := p.spool.len(); n > 0 && (n >= p.opts.QueueSize || p.spool.bytes+msgBytes(m) > p.opts.QueueBytes) {
		p.mu.Unlock()
		p.refused(sourceEnqueue, reasonSpoolFull).Inc()
		return fmt.Errorf("proxy: %w: %d messages waiting to be written to the durable store", ErrUnavailable, n)
	}
	p.spool.pushBack(m)
	p.mu.Unlock()
	select {
	case p.spoolWake <- struct{}{}:
	default:
	}
	return nil
}

// spooler writes the spool to the store until Close, and then what is left.
func (p *Proxy) spooler() {
	defer close(p.spoolDone)
	var batch []Message
	for {
		p.mu.Lock()
		for p.spool.len() > 0 && len(batch) < spoolBatch {
			m, _ := p.spool.front()
			p.spool.popFront()
			batch = append(batch, m)
		}
		p.spooling = len(batch)
		p.mu.Unlock()
		if len(batch) == 0 {
			select {
			case <-p.spoolWake:
			case <-p.stop:
				// Close waited for the spool; it ends empty unless ctx ran
				// out, and Enqueue takes no more: write the rest, then stop.
				p.mu.Lock()
				left := p.spool.len()
				p.mu.Unlock()
				if left == 0 {
					return
				}
			}
			continue
		}
		p.appendSpooled(batch)
		clear(batch)
		batch = batch[:0]
		p.mu.Lock()
		p.spooling = 0
		p.mu.Unlock()
	}
}

// appendSpooled appends batch to the store: each device's (or topic's)
// messages in order, one goroutine per device, so that devices share commits.
// Refusals are counted by appendDurable; the messages are dropped.
func (p *Proxy) appendSpooled(batch []Message) {
	groups := map[string][]Message{}
	var keys []string
	for _, m := range batch {
		k := OrderKey(m.Listener, m.Device, m.Topic)
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], m)
	}
	appendAll := func(ms []Message) {
		for _, m := range ms {
			_ = p.appendDurable(context.Background(), m, sourceEnqueue)
		}
	}
	if len(keys) == 1 {
		appendAll(groups[keys[0]])
		return
	}
	var wg sync.WaitGroup
	for _, k := range keys {
		wg.Go(func() { appendAll(groups[k]) })
	}
	wg.Wait()
}

// replay is the sender's place in the store: the highest sequence number sent
// since the last rewind, and a buffer for what it reads.
type replay struct {
	cursor uint64
	buf    []store.Message
}

// ready, with p.mu held, applies a pending rewind once every store message in
// flight is settled, and reports whether the sender may send from the store.
func (r *replay) ready(p *Proxy) bool {
	if p.rewind {
		if p.sent > 0 {
			return false
		}
		p.rewind = false
		r.cursor = 0
	}
	return true
}

// replayBatch publishes the next store messages after r.cursor (at most
// replayChunk), handing each to the acker, and reports whether there were any.
// It blocks while Window publishes are in flight.
func (p *Proxy) replayBatch(r *replay, lost chan struct{}) bool {
	r.buf = r.buf[:0]
	limit := min(replayChunk, p.opts.Window)
	err := p.q.Range(r.cursor, func(m store.Message) bool {
		r.buf = append(r.buf, m)
		return len(r.buf) < limit
	})
	if err != nil {
		p.warn("range", "durable store: cannot read the queue to replay it", err)
	}
	for i := range r.buf {
		m := &r.buf[i]
		tok, err := p.publishPaho(context.Background(), Message{Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain}, true)
		if err != nil { // Close gave up: the store keeps the rest
			clear(r.buf)
			return false
		}
		p.mu.Lock()
		p.sent++
		p.mu.Unlock()
		p.inflight <- pending{msg: Message{Topic: m.Topic}, tok: tok, seq: m.Seq, lost: lost}
		r.cursor = m.Seq
	}
	n := len(r.buf)
	clear(r.buf) // let the payloads go
	return n > 0
}

// waitStored waits for a store message's acknowledgement: for publish_timeout
// at most, and not beyond the loss of the connection it went out on (its
// PUBACK will never come: a clean session forgets it) or Close's giving up.
func (p *Proxy) waitStored(it pending) bool {
	t := time.NewTimer(p.opts.PublishTimeout)
	defer t.Stop()
	select {
	case <-it.tok.Done():
	case <-t.C:
	case <-it.lost:
	case <-p.stop:
	}
	return isDone(it.tok) && it.tok.Error() == nil
}

// removeAcked removes the acknowledged store messages in acked, in one commit,
// and settles them; a failed removal makes them be sent again.
func (p *Proxy) removeAcked(acked *[]uint64) {
	if len(*acked) == 0 {
		return
	}
	err := p.q.Ack(context.Background(), *acked...)
	p.mu.Lock()
	p.sent -= len(*acked)
	if err != nil {
		p.rewind = true
	}
	p.mu.Unlock()
	if err != nil {
		p.warn("ack", "durable store: cannot remove messages the broker acknowledged; they will be sent again", err)
	}
	*acked = (*acked)[:0]
	p.wake()
}

func isDone(tok paho.Token) bool {
	select {
	case <-tok.Done():
		return true
	default:
		return false
	}
}

// queueLen is what the queue gauges show: the memory queue, the spool and,
// with a store, the store's messages and record bytes.
func (p *Proxy) queueLen() (messages int, bytes int64) {
	p.mu.Lock()
	messages, bytes = p.queue.len()+p.spool.len(), int64(p.queue.bytes+p.spool.bytes)
	p.mu.Unlock()
	if p.q != nil {
		n, b := p.q.Len()
		messages += n
		bytes += b
	}
	return messages, bytes
}
