package natsstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mqttgw/mqttgw/store"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// deleteMarkerTTL is how long a deleted key's marker stays in the
	// bucket (a watcher that reconnects within it still sees the deletion);
	// then JetStream removes it and the key is simply absent.
	deleteMarkerTTL = 15 * time.Minute
)

// state is the State face of a Store: one JetStream key-value bucket for the
// whole fleet, every kind in it under its own key prefix (keys.go), so that
// one Apply, whatever kinds it touches, is one atomic batch on one stream.
type state struct {
	s      *Store
	stream jetstream.Stream
	prefix string // subject prefix of the bucket's keys: "$KV.<bucket>."
}

func (s *Store) openState(ctx context.Context) (*state, error) {
	o := s.opts
	bucket := StateBucket(o.Name)
	st := &state{s: s, prefix: "$KV." + bucket + "."}
	var err error
	// The stream is laid out as a JetStream key-value bucket (what nats.go's
	// CreateKeyValue makes, so `nats kv` can read it), with three changes:
	// reads go to the leader (no direct get from possibly lagging
	// replicas: a Get sees the Put that returned before it), atomic batches
	// for Apply, and per-message TTLs for delete markers.
	st.stream, err = s.ensureStream(ctx, jetstream.StreamConfig{
		Name:               "KV_" + bucket,
		Description:        "mqttgw device state of fleet " + o.Name,
		Subjects:           []string{st.prefix + ">"},
		Retention:          jetstream.LimitsPolicy,
		Storage:            jetstream.FileStorage,
		Replicas:           o.Replicas,
		MaxMsgs:            -1,
		MaxBytes:           -1,
		MaxMsgsPerSubject:  1, // no history: a key holds its last value
		Discard:            jetstream.DiscardNew,
		Duplicates:         DefaultDuplicateWindow,
		AllowRollup:        true,
		DenyDelete:         true,
		AllowDirect:        false,
		AllowAtomicPublish: true,
		AllowMsgTTL:        true,
		Metadata:           map[string]string{metaFormat: formatVersion, metaRole: "state"},
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

// validKind reports whether k is one of the store package's kinds.
func validKind(k store.Kind) bool { return slices.Contains(store.Kinds(), k) }

// message makes op's JetStream message: the value (in an envelope under a
// hashed key), or a delete marker that replaces the key's value (the stream
// keeps one message per key) and expires by itself.
func (st *state) message(o store.Op) (*nats.Msg, error) {
	if !validKind(o.Kind) {
		return nil, fmt.Errorf("%s: %w", o.Kind, store.ErrUnknownKind)
	}
	if len(o.Key) == 0 || len(o.Key) > store.MaxKeyLen {
		return nil, fmt.Errorf("%s: %d-byte key: %w", o.Kind, len(o.Key), store.ErrBadKey)
	}
	key, hashed := kvKey(o.Kind, o.Key)
	m := &nats.Msg{Subject: st.prefix + key, Header: nats.Header{}}
	if o.Delete {
		m.Header.Set(hdrKVOperation, "DEL")
		m.Header.Set(hdrTTL, deleteMarkerTTL.String())
		return m, nil
	}
	m.Data = o.Value
	if hashed {
		var err error
		if m.Data, err = appendEnvelope(nil, o.Key, o.Value); err != nil {
			return nil, fmt.Errorf("%s: %w", o.Kind, err)
		}
	}
	// The batch headers (at most ~90 octets) are added later; leave room.
	if n := int64(len(m.Data)) + 128; n > st.s.nc.MaxPayload() {
		return nil, fmt.Errorf("%s: %d-byte value, server payload limit %d: %w", o.Kind, len(o.Value), st.s.nc.MaxPayload(), store.ErrTooLarge)
	}
	return m, nil
}

// Put implements store.State.
func (st *state) Put(ctx context.Context, kind store.Kind, key string, value []byte) error {
	return st.apply(ctx, "put", store.Op{Kind: kind, Key: key, Value: value})
}

// Delete implements store.State.
func (st *state) Delete(ctx context.Context, kind store.Kind, key string) error {
	return st.apply(ctx, "delete", store.Op{Kind: kind, Key: key, Delete: true})
}

// Apply implements store.State: one op is one publish, several are one
// JetStream atomic batch (all stored or none), at most MaxApplyOps. A retried
// batch is sent whole again; its ops are puts and deletes, so storing them
// twice leaves what storing them once does.
func (st *state) Apply(ctx context.Context, ops ...store.Op) error {
	return st.apply(ctx, "apply", ops...)
}

func (st *state) apply(ctx context.Context, what string, ops ...store.Op) error {
	s := st.s
	if len(ops) == 0 {
		return nil
	}
	if len(ops) > MaxApplyOps {
		return fmt.Errorf("store: %s: %s: %d ops, at most %d: %w (%w)", s.label, what, len(ops), MaxApplyOps, ErrTooManyOps, store.ErrTooLarge)
	}
	msgs := make([]*nats.Msg, len(ops))
	for i, o := range ops {
		var err error
		if msgs[i], err = st.message(o); err != nil {
			return fmt.Errorf("store: %s: %s: %w", s.label, what, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: %s: %s: %w", s.label, what, err)
	}
	release, err := s.enter()
	if err != nil {
		return fmt.Errorf("store: %s: %s: %w", s.label, what, err)
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
	if err != nil {
		if ae := apiCode(err); ae != nil && ae.ErrorCode == codeMsgExceedsMaximum {
			err = fmt.Errorf("%s: %w", ae.Description, store.ErrTooLarge)
		}
		return fmt.Errorf("store: %s: %s: %w", s.label, what, err)
	}
	return nil
}

// Get implements store.State: it asks the stream leader for the key's last
// message. An empty or too long key is absent, as in Bolt.
func (st *state) Get(kind store.Kind, key string) ([]byte, bool, error) {
	s := st.s
	if !validKind(kind) {
		return nil, false, fmt.Errorf("store: %s: get: %s: %w", s.label, kind, store.ErrUnknownKind)
	}
	if len(key) == 0 || len(key) > store.MaxKeyLen {
		return nil, false, nil
	}
	release, err := s.enter()
	if err != nil {
		return nil, false, fmt.Errorf("store: %s: get: %w", s.label, err)
	}
	defer release()
	kv, hashed := kvKey(kind, key)
	var raw *jetstream.RawStreamMsg
	err = s.retry(context.Background(), false, func(actx context.Context) error {
		var err error
		raw, err = st.stream.GetLastMsgForSubject(actx, st.prefix+kv)
		return err
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("store: %s: get: %w", s.label, err)
	}
	if isMarker(raw.Header) {
		return nil, false, nil
	}
	if !hashed {
		return append([]byte{}, raw.Data...), true, nil
	}
	k, v, err := parseEnvelope(raw.Data)
	if err != nil {
		return nil, false, fmt.Errorf("store: %s: get %s: %w", s.label, kind, err)
	}
	if k != key {
		return nil, false, nil // another key with the same SHA-256
	}
	return v, true, nil
}

// isMarker reports whether a message with header h marks a deleted key
// (this backend writes DEL; nats.go's KeyValue.Purge writes PURGE).
func isMarker(h nats.Header) bool {
	op := h.Get(hdrKVOperation)
	return op == "DEL" || op == "PURGE"
}

// record is one state record read by Range.
type record struct {
	key   string
	value []byte
}

// Range implements store.State. It asks the stream leader for the keys of
// kind (the stream's info, filtered by the kind's subjects), then for each
// key's message, rangeParallel requests at once; it sorts the records by key
// and calls fn with no request in flight. Every read goes to the leader, so
// Range sees every write acknowledged before it; a consumer would not (an
// ephemeral consumer may be placed on a lagging replica). Range holds every
// record of the kind in memory at once: the engines load them all anyway.
func (st *state) Range(kind store.Kind, fn func(key string, value []byte) bool) error {
	s := st.s
	if !validKind(kind) {
		return fmt.Errorf("store: %s: range: %s: %w", s.label, kind, store.ErrUnknownKind)
	}
	recs, err := st.collect(kind)
	if err != nil {
		return fmt.Errorf("store: %s: range %s: %w", s.label, kind, err)
	}
	slices.SortFunc(recs, func(a, b record) int { return strings.Compare(a.key, b.key) })
	for _, r := range recs {
		if !fn(r.key, r.value) {
			return nil
		}
	}
	return nil
}

// rangeParallel bounds the key reads State.Range has in flight.
const rangeParallel = 32

// collect reads every live record of kind.
func (st *state) collect(kind store.Kind) ([]record, error) {
	s := st.s
	release, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer release()
	var info *jetstream.StreamInfo
	err = s.retry(context.Background(), false, func(actx context.Context) error {
		var err error
		info, err = st.stream.Info(actx, jetstream.WithSubjectFilter(st.prefix+kind.String()+".>"))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	subjects := make(chan string)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		recs  = make([]record, 0, len(info.State.Subjects))
		first error
	)
	for range min(rangeParallel, len(info.State.Subjects)) {
		wg.Go(func() {
			for subj := range subjects {
				r, ok, err := st.read(kind, subj)
				mu.Lock()
				switch {
				case err != nil && first == nil:
					first = err
				case ok:
					recs = append(recs, r)
				}
				mu.Unlock()
			}
		})
	}
	for subj := range info.State.Subjects {
		subjects <- subj
	}
	close(subjects)
	wg.Wait()
	if first != nil {
		return nil, first
	}
	return recs, nil
}

// read reads the record on subject from the stream leader; ok is false when
// the key is deleted (a marker, or gone since it was listed).
func (st *state) read(kind store.Kind, subject string) (r record, ok bool, err error) {
	var raw *jetstream.RawStreamMsg
	err = st.s.retry(context.Background(), false, func(actx context.Context) error {
		var err error
		raw, err = st.stream.GetLastMsgForSubject(actx, subject)
		return err
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return record{}, false, nil
	}
	if err != nil {
		return record{}, false, fmt.Errorf("get %s: %w", subject, err)
	}
	if isMarker(raw.Header) {
		return record{}, false, nil
	}
	r, err = st.decode(kind, subject, raw.Data)
	return r, err == nil, err
}

// decode makes a record of a message of kind on subject.
func (st *state) decode(kind store.Kind, subject string, data []byte) (record, error) {
	_, key, inline, err := parseKVKey(strings.TrimPrefix(subject, st.prefix))
	if err != nil {
		return record{}, err
	}
	if inline {
		return record{key, append([]byte{}, data...)}, nil
	}
	key, value, err := parseEnvelope(data)
	if err != nil {
		return record{}, fmt.Errorf("%s: %w", subject, err)
	}
	return record{key, value}, nil
}
