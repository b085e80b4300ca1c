package natsstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/mqttgw/mqttgw/store"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Fleet membership and device ownership (issue 13), in the state bucket
// beside the records, under prefixes that no store.Kind's name equals:
//
//	live.<base64url(instance)>  no value; per-message TTL Options.OwnerLease:
//	                            the instance is alive while the key is there
//	owner.<base64url(key)>      the instance serving the device of key (the
//	                            key of its record): appendEnvelope(key, instance)
//
// An owner key's revision is its message's stream sequence. Take writes it
// with a compare-and-swap (Nats-Expected-Last-Subject-Sequence: the revision
// it read), so of two instances taking one device at once one wins and the
// other reads again. ApplyOwned fences the owner's record writes: each
// message carries Nats-Expected-Last-Subject-Sequence(-Subject) naming its
// owner key at the revision the writer took, which JetStream checks for
// every message of an atomic batch (nats-server 2.12,
// server/jetstream_batching.go: checkMsgHeadersPreClusteredProposal), so a
// write by an instance that lost the device (its owner key moved on) is
// refused whole. Owner keys are never deleted: a device's last owner stays
// visible (a few dozen octets per device).

// Prefixes of the fleet's own keys in the state bucket.
const (
	livePrefix  = "live"
	ownerPrefix = "owner"
)

// Headers of a JetStream publish's per-subject compare-and-swap
// (nats-server server/stream.go).
const (
	hdrExpLastSubjSeq     = "Nats-Expected-Last-Subject-Sequence"
	hdrExpLastSubjSeqSubj = "Nats-Expected-Last-Subject-Sequence-Subject"
)

// JetStream's answers to a failed compare-and-swap.
const (
	codeWrongLastSeq     = 10071 // the subject's last sequence is another
	codeWrongLastSeqBusy = 10164 // another write of the subject is under way: read again
)

// takeAttempts bounds Take's read-and-swap rounds when other instances keep
// taking the same key.
const takeAttempts = 8

// wrongLast reports whether err is JetStream refusing a compare-and-swap.
func wrongLast(err error) bool {
	ae := apiCode(err)
	return ae != nil && (ae.ErrorCode == codeWrongLastSeq || ae.ErrorCode == codeWrongLastSeqBusy)
}

// Instance is this store's Options.Instance: the owner Take writes.
func (s *Store) Instance() string { return s.opts.Instance }

func (st *state) ownerSubject(key string) string {
	k, _ := kvKeyIn(ownerPrefix, key)
	return st.prefix + k
}

func (st *state) liveSubject(instance string) string {
	k, _ := kvKeyIn(livePrefix, instance)
	return st.prefix + k
}

// last reads subject's last message from the stream leader; nil when there
// is none or it is a delete marker, with the sequence of what is there (0:
// nothing), which a compare-and-swap expects.
func (st *state) last(subject string) (*jetstream.RawStreamMsg, uint64, error) {
	var raw *jetstream.RawStreamMsg
	err := st.s.retry(context.Background(), false, func(actx context.Context) error {
		var err error
		raw, err = st.stream.GetLastMsgForSubject(actx, subject)
		return err
	})
	switch {
	case isNotFound(err):
		return nil, 0, nil
	case err != nil:
		return nil, 0, err
	case isMarker(raw.Header):
		return nil, raw.Sequence, nil
	}
	return raw, raw.Sequence, nil
}

// isNotFound reports whether a get found no message.
func isNotFound(err error) bool {
	if err == nil {
		return false
	}
	if ae := apiCode(err); ae != nil && ae.ErrorCode == codeNoMessageFound {
		return true
	}
	return errors.Is(err, jetstream.ErrMsgNotFound)
}

// Alive reports whether instance's live key is there: it renewed it within
// its lease (Options.OwnerLease).
func (s *Store) Alive(instance string) (bool, error) {
	release, err := s.enter()
	if err != nil {
		return false, fmt.Errorf("store: %s: alive %s: %w", s.label, instance, err)
	}
	defer release()
	raw, _, err := s.st.last(s.st.liveSubject(instance))
	if err != nil {
		return false, fmt.Errorf("store: %s: alive %s: %w", s.label, instance, err)
	}
	return raw != nil, nil
}

