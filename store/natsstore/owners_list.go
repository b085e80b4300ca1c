package natsstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mqttgw/mqttgw/store"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The fleet's view (issue 13: GET /devices and the status page): every
// owner key at once, and the instances alive. Owner keys are one per device
// the fleet ever served (~100k), so RangeOwners reads them as one stream of
// messages, not one request per key as State.Range does.

// rangeOwnersAttempts bounds the passes of one RangeOwners whose consumer
// stalls.
const rangeOwnersAttempts = 3

// rangeOwnersBatch is how many owner messages the pass asks JetStream for at
// a time: a few hundred octets each, so a batch stays well below a megabyte.
const rangeOwnersBatch = 1024

// rangeOwnersIdle is how long the pass's consumer outlives a pass that
// could not delete it (a lost connection): long enough for a pass that is
// still reading, short enough that a failing caller polling every second
// leaves few behind.
const rangeOwnersIdle = 30 * time.Second

// ownerEntry is one owner key as RangeOwners read it.
type ownerEntry struct {
	instance string
	rev      uint64
}

// RangeOwners calls fn with every device's key, the instance owning it and
// the owner key's revision (see Take), in no particular order, each key
// once, until fn returns false. Delete markers are skipped (owner keys are
// never deleted, but a `nats kv` user may). fn is called once the pass is
// over, with no request in flight, so it may call the store.
//
// The pass is an ordered consumer over the owner keys (one message per key:
// the bucket keeps no history), its messages pulled rangeOwnersBatch at a
// time, read up to the last owner message the stream leader has once the
// pass gets there: every take acknowledged before RangeOwners began is
// seen, and one taken during the pass is there once, its owner the old or
// the new one.
// Options.Timeout bounds the whole pass and RequestTimeout each wait for
// the next message; Close ends a pass under way with store.ErrClosed. The
// keys are held in memory until fn is called (~100 octets each); 100 000
// take about a second.
func (s *Store) RangeOwners(fn func(key, instance string, rev uint64) bool) error {
	var (
		owners map[string]ownerEntry
		err    error
	)
	for attempt := 1; ; attempt++ {
		owners, err = s.listOwners()
		// A pass whose consumer stops delivering for RequestTimeout (seen
		// now and then right after a connection is made: nothing at all
		// within 5 s) goes again with a new consumer, a few times.
		if err == nil || !errors.Is(err, nats.ErrTimeout) || attempt == rangeOwnersAttempts {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("store: %s: range owners: %w", s.label, err)
	}
	for k, o := range owners {
		if !fn(k, o.instance, o.rev) {
			return nil
		}
	}
	return nil
}

// listOwners reads every owner key's last value.
func (s *Store) listOwners() (map[string]ownerEntry, error) {
	release, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer release()
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
	defer cancel()
	owners := map[string]ownerEntry{}
	// The pass ends at the last owner message as the stream leader has it,
	// asked again whenever the pass gets there, not when the consumer's
	// count of what is pending (NumPending) reaches zero: with keys taken
	// during a pass over 100 000, that count was seen to stay above zero
	// after the last message; and the consumer's replica may lag.
	target, err := s.lastOwnerSeq(ctx)
	if err != nil || target == 0 {
		return owners, err
	}
	stream := "KV_" + StateBucket(s.opts.Name)
	var cons jetstream.Consumer
	err = s.retry(ctx, false, func(actx context.Context) error {
		var err error
		cons, err = s.js.OrderedConsumer(actx, stream, jetstream.OrderedConsumerConfig{
			FilterSubjects:    []string{s.st.prefix + ownerPrefix + ".>"},
			DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
			InactiveThreshold: rangeOwnersIdle,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	// The ordered consumer deletes the consumers it replaces, not its last
	// one: without this, each pass would leave one behind for
	// rangeOwnersIdle.
	defer func() {
		if info := cons.CachedInfo(); info != nil {
			dctx, dcancel := context.WithTimeout(context.Background(), s.opts.RequestTimeout)
			_ = s.js.DeleteConsumer(dctx, stream, info.Name) // else it expires by itself
			dcancel()
		}
	}()
	it, err := cons.Messages(jetstream.PullMaxMessages(rangeOwnersBatch))
	if err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	defer it.Stop()
	names := map[string]string{} // one string per instance, shared by its keys
	var seq uint64               // the last message's
	for {
		if s.closing() {
			return nil, store.ErrClosed
		}
		wait := min(s.opts.RequestTimeout, time.Until(deadlineOf(ctx)))
		if wait <= 0 {
			return nil, fmt.Errorf("%d owner keys read, up to sequence %d of %d: %w", len(owners), seq, target, context.DeadlineExceeded)
		}
		m, err := it.Next(jetstream.NextMaxWait(wait))
		if errors.Is(err, nats.ErrTimeout) {
			// Nothing more: the target itself may be gone (a delete
			// marker's TTL).
			if target, err = s.lastOwnerSeq(ctx); err == nil && seq >= target {
				return owners, nil
			}
			return nil, fmt.Errorf("%d owner keys read, up to sequence %d of %d: %w", len(owners), seq, target, nats.ErrTimeout)
		}
		if err != nil {
			return nil, fmt.Errorf("%d owner keys read: %w", len(owners), err)
		}
		md, err := m.Metadata()
		if err != nil {
			return nil, fmt.Errorf("owner key %s: %w", m.Subject(), err)
		}
		seq = md.Sequence.Stream
		if !isMarker(m.Headers()) {
			key, inst, err := parseEnvelope(m.Data())
			if err != nil {
				return nil, fmt.Errorf("owner key %s: %w", m.Subject(), err)
			}
			name, ok := names[string(inst)]
			if !ok {
				name = string(inst)
				names[name] = name
			}
			// A key taken again during the pass comes again, later.
			if o, ok := owners[key]; !ok || o.rev < seq {
				owners[key] = ownerEntry{instance: name, rev: seq}
			}
		} else {
			delete(owners, s.st.ownerKeyOf(m.Subject()))
		}
		if seq >= target || md.NumPending == 0 {
			// At the end as known: a key taken since is after it.
			if target, err = s.lastOwnerSeq(ctx); err != nil {
				return nil, err
			}
			if seq >= target {
				return owners, nil
			}
		}
	}
}

// lastOwnerSeq is the stream sequence of the last owner message, from the
// stream leader; 0 when there is none.
func (s *Store) lastOwnerSeq(ctx context.Context) (uint64, error) {
	var raw *jetstream.RawStreamMsg
	err := s.retry(ctx, false, func(actx context.Context) error {
		var err error
		raw, err = s.st.stream.GetLastMsgForSubject(actx, s.st.prefix+ownerPrefix+".>")
		return err
	})
	switch {
	case isNotFound(err):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("last owner key: %w", err)
	}
	return raw.Sequence, nil
}

// ownerKeyOf is the device key of an owner subject when its token is inline
// (a hashed one cannot be reversed: its marker carries no envelope), else "".
func (st *state) ownerKeyOf(subject string) string {
	_, key, inline, err := parseKVKey(strings.TrimPrefix(subject, st.prefix))
	if err != nil || !inline {
		return ""
	}
	return key
}

// closing reports whether Close has begun.
func (s *Store) closing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// deadlineOf is ctx's deadline; ctx always has one here.
func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// Instances returns the instances of the fleet alive now, sorted: those
// whose live key (Options.OwnerLease) is in the state bucket. The stream
// leader answers, from its subject index: one request however many keys
// the bucket holds.
func (s *Store) Instances() ([]string, error) {
	release, err := s.enter()
	if err != nil {
		return nil, fmt.Errorf("store: %s: instances: %w", s.label, err)
	}
	defer release()
	var info *jetstream.StreamInfo
	err = s.retry(context.Background(), false, func(actx context.Context) error {
		var err error
		info, err = s.st.stream.Info(actx, jetstream.WithSubjectFilter(s.st.prefix+livePrefix+".>"))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: %s: instances: %w", s.label, err)
	}
	out := make([]string, 0, len(info.State.Subjects))
	for subj, n := range info.State.Subjects {
		_, inst, inline, err := parseKVKey(strings.TrimPrefix(subj, s.st.prefix))
		if err != nil || !inline || n == 0 {
			continue // not a live key this package wrote
		}
		out = append(out, inst)
	}
	slices.Sort(out)
	return out, nil
}
