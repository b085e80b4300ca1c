package natsstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mqttgw/mqttgw/store"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Draining a dead instance's queue (issue 13: "a dead instance's orphaned
// upstream queue is drained by the others once its lease expires; per-device
// order is kept; nothing acknowledged is lost").
//
// An orphan is a queue stream of the fleet, of an instance other than this
// one, that holds messages while its instance's live key is gone (its lease
// ran out: it was killed, or stopped with the broker away). One instance at
// a time drains it, the one holding its drain key in the state bucket:
//
//	drain.<base64url(instance)>  appendEnvelope(instance, drainer); per-message
//	                             TTL OwnerLease, renewed every OwnerLease/3 by
//	                             a compare-and-swap on its own revision
//
// ClaimDrain writes the key with a compare-and-swap on its absence, so of two
// instances claiming at once one wins. The drainer reads the orphan in
// sequence order (the order of the appends, so each device's messages in
// order) and acknowledges each message only once the broker or its own
// durable queue has it: a drain that stops anywhere (the drainer killed, its
// claim lost) leaves every message it did not hand on to the next drainer,
// and what it handed on without acknowledging comes twice (QoS 1 allows it).
//
// The instance coming back: Open waits while another instance holds the drain
// key of its queue (waitDrained), and a drainer gives its claim up when the
// instance is alive again (Drain.OwnerBack, checked between chunks), so the
// two never replay one queue at once. The orphan's stream is left in place,
// empty: its instance may come back to it.

// drainPrefix is the state bucket's prefix of drain keys, which no
// store.Kind's name equals.
const drainPrefix = "drain"

// ErrDrainClaimed: another instance holds the drain of that queue.
var ErrDrainClaimed = errors.New("another instance is draining that queue")

// Orphan is a dead instance's queue that holds messages.
type Orphan struct {
	Instance string
	Messages uint64
}

func (st *state) drainSubject(instance string) string {
	k, _ := kvKeyIn(drainPrefix, instance)
	return st.prefix + k
}

