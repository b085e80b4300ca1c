// Package store keeps what must survive a crash of the gateway (issue 10:
// "acknowledged" means "durable"): the upstream store-and-forward queue
// (Queue) and the engines' device state records (State), behind the Store
// interface. Bolt, an embedded go.etcd.io/bbolt file, is the first backend;
// NATS JetStream will be the second, so the interfaces speak only this
// package's types, and this package is the only importer of both libraries.
//
// # Durability and grouped commits
//
// A write (Queue.Append and Ack, State.Put, Delete and Apply) returns nil
// only once it is committed and synced to disk: after a crash of the
// process or the machine it is there. Writes from many goroutines share
// commits: a write waits at most Options.CommitInterval (default 5 ms) for
// others, and everything waiting then is applied in arrival order in one
// transaction, with one fsync pair (bbolt syncs the data pages, then the
// meta page). Writes arriving while a commit runs share the next one.
// A failed commit fails every write in it, and none of them is written.
//
// # Ordering
//
// Queue sequence numbers follow the order in which Append calls entered the
// store (not the order they return), are never reused, and Range replays in
// that order, so each device's publishes keep their order. Writes are applied
// in arrival order, so a Put followed by a Delete of the same key, or an
// Append followed by its Ack, end as the caller expects.
//
// # Blocking
//
// Writes block until their commit: CommitInterval plus one transaction,
// typically a few milliseconds. The queue's limits are checked before
// anything is queued: a full queue answers ErrFull at once, without waiting
// for a commit, so the engine can send its congestion code. Range and Get
// read a snapshot and never wait for a writer; Range calls its callback
// outside any transaction, so the callback may write.
//
// # Goroutines
//
// Open starts one goroutine, the committer, which lives until Close. Close
// refuses new writes, lets the committer commit everything already handed
// in (those callers get their answers), waits until it has returned, then
// closes the file. Nothing else is started: bbolt starts no goroutine for
// the calls made here (DB.Batch, which would, is not used; see bolt_commit.go).
//
// # Locks
//
// One mutex, Bolt.mu, guards the pending writes, the queue's counters and
// the next sequence number. It is a leaf: never held across a bbolt call or
// a blocking channel operation. bbolt's own locks are taken only by the
// committer (the write transaction) and by readers (read transactions).
//
// # Files
//
// The file is dir/mqttgw.db (FileName), mode 0600 in a directory of mode
// 0700, locked while open so that a second gateway on the same directory gets
// ErrInUse. Its meta bucket holds a magic string and a format version; Open
// reads the whole file and refuses, with an error naming it, a foreign,
// newer, truncated or damaged file, which it never repairs or rewrites.
// Records are versioned binary (record.go); Encoder and Decoder are there for
// the engines' own state records.
package store
