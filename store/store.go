package store

import (
	"context"
	"fmt"
	"time"
)

// Store is everything the gateway keeps durably: the upstream queue and the
// engines' state records. Bolt implements it; a NATS JetStream backend will
// too (a stream for the queue, key-value buckets for the state), so nothing
// here names a backend's types. The two faces are separate so that each user
// gets only its own: the proxy the Queue, the engines the State.
type Store interface {
	Queue() Queue
	State() State
	// Close commits the writes already handed in, then releases the store.
	// It is idempotent; calls after it fail with ErrClosed.
	Close() error
}

// Queue is the upstream store-and-forward queue (issue 10): a device's QoS ≥ 1
// publish taken while the broker is away is appended, the device is
// acknowledged once Append returns, and after the broker is back the
// messages are replayed with Range and removed with Ack once the broker
// acknowledged them.
type Queue interface {
	// Append stores m durably (committed and synced to disk when it
	// returns nil) and returns its sequence number; m.Seq is ignored.
	// Concurrent appends share one commit (see Options.CommitInterval).
	// It fails with ErrFull when the queue would exceed MaxMessages or
	// MaxBytes, ErrTooLarge when m alone exceeds MaxBytes, ErrClosed after
	// Close. ctx bounds only the wait before m's commit starts: if it ends
	// then, m is not written and Append returns ctx's error; once the commit
	// runs, Append waits for it, so the answer is always exact (an
	// ambiguous "maybe stored" would break QoS 2's exactly-once).
	Append(ctx context.Context, m Message) (seq uint64, err error)
	// Ack removes the messages with these sequence numbers, durably like
	// Append. Numbers not in the queue (already acknowledged, never given)
	// are ignored, so a repeated broker acknowledgement is harmless.
	Ack(ctx context.Context, seqs ...uint64) error
	// Range calls fn for each message with Seq > after, in Seq order (the
	// order of the appends, so each device's publishes stay in order), until
	// fn returns false or the queue ends. It reads in chunks and calls fn
	// outside any transaction, so fn may call Ack and Append; messages
	// appended meanwhile are included if Range has not passed their place.
	Range(after uint64, fn func(Message) bool) error
	// Len is the number of messages and the sum of their record sizes (the
	// quantities MaxMessages and MaxBytes limit), including appends whose
	// commit is under way.
	Len() (messages int, bytes int64)
}

// State holds the engines' device state records: opaque values under
// (Kind, key), e.g. one MQTT-SN session per client id. Values are the
// engines' own records, best encoded with Encoder so they carry a version.
type State interface {
	// Put stores value under (kind, key), replacing what was there; durable
	// when it returns nil. ctx as for Queue.Append.
	Put(ctx context.Context, kind Kind, key string, value []byte) error
	// Delete removes (kind, key); a missing key is not an error.
	Delete(ctx context.Context, kind Kind, key string) error
	// Apply does all ops in one commit: all are durable or none is.
	Apply(ctx context.Context, ops ...Op) error
	// Get returns a copy of the value under (kind, key), or ok false.
	Get(kind Kind, key string) (value []byte, ok bool, err error)
	// Range calls fn for each record of kind, in key order (bytewise), with
	// a copy of the value, until fn returns false. Like Queue.Range it reads
	// in chunks and calls fn outside any transaction.
	Range(kind Kind, fn func(key string, value []byte) bool) error
}

// Op is one write of State.Apply: Put Value under (Kind, Key), or remove it
// when Delete is set.
type Op struct {
	Kind   Kind
	Key    string
	Value  []byte
	Delete bool
}

// Kind names a kind of state record. Only the constants below exist, so a
// misspelt kind cannot create a bucket; each has its own bucket, whose name
// (String) is part of the file format and must never change.
type Kind uint8