// Orphans lists the fleet's queues that need a drain: those of instances
// other than this one whose live key is gone and which hold messages.
func (s *Store) Orphans(ctx context.Context) ([]Orphan, error) {
	release, err := s.enter()
	if err != nil {
		return nil, fmt.Errorf("store: %s: orphans: %w", s.label, err)
	}
	defer release()
	var infos []*jetstream.StreamInfo
	err = s.retry(ctx, false, func(actx context.Context) error {
		infos = infos[:0]
		l := s.js.ListStreams(actx, jetstream.WithStreamListSubject(s.opts.Name+".queue.*"))
		for info := range l.Info() {
			infos = append(infos, info)
		}
		return l.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("store: %s: orphans: %w", s.label, err)
	}
	var out []Orphan
	for _, info := range infos {
		md := info.Config.Metadata
		inst := md[metaInstance]
		if md[metaRole] != "queue" || inst == "" || inst == s.opts.Instance || info.State.Msgs == 0 ||
			info.Config.Name != QueueStream(s.opts.Name, inst) {
			continue
		}
		raw, _, err := s.st.last(s.st.liveSubject(inst))
		if err != nil {
			return nil, fmt.Errorf("store: %s: orphans: live key of %s: %w", s.label, inst, err)
		}
		if raw == nil {
			out = append(out, Orphan{Instance: inst, Messages: info.State.Msgs})
		}
	}
	return out, nil
}

// Drain is this instance's claim on an orphan's queue: Queue reads and
// acknowledges its messages (its Append is not for use: the orphan's
// instance is gone). Release ends the claim.
type Drain struct {
	s        *Store
	instance string
	q        *queue
	subject  string // the drain key's

	mu  sync.Mutex // guards rev
	rev uint64     // the drain key's revision this claim wrote last

	lost     chan struct{} // closed when a renewal finds the claim gone
	lostOnce sync.Once
	stop     chan struct{}
	wg       sync.WaitGroup
	once     sync.Once
}

// ClaimDrain claims the drain of instance's queue: ErrDrainClaimed when
// another instance holds it. The claim is renewed until Release; Lost is
// closed if a renewal finds it taken (it expired, say, while this process
// was stopped), and the holder must then stop draining.
func (s *Store) ClaimDrain(ctx context.Context, instance string) (*Drain, error) {
	if instance == s.opts.Instance || !nameRE.MatchString(instance) {
		return nil, fmt.Errorf("store: %s: claim drain of %q: %w", s.label, instance, ErrBadOptions)
	}
	if s.opts.OwnerLease <= 0 {
		return nil, fmt.Errorf("store: %s: claim drain: no owner lease: %w", s.label, ErrBadOptions)
	}
	release, err := s.enter()
	if err != nil {
		return nil, fmt.Errorf("store: %s: claim drain of %s: %w", s.label, instance, err)
	}
	defer release()
	d := &Drain{s: s, instance: instance, subject: s.st.drainSubject(instance), lost: make(chan struct{}), stop: make(chan struct{})}
	raw, cur, err := s.st.last(d.subject)
	if err != nil {
		return nil, fmt.Errorf("store: %s: claim drain of %s: %w", s.label, instance, err)
	}
	if raw != nil {
		return nil, fmt.Errorf("store: %s: claim drain of %s: %w", s.label, instance, ErrDrainClaimed)
	}
	d.rev, err = d.write(ctx, cur)
	if wrongLast(err) {
		return nil, fmt.Errorf("store: %s: claim drain of %s: %w", s.label, instance, ErrDrainClaimed)
	}
	if err != nil {
		return nil, fmt.Errorf("store: %s: claim drain of %s: %w", s.label, instance, err)
	}
	var stream jetstream.Stream
	err = s.retry(ctx, false, func(actx context.Context) error {
		var err error
		stream, err = s.js.Stream(actx, QueueStream(s.opts.Name, instance))
		return err
	})
	if err == nil {
		d.q = newQueue(s, instance)
		d.q.stream = stream
		err = d.q.refresh()
	}
	if err != nil {
		d.Release()
		return nil, fmt.Errorf("store: %s: claim drain of %s: queue: %w", s.label, instance, err)
	}
	d.wg.Go(d.renew)
	return d, nil
}

// write writes the drain key with this instance as the drainer, expecting
// the key at revision cur, and returns its new revision.
func (d *Drain) write(ctx context.Context, cur uint64) (uint64, error) {
	s := d.s
	val, err := appendEnvelope(nil, d.instance, []byte(s.opts.Instance))
	if err != nil {
		return 0, err
	}
	var ack *pubAck
	err = s.retry(ctx, true, func(actx context.Context) error {
		m := &nats.Msg{Subject: d.subject, Data: val, Header: nats.Header{
			hdrTTL:            {ttlHeader(s.opts.OwnerLease)},
			hdrExpLastSubjSeq: {strconv.FormatUint(cur, 10)},
		}}
		var err error
		ack, err = s.publish(actx, m)
		return err
	})
	if err != nil {
		return 0, err
	}
	return ack.Seq, nil
}

// renew rewrites the drain key every lease/3 until Release; a refused
// compare-and-swap means another instance holds it now: Lost.
func (d *Drain) renew() {
	s := d.s
	t := time.NewTicker(s.opts.OwnerLease / 3)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-s.connDone:
			d.lostOnce.Do(func() { close(d.lost) })
			return
		case <-t.C:
		}
		d.mu.Lock()
		cur := d.rev
		d.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), min(s.opts.RequestTimeout, s.opts.OwnerLease/3))
		rev, err := d.write(ctx, cur)
		cancel()
		switch {
		case err == nil:
			d.mu.Lock()
			d.rev = rev
			d.mu.Unlock()
		case wrongLast(err) || errors.Is(err, store.ErrClosed):
			d.lostOnce.Do(func() { close(d.lost) })
			return
		}
		// Other failures: the next tick tries again, within the lease.
	}
}

// Instance is the orphan's instance.
func (d *Drain) Instance() string { return d.instance }

// Queue is the orphan's queue.
func (d *Drain) Queue() store.Queue { return d.q }

// Lost is closed when the claim is lost.
func (d *Drain) Lost() <-chan struct{} { return d.lost }

// OwnerBack reports whether the orphan's instance announced itself alive
// again: the drainer then stops and releases its claim, which that
// instance's Open waits for.
func (d *Drain) OwnerBack() (bool, error) { return d.s.Alive(d.instance) }

