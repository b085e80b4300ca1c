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

// formatVersion is stored in every stream's metadata; a later layout (other
// subjects, another key encoding) gets a new one, and Open refuses a stream
// whose version it does not know.
const formatVersion = "1"

// Metadata keys of the streams this backend makes.
const (
	metaFormat   = "mqttgw-format"   // formatVersion
	metaRole     = "mqttgw-role"     // "queue" or "state"
	metaInstance = "mqttgw-instance" // a queue's Options.Instance
)

// closeTimeout bounds Close's wait for nats.go to report the connection
// closed.
const closeTimeout = 5 * time.Second

// Store is the NATS JetStream backend of store.Store: the queue is the stream
// QueueStream(Name, Instance), the state records live in the key-value bucket
// StateBucket(Name). See the package comment.
type Store struct {
	opts  Options
	label string // for errors: "nats site1/gw1"
	nc    *nats.Conn
	js    jetstream.JetStream
	q     *queue
	st    *state

	connDone  chan struct{} // closed by nats.go's closed handler
	closeOnce sync.Once

	// mu guards closed; inflight counts the writes and reads under way, which
	// Close waits for. A leaf: never held across a request.
	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup
	watches  map[jetstream.ConsumeContext]func() // WatchOwners's under way: their stops

	// The live key's renewer (owner.go), with Options.OwnerLease.
	liveStop chan struct{}
	liveWG   sync.WaitGroup
}

var _ store.Store = (*Store)(nil)

// QueueStream is the name of the stream holding the upstream queue of the
// gateway instance of fleet name; its subjects are QueueSubject.<device>.
func QueueStream(name, instance string) string { return name + "-queue-" + instance }

// QueueSubject is the base of the queue stream's subjects.
func QueueSubject(name, instance string) string { return name + ".queue." + instance }

// StateBucket is the name of the key-value bucket holding fleet name's state
// records; its stream is "KV_" + StateBucket.
func StateBucket(name string) string { return name + "-state" }

// Open connects to NATS, makes sure the queue stream and the state bucket
// exist with the options' replicas and limits (creating or updating them),
// and reads the queue's length. ctx bounds all of it. A server older than
// 2.12 is ErrServerTooOld.
//
// Open returns *Store (a store.Store) so that a later ownership bucket can
// hang off the same connection.
func Open(ctx context.Context, o Options) (*Store, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("store: nats: %w", err)
	}
	s := &Store{
		opts:     o,
		label:    "nats " + o.Name + "/" + o.Instance,
		connDone: make(chan struct{}),
		watches:  map[jetstream.ConsumeContext]func(){},
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: %s: open: %w", s.label, err)
	}
	var once sync.Once
	nc, err := nats.Connect(strings.Join(o.URLs, ","), o.connectOptions(func(*nats.Conn) {
		once.Do(func() { close(s.connDone) })
	})...)
	if err != nil {
		return nil, fmt.Errorf("store: %s: connect %s: %w", s.label, strings.Join(o.URLs, ","), err)
	}
	s.nc = nc
	fail := func(err error) (*Store, error) {
		if s.liveStop != nil {
			close(s.liveStop)
			s.liveWG.Wait()
		}
		s.closeConn()
		return nil, fmt.Errorf("store: %s: open: %w", s.label, err)
	}
	if v := nc.ConnectedServerVersion(); !versionAtLeast(v, 2, 12) {
		return fail(fmt.Errorf("server %s: %w", v, ErrServerTooOld))
	}
	if s.js, err = jetstream.New(nc); err != nil {
		return fail(err)
	}
	if s.q, err = s.openQueue(ctx); err != nil {
		return fail(err)
	}
	if s.st, err = s.openState(ctx); err != nil {
		return fail(err)
	}
	if err := s.startLive(ctx); err != nil {
		return fail(err)
	}
	if s.opts.OwnerLease > 0 {
		// Another instance may be draining this queue (drain.go): it
		// stops now that the live key is out; then count what it left.
		if err := s.waitDrained(ctx); err != nil {
			return fail(err)
		}
		if err := s.q.refresh(); err != nil {
			return fail(err)
		}
	}
	return s, nil
}

// ensureStream creates the stream or updates it to cfg, checks that the
// server kept the features this backend relies on (an older server ignores
// fields it does not know), and that the stream's format is this one's.
func (s *Store) ensureStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	var old jetstream.Stream
	err := s.retry(ctx, false, func(actx context.Context) error {
		var err error
		old, err = s.js.Stream(actx, cfg.Name)
		return err
	})
	switch {
	case err == nil:
		if v, ok := old.CachedInfo().Config.Metadata[metaFormat]; ok && v != formatVersion {
			return nil, fmt.Errorf("stream %s: format %q, this build knows %q: %w", cfg.Name, v, formatVersion, store.ErrNewerFormat)
		}
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	var st jetstream.Stream
	err = s.retry(ctx, false, func(actx context.Context) error {
		var err error
		st, err = s.js.CreateOrUpdateStream(actx, cfg)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create or update stream %s: %w", cfg.Name, err)
	}
	got := st.CachedInfo().Config
	if cfg.AllowAtomicPublish && !got.AllowAtomicPublish || cfg.AllowMsgTTL && !got.AllowMsgTTL {
		return nil, fmt.Errorf("stream %s: atomic publish or message TTLs not kept: %w", cfg.Name, ErrServerTooOld)
	}
	return st, nil
}

// enter starts an operation: it fails with store.ErrClosed after Close, else
// counts the operation until the returned func is called.
func (s *Store) enter() (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, store.ErrClosed
	}
	s.inflight.Add(1)
	return s.inflight.Done, nil
}

// connClosed reports whether the connection is closed.
func (s *Store) connClosed() bool {
	select {
	case <-s.connDone:
		return true
	default:
		return false
	}
}

// Queue is the store's upstream queue.
func (s *Store) Queue() store.Queue { return s.q }

// State is the store's state records.
func (s *Store) State() store.State { return s.st }

// Close refuses new operations, stops renewing the live key and the owner
// watches left, waits for the operations under way (each bounded by
// Options.Timeout) so that their callers get exact answers, then closes the
// connection. It is idempotent and always returns nil.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		stops := make([]func(), 0, len(s.watches))
		for _, stop := range s.watches {
			stops = append(stops, stop)
		}
		s.mu.Unlock()
		if s.liveStop != nil {
			// The live key is left to expire: the instance is gone once its
			// lease has passed, as after a crash.
			close(s.liveStop)
			s.liveWG.Wait()
		}
		for _, stop := range stops {
			stop()
		}
		s.inflight.Wait()
		s.closeConn()
	})
	return nil
}

// closeConn closes the connection and waits (bounded) until nats.go has
// called the closed handler, its last callback.
func (s *Store) closeConn() {
	s.nc.Close()
	select {
	case <-s.connDone:
	case <-time.After(closeTimeout):
	}
}

// versionAtLeast reports whether the server version v ("2.12.3",
// "2.13.0-beta.1") is at least major.minor.
func versionAtLeast(v string, major, minor int) bool {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}
