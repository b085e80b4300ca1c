package natsstore

import "errors"

// Errors of this backend beyond the store package's own (store.ErrFull,
// store.ErrTooLarge, store.ErrClosed, store.ErrUnknownKind, store.ErrBadKey,
// store.ErrCorrupt, which it returns with the same meaning as Bolt). Test with
// errors.Is.
var (
	// ErrServerTooOld: the NATS server lacks what this backend needs: JetStream, atomic batch publishing (2.12) or per-message TTLs (2.11).
	ErrServerTooOld = errors.New("nats-server too old: JetStream 2.12 or newer needed")
	// ErrBadOptions: Options are incomplete or a name holds a character that streams and buckets cannot have.
	ErrBadOptions = errors.New("bad options")
	// ErrUnconfirmed: a write was sent but JetStream did not answer within Options.Timeout (no leader, no connection); it may or may not be stored. Writes are retried with the same message id until then, so an answer within the timeout is exact.
	ErrUnconfirmed = errors.New("no answer from JetStream: the write may or may not be stored")
	// ErrTooManyOps: a State.Apply has more ops than one JetStream atomic batch may hold (MaxApplyOps); nothing was written.
	ErrTooManyOps = errors.New("too many ops for one atomic batch")
)