// Release stops renewing the claim and removes the drain key (if this claim
// still holds it), so the orphan's instance, waiting in Open, or another
// drainer may go on at once. Idempotent.
func (d *Drain) Release() {
	d.once.Do(func() {
		close(d.stop)
		d.wg.Wait()
		s := d.s
		release, err := s.enter()
		if err != nil {
			return // closed: the key expires with its lease
		}
		defer release()
		d.mu.Lock()
		cur := d.rev
		d.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.RequestTimeout)
		defer cancel()
		m := &nats.Msg{Subject: d.subject, Header: nats.Header{
			hdrKVOperation:    {"DEL"},
			hdrTTL:            {deleteMarkerTTL.String()},
			hdrExpLastSubjSeq: {strconv.FormatUint(cur, 10)},
		}}
		_, _ = s.publish(ctx, m) // refused or failed: the key expires with its lease
	})
}

// waitDrained waits, at Open, while another instance holds the drain of this
// instance's queue: this instance's live key is out, so the drainer sees it
// back at its next chunk and releases the claim; a drainer that died holding
// it lets it expire within the lease.
func (s *Store) waitDrained(ctx context.Context) error {
	subj := s.st.drainSubject(s.opts.Instance)
	for {
		raw, _, err := s.st.last(subj)
		if err != nil {
			return fmt.Errorf("drain key: %w", err)
		}
		if raw == nil {
			return nil
		}
		if err := s.pause(ctx, 100*time.Millisecond); err != nil {
			return fmt.Errorf("waiting for another instance's drain of this queue to stop: %w", err)
		}
	}
}

// Backlog is what an instance's queue holds: its first and last sequence
// numbers, its number of messages, and how many of them each device has.
type Backlog struct {
	First, Last, Messages uint64
	devices               map[string]uint64 // deviceToken → messages
}

// Holds reports whether the queue still holds a message of listener's
// device at or below seq: false once everything it had there up to seq has
// been acknowledged (sent, or drained).
func (b Backlog) Holds(listener, device string, seq uint64) bool {
	return b.Messages > 0 && b.First <= seq && b.devices[deviceToken(listener, device, "")] > 0
}

// QueueBacklog reads instance's queue stream (one stream info request, its
// subjects listed): what devices that moved here from instance wait for
// (gateway/fence.go). An instance without a queue has an empty backlog.
func (s *Store) QueueBacklog(ctx context.Context, instance string) (Backlog, error) {
	var b Backlog
	err := s.queueOf(ctx, "backlog", instance, func(actx context.Context, st jetstream.Stream) error {
		subject := QueueSubject(s.opts.Name, instance)
		info, err := st.Info(actx, jetstream.WithSubjectFilter(subject+".*"))
		if err != nil {
			return err
		}
		b = Backlog{First: info.State.FirstSeq, Last: info.State.LastSeq, Messages: info.State.Msgs,
			devices: make(map[string]uint64, len(info.State.Subjects))}
		for subj, n := range info.State.Subjects {
			b.devices[strings.TrimPrefix(subj, subject+".")] = n
		}
		return nil
	})
	return b, err
}

// DeviceBacklog returns the sequence number of the last message of
// listener's device in instance's queue; 0 when it has none there.
func (s *Store) DeviceBacklog(ctx context.Context, instance, listener, device string) (uint64, error) {
	var last uint64
	err := s.queueOf(ctx, "backlog", instance, func(actx context.Context, st jetstream.Stream) error {
		raw, err := st.GetLastMsgForSubject(actx, QueueSubject(s.opts.Name, instance)+"."+deviceToken(listener, device, ""))
		switch {
		case isNotFound(err):
			last = 0
			return nil
		case err != nil:
			return err
		}
		last = raw.Sequence
		return nil
	})
	return last, err
}

// queueOf calls fn with instance's queue stream, retried as a read; none
// (no stream) is no error and no call.
func (s *Store) queueOf(ctx context.Context, what, instance string, fn func(context.Context, jetstream.Stream) error) error {
	if !nameRE.MatchString(instance) {
		return fmt.Errorf("store: %s: %s of %q: %w", s.label, what, instance, ErrBadOptions)
	}
	release, err := s.enter()
	if err != nil {
		return fmt.Errorf("store: %s: %s of %s: %w", s.label, what, instance, err)
	}
	defer release()
	err = s.retry(ctx, false, func(actx context.Context) error {
		st, err := s.js.Stream(actx, QueueStream(s.opts.Name, instance))
		if err != nil {
			return err
		}
		return fn(actx, st)
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: %s: %s of %s: %w", s.label, what, instance, err)
	}
	return nil
}
