package config

import "time"

// Store configures the durable store ([store]): without Dir (and without
// [cluster], which keeps it in NATS JetStream), what the gateway holds lives
// in memory only, as before.
type Store struct {
	// Dir holds the store's one file (mqttgw.db); "" = no durable store.
	Dir string `toml:"dir"`
	// CommitInterval bounds how long a write waits for others to share its
	// commit (one fsync for many messages); 0 = the default, 1ms.
	CommitInterval Duration `toml:"commit_interval"`
	// MaxBytes and MaxMessages bound the queue of messages the broker has not
	// acknowledged; when full, devices get the protocol's congestion answer.
	// 0 = the defaults (256 MiB, 1 000 000).
	MaxBytes    int64 `toml:"max_bytes"`
	MaxMessages int   `toml:"max_messages"`
}

// validate checks [store]; with [cluster] the queue's limits apply to its
// JetStream stream (validateCluster checks the rest).
func (s Store) validate(clustered bool, add func(key, format string, args ...any)) {
	if s.MaxBytes < 0 {
		add("store.max_bytes", "%d: want a positive number of bytes (0: the default, 256 MiB)", s.MaxBytes)
	} else if s.MaxBytes > 0 && s.MaxBytes < int64(MaxDatagram) {
		add("store.max_bytes", "%d: want at least %d bytes, one largest datagram", s.MaxBytes, MaxDatagram)
	}
	if d := s.CommitInterval.D(); d < 0 || d > time.Second {
		add("store.commit_interval", "%v: want 0 (the default, 1ms) up to 1s: every write waits up to this long", d)
	}
	if s.MaxMessages < 0 {
		add("store.max_messages", "%d: want a positive number of messages (0: the default, 1000000)", s.MaxMessages)
	}
	if s.Dir == "" && !clustered && (s.MaxBytes != 0 || s.MaxMessages != 0 || s.CommitInterval != 0) {
		add("store.dir", "missing: the other [store] keys apply to a store in a directory")
	}
}