// The kinds of state records.
const (
	// KindSession: a device's session in the registry (identity, class,
	// liveness, address): the synthetic sessions of CoAP and raw UDP
	// devices (MQTT-SN clients' are in their KindMQTTSNSession record).
	// Key: chosen by the gateway (its listener's name, a NUL, the device id).
	KindSession Kind = iota + 1
	// KindMQTTSNSession: an MQTT-SN client's protocol state (clean flag,
	// registrations both ways, subscriptions, QoS 2 ids awaiting PUBREL,
	// buffered messages of a sleeping client). Key: the client id.
	KindMQTTSNSession
	// KindCoAPObservation: one CoAP observation (RFC 7641): token, sequence
	// number, the subscription it stands for. Key: chosen by the CoAP engine.
	KindCoAPObservation

	kindEnd // one past the last kind
)

// Kinds lists every kind, in order.
func Kinds() []Kind {
	ks := make([]Kind, 0, kindEnd-1)
	for k := KindSession; k < kindEnd; k++ {
		ks = append(ks, k)
	}
	return ks
}

// String is the kind's bucket name.
func (k Kind) String() string {
	switch k {
	case KindSession:
		return "session"
	case KindMQTTSNSession:
		return "mqttsn-session"
	case KindCoAPObservation:
		return "coap-observation"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

func (k Kind) valid() bool { return k >= KindSession && k < kindEnd }

// MaxKeyLen is the longest state key, bbolt's limit, kept by every backend so
// that an engine's keys work with all of them.
const MaxKeyLen = 32768

// Defaults for the zero Options.
const (
	// DefaultCommitInterval: how long a write may wait for others to share its
	// commit. Writes arriving during a commit share the next one anyway, so the
	// wait buys fewer fsyncs, not throughput: with 64 concurrent appenders 1 ms
	// gave 32k appends/s at 64 per commit, 5 ms only 10k/s, no wait 43k/s at
	// 31 per commit (BenchmarkAppend, 2 cores). 1 ms keeps fsyncs down on slow
	// storage (SD cards) at little cost.
	DefaultCommitInterval = time.Millisecond
	// DefaultMaxMessages: the queue's message limit.
	DefaultMaxMessages = 1_000_000
	// DefaultMaxBytes: the queue's byte limit (256 MiB of records).
	DefaultMaxBytes = 256 << 20
	// DefaultLockTimeout: how long Open waits for another holder of the file.
	DefaultLockTimeout = time.Second
)

// Options tune a store. The zero value is the defaults above.
type Options struct {
	// CommitInterval bounds how long a write waits for others before its
	// commit starts (measured from the oldest waiting write). Every write
	// arriving meanwhile shares that commit, and its one fsync pair. Zero
	// is DefaultCommitInterval; negative means no added wait: commit as
	// soon as the previous commit is done (writes arriving during a commit
	// still share the next one).
	//
	// The trade (BenchmarkAppend, 64 appenders, ext4 on a virtual disk): no
	// added wait gives the most appends/s and the lowest latency, since
	// grouping then follows the load by itself; a wait gives fewer fsyncs
	// per second (kinder to flash, and to a broker's persistence on the same
	// disk) at the price of that wait in every append's latency, and of
	// throughput when the appenders are few (each waits for its commit).
	CommitInterval time.Duration
	// MaxMessages and MaxBytes limit the queue: the number of messages and
	// the sum of their record sizes (Message fields plus 20 octets; the file
	// itself is larger and, bbolt's way, never shrinks, but its free pages
	// are reused). An Append beyond either fails with ErrFull. Zero is the
	// default; negative is no limit. State records are not limited here: the
	// engines cap their sessions and observers.
	MaxMessages int
	MaxBytes    int64
	// LockTimeout is how long Open waits for the file lock held by another
	// process before failing with ErrInUse. Zero is DefaultLockTimeout.
	LockTimeout time.Duration
	// NoSync skips fsync: a crash of the machine (not only of the process)
	// may lose or damage the file. For tests only.
	NoSync bool
}

func (o Options) withDefaults() Options {
	if o.CommitInterval == 0 {
		o.CommitInterval = DefaultCommitInterval
	}
	if o.CommitInterval < 0 {
		o.CommitInterval = 0
	}
	if o.MaxMessages == 0 {
		o.MaxMessages = DefaultMaxMessages
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	return o
}