// Owner returns the instance that owns key and the owner key's revision;
// "" and 0 when no instance ever took it.
func (s *Store) Owner(key string) (instance string, rev uint64, err error) {
	release, err := s.enter()
	if err != nil {
		return "", 0, fmt.Errorf("store: %s: owner: %w", s.label, err)
	}
	defer release()
	instance, rev, err = s.owner(key)
	if err != nil {
		return "", 0, fmt.Errorf("store: %s: owner: %w", s.label, err)
	}
	return instance, rev, nil
}

func (s *Store) owner(key string) (string, uint64, error) {
	raw, rev, err := s.st.last(s.st.ownerSubject(key))
	if err != nil || raw == nil {
		return "", rev, err
	}
	k, inst, err := parseEnvelope(raw.Data)
	if err != nil {
		return "", 0, err
	}
	if k != key {
		return "", rev, nil // another key with the same SHA-256: not owned
	}
	return string(inst), rev, nil
}

// Take makes this instance the owner of key, whoever owned it (MQTT-style
// take-over: the device is here now), with a compare-and-swap on the owner
// key; rev is the revision it wrote (or found, when this instance owns key
// already), the fence of its record writes (ApplyOwned), and prev the
// previous owner ("" none). A swap lost to another instance taking key at
// the same moment is tried again, at most takeAttempts times.
func (s *Store) Take(ctx context.Context, key string) (rev uint64, prev string, err error) {
	if len(key) == 0 || len(key) > store.MaxKeyLen {
		return 0, "", fmt.Errorf("store: %s: take: %d-byte key: %w", s.label, len(key), store.ErrBadKey)
	}
	if err := ctx.Err(); err != nil {
		return 0, "", fmt.Errorf("store: %s: take: %w", s.label, err)
	}
	release, err := s.enter()
	if err != nil {
		return 0, "", fmt.Errorf("store: %s: take: %w", s.label, err)
	}
	defer release()
	val, err := appendEnvelope(nil, key, []byte(s.opts.Instance))
	if err != nil {
		return 0, "", fmt.Errorf("store: %s: take: %w", s.label, err)
	}
	subj := s.st.ownerSubject(key)
	for attempt := 1; ; attempt++ {
		owner, cur, err := s.owner(key)
		if err != nil {
			return 0, "", fmt.Errorf("store: %s: take: %w", s.label, err)
		}
		if owner == s.opts.Instance {
			return cur, owner, nil // ours (also: an earlier attempt's swap was stored, its answer lost)
		}
		var ack *pubAck
		err = s.retry(ctx, true, func(actx context.Context) error {
			m := &nats.Msg{Subject: subj, Header: nats.Header{hdrExpLastSubjSeq: {strconv.FormatUint(cur, 10)}}, Data: val}
			var err error
			ack, err = s.publish(actx, m)
			return err
		})
		switch {
		case err == nil:
			return ack.Seq, owner, nil
		case !wrongLast(err) || attempt == takeAttempts:
			return 0, "", fmt.Errorf("store: %s: take: %w", s.label, err)
		}
	}
}

// TakeFrom makes this instance the owner of key only while the owner key is
// still at revision rev (0: no instance ever took it), with one
// compare-and-swap: the adoption of an orphan (a device whose owner's live key
// expired), decided on what was read at rev, must not take a device another
// instance took since. ok is false, with no error, when the owner key moved
// on; newRev is the revision written, the fence of the record's writes.
func (s *Store) TakeFrom(ctx context.Context, key string, rev uint64) (newRev uint64, ok bool, err error) {
	if len(key) == 0 || len(key) > store.MaxKeyLen {
		return 0, false, fmt.Errorf("store: %s: take from: %d-byte key: %w", s.label, len(key), store.ErrBadKey)
	}
	if err := ctx.Err(); err != nil {
		return 0, false, fmt.Errorf("store: %s: take from: %w", s.label, err)
	}
	release, err := s.enter()
	if err != nil {
		return 0, false, fmt.Errorf("store: %s: take from: %w", s.label, err)
	}
	defer release()
	val, err := appendEnvelope(nil, key, []byte(s.opts.Instance))
	if err != nil {
		return 0, false, fmt.Errorf("store: %s: take from: %w", s.label, err)
	}
	subj := s.st.ownerSubject(key)
	var ack *pubAck
	err = s.retry(ctx, true, func(actx context.Context) error {
		m := &nats.Msg{Subject: subj, Header: nats.Header{hdrExpLastSubjSeq: {strconv.FormatUint(rev, 10)}}, Data: val}
		var err error
		ack, err = s.publish(actx, m)
		return err
	})
	switch {
	case err == nil:
		return ack.Seq, true, nil
	case !wrongLast(err):
		return 0, false, fmt.Errorf("store: %s: take from: %w", s.label, err)
	}
	// Refused: another write came first, unless it was this call's own
	// attempt whose answer was lost (the retry's swap then finds it).
	owner, cur, err := s.owner(key)
	if err != nil {
		return 0, false, fmt.Errorf("store: %s: take from: %w", s.label, err)
	}
	if owner == s.opts.Instance && cur > rev {
		return cur, true, nil
	}
	return 0, false, nil
}

// ApplyOwned is State.Apply for records of owned devices: ops[i] is written
// only while the owner key of ops[i].Key (the device's record key is its
// owner key) is at revision revs[i], the one this instance's Take returned; 0
// writes it unfenced. All ops are one atomic batch; when a fence refuses it,
// they are written one at a time, and lost lists the ops refused because
// their owner key moved on: another instance took the device, and this one
// must let it go. err is any other failure (the ops after it unwritten; ops
// written one at a time before it stay written, which their retry rewrites
// alike).
func (s *Store) ApplyOwned(ctx context.Context, ops []store.Op, revs []uint64) (lost []int, err error) {
	st := s.st
	if len(ops) == 0 {
		return nil, nil
	}
	if len(revs) != len(ops) {
		return nil, fmt.Errorf("store: %s: apply owned: %d ops, %d revisions: %w", s.label, len(ops), len(revs), ErrBadOptions)
	}
	if len(ops) > MaxApplyOps {
		return nil, fmt.Errorf("store: %s: apply owned: %d ops, at most %d: %w (%w)", s.label, len(ops), MaxApplyOps, ErrTooManyOps, store.ErrTooLarge)
	}
	fenced := func(i int) (*nats.Msg, error) {
		m, err := st.message(ops[i])
		if err != nil || revs[i] == 0 {
			return m, err
		}
		m.Header.Set(hdrExpLastSubjSeq, strconv.FormatUint(revs[i], 10))
		m.Header.Set(hdrExpLastSubjSeqSubj, st.ownerSubject(ops[i].Key))
		if n := int64(len(m.Data)+headerLen(m.Header)) + 128; n > s.nc.MaxPayload() {
			return nil, fmt.Errorf("%s: %d-byte value, server payload limit %d: %w", ops[i].Kind, len(ops[i].Value), s.nc.MaxPayload(), store.ErrTooLarge)
		}
		return m, nil
	}
	msgs := make([]*nats.Msg, len(ops))
	for i := range ops {
		if msgs[i], err = fenced(i); err != nil {
			return nil, fmt.Errorf("store: %s: apply owned: %w", s.label, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: %s: apply owned: %w", s.label, err)
	}
	release, err := s.enter()
	if err != nil {
		return nil, fmt.Errorf("store: %s: apply owned: %w", s.label, err)
	}
	defer release()
	err = s.retry(ctx, true, func(actx context.Context) error {
		if len(msgs) == 1 {
			_, err := s.publish(actx, msgs[0])
			return err
		}
		_, err := s.publishBatch(actx, msgs)
		return err
	})
	if err == nil || !wrongLast(err) {
		if err != nil {
			err = fmt.Errorf("store: %s: apply owned: %w", s.label, err)
		}
		return nil, err
	}
	// A fence refused the batch: one op at a time tells which.
	for i := range ops {
		gone, err := s.applyOneOwned(ctx, fenced, i, ops[i].Key, revs[i])
		if err != nil {
			return lost, fmt.Errorf("store: %s: apply owned: %w", s.label, err)
		}
		if gone {
			lost = append(lost, i)
		}
	}
	return lost, nil
}

// applyOneOwned writes op i alone; gone reports that its fence refused it
// because its owner key moved on. A refusal while the owner key is still at
// rev (JetStream refuses a check on a subject with a write under way) is
// tried again, a few times.
func (s *Store) applyOneOwned(ctx context.Context, fenced func(int) (*nats.Msg, error), i int, key string, rev uint64) (gone bool, err error) {
	wait := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err = s.retry(ctx, true, func(actx context.Context) error {
			m, err := fenced(i) // fresh headers: the batch's are on the old one
			if err != nil {
				return err
			}
			_, err = s.publish(actx, m)
			return err
		})
		if err == nil || !wrongLast(err) {
			return false, err
		}
		owner, cur, rerr := s.owner(key)
		if rerr != nil {
			return false, rerr
		}
		if owner != s.opts.Instance || cur != rev {
			return true, nil
		}
		if attempt == takeAttempts {
			return false, err
		}
		// A write of the owner key under way: it settles within a round
		// trip. Nothing of op i was written yet, so ctx and Close may end
		// the wait.
		if err := s.pause(ctx, wait); err != nil {
			return false, err
		}
		wait *= 2
	}
}

// WatchOwners calls fn for every owner key written from now on (after the
// state stream's last sequence when it starts), in the order JetStream stored them, on one goroutine of nats.go's:
// key is the device's key, instance its new owner, rev the owner key's
// revision. fn must not block for long. The watch is an ordered consumer
// (it recreates itself after a reconnect and resumes where it was), which
// JetStream may serve from a replica: it may lag behind the leader a little.
// stop ends it and returns once it is over; Close ends those left.
func (s *Store) WatchOwners(fn func(key, instance string, rev uint64)) (stop func(), err error) {
	release, err := s.enter()
	if err != nil {
		return nil, fmt.Errorf("store: %s: watch owners: %w", s.label, err)
	}
	defer release()
	// From the sequence after the stream's last, not "new": an ordered
	// consumer that resets (missed heartbeats, a reconnect) before it
	// delivered anything would start "new" again and skip what came between.
	var info *jetstream.StreamInfo
	err = s.retry(context.Background(), false, func(actx context.Context) error {
		var err error
		info, err = s.st.stream.Info(actx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: %s: watch owners: %w", s.label, err)
	}
	var cc jetstream.ConsumeContext
	err = s.retry(context.Background(), false, func(actx context.Context) error {
		cons, err := s.js.OrderedConsumer(actx, "KV_"+StateBucket(s.opts.Name), jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{s.st.prefix + ownerPrefix + ".>"},
			DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:    info.State.LastSeq + 1,
		})
		if err != nil {
			return err
		}
		cc, err = cons.Consume(func(m jetstream.Msg) {
			md, err := m.Metadata()
			if err != nil || isMarker(m.Headers()) {
				return
			}
			key, inst, err := parseEnvelope(m.Data())
			if err != nil {
				return
			}
			fn(key, string(inst), md.Sequence.Stream)
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: %s: watch owners: %w", s.label, err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cc.Stop()
			select {
			case <-cc.Closed():
			case <-time.After(closeTimeout):
			}
			s.mu.Lock()
			delete(s.watches, cc)
			s.mu.Unlock()
		})
	}
	s.mu.Lock()
	s.watches[cc] = stop
	s.mu.Unlock()
	return stop, nil
}

// ttlHeader is a per-message TTL of at least d, in whole seconds.
func ttlHeader(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}

// announce writes this instance's live key, with the lease as its TTL.
func (s *Store) announce(ctx context.Context) error {
	m := &nats.Msg{Subject: s.st.liveSubject(s.opts.Instance), Header: nats.Header{hdrTTL: {ttlHeader(s.opts.OwnerLease)}}}
	_, err := s.publish(ctx, m)
	return err
}

// startLive writes the live key (Open fails if it cannot) and starts the
// goroutine renewing it every lease/3 until Close: two renewals may fail in a
// row (a leader election) before the key expires.
func (s *Store) startLive(ctx context.Context) error {
	if s.opts.OwnerLease <= 0 {
		return nil
	}
	if err := s.retry(ctx, true, s.announce); err != nil {
		return fmt.Errorf("live key: %w", err)
	}
	s.liveStop = make(chan struct{})
	s.liveWG.Go(func() {
		t := time.NewTicker(s.opts.OwnerLease / 3)
		defer t.Stop()
		for {
			select {
			case <-s.liveStop:
				return
			case <-t.C:
				ctx, cancel := context.WithTimeout(context.Background(), min(s.opts.RequestTimeout, s.opts.OwnerLease/3))
				_ = s.announce(ctx) // the next tick tries again
				cancel()
			}
		}
	})
	return nil
}
