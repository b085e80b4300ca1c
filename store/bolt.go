package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// FileName is the store's one file inside its directory.
const FileName = "mqttgw.db"

// The file format. formatVersion changes when a build could misread what an
// older one wrote (a bucket's meaning or a key's layout); a newer record
// version alone does not need it. Open refuses a file whose format is newer.
const (
	formatMagic   = "mqttgw store"
	formatVersion = 1
)

// Bucket and key names, part of the file format.
var (
	bucketMeta  = []byte("meta")  // keyMagic, keyFormat
	bucketQueue = []byte("queue") // seqKey(Seq) → message record; its bbolt sequence is the highest Seq given
	keyMagic    = []byte("magic")
	keyFormat   = []byte("format") // uint32, big-endian
)

// stateBucket is the bucket of a kind's records.
func stateBucket(k Kind) []byte { return []byte("state/" + k.String()) }

// seqKey is a queue key: Seq big-endian, so bbolt's byte order is Seq order.
func seqKey(seq uint64) [8]byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k
}

const (
	// maxGroup bounds the writes of one transaction, as bbolt's own
	// DefaultMaxBatchSize does, so that one commit's latency stays bounded
	// under a flood; the rest go into the next commit at once.
	maxGroup = 1000
	// rangeChunk and rangeChunkBytes bound what Range reads in one read
	// transaction: a long-lived read transaction keeps bbolt from reusing
	// the pages freed meanwhile and blocks its remapping when the file grows.
	rangeChunk      = 256
	rangeChunkBytes = 4 << 20
)

// Bolt is the bbolt backend of Store: one file, dir/mqttgw.db, holding the
// queue and every kind of state record. See the package comment for its
// goroutine and commits.
type Bolt struct {
	path string
	opts Options
	db   *bolt.DB

	wake   chan struct{} // capacity 1: there are pending writes
	full   chan struct{} // capacity 1: maxGroup writes are pending, commit without waiting
	quit   chan struct{} // closed by Close: commit what is pending and stop
	exited chan struct{} // closed when the committer has returned

	closeOnce sync.Once
	closeErr  error

	commits atomic.Uint64 // transactions committed, for the benchmarks' writes/commit

	// mu guards the fields below. It is a leaf: never held across a bbolt
	// call or a channel operation that can block.
	mu       sync.Mutex
	closing  bool
	failed   error      // set when bbolt panicked (a damaged page): every later write fails with it
	pending  []*request // writes waiting for the committer, in arrival order
	nextSeq  uint64     // the Seq the next Append gets
	messages int        // queue messages, committed or being committed
	bytes    int64      // their record sizes
}

var _ Store = (*Bolt)(nil)

// Open opens or creates the store in dir (created with mode 0700 if
// missing). An existing file is checked before it is opened for writing: a
// file another process holds is ErrInUse (after Options.LockTimeout), a bbolt
// file mqttgw did not write is ErrForeign, a newer format ErrNewerFormat, and
// a damaged one (random bytes, truncated, bad pages, an undecodable queue
// record) ErrCorrupt; each error names the file, which Open never repairs,
// truncates or rewrites (issue 10: reported at start, never silently
// truncated). Checking reads the whole file once: every page header in use,
// the free list, every key and every queue record (50 ms for a 144 MB file
// of 100 000 messages in the page cache; a cold disk reads it first).
func Open(dir string, o Options) (*Bolt, error) {
	o = o.withDefaults()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	path := filepath.Join(dir, FileName)
	var sc scan
	info, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("store: %w", err)
	case !info.Mode().IsRegular():
		return nil, fmt.Errorf("store: %s: not a regular file", path)
	case info.Size() > 0:
		// An empty file is what a crash during bbolt's own creation leaves:
		// bbolt initializes it, nothing is lost.
		if sc, err = check(path, o); err != nil {
			return nil, err
		}
	}

	db, err := openWritable(path, o)
	if err != nil {
		return nil, err
	}
	b := &Bolt{
		path:     path,
		opts:     o,
		db:       db,
		wake:     make(chan struct{}, 1),
		full:     make(chan struct{}, 1),
		quit:     make(chan struct{}),
		exited:   make(chan struct{}),
		nextSeq:  sc.highSeq + 1,
		messages: sc.messages,
		bytes:    sc.bytes,
	}
	go b.run()
	return b, nil
}

// openWritable opens the checked file for writing and creates what is
// missing. A panic in bbolt (damage check could not see) is ErrCorrupt.
func openWritable(path string, o Options) (db *bolt.DB, err error) {
	defer faultsPanic()()
	var file *os.File
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				_ = db.Close()
			} else if file != nil {
				_ = file.Close() // the panic was inside bolt.Open
			}
			db, err = nil, fmt.Errorf("store: %s: %w: %v", path, ErrCorrupt, r)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{
		OpenFile: capture(&file),
		Timeout:  o.LockTimeout,
		NoSync:   o.NoSync,
		// The queue frees pages all the time; the hashmap freelist
		// allocates in constant time where the array one scans.
		FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		return nil, openError(path, err)
	}
	if err := db.Update(initBuckets); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: %s: initialize: %w", path, err)
	}
	return db, nil
}

// Path is the store's file.
func (b *Bolt) Path() string { return b.path }

// initBuckets writes the meta bucket of a new file and creates the buckets
// that are missing: all of them in a new file, a kind added since the file
// was written in an older one.
func initBuckets(tx *bolt.Tx) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	if meta.Get(keyMagic) == nil {
		if err := meta.Put(keyMagic, []byte(formatMagic)); err != nil {
			return err
		}
		if err := meta.Put(keyFormat, binary.BigEndian.AppendUint32(nil, formatVersion)); err != nil {
			return err
		}
	}
	if _, err := tx.CreateBucketIfNotExists(bucketQueue); err != nil {
		return err
	}
	for _, k := range Kinds() {
		if _, err := tx.CreateBucketIfNotExists(stateBucket(k)); err != nil {
			return err
		}
	}
	return nil
}

// openError names what bolt.Open's error means for the user.
func openError(path string, err error) error {
	var pathErr *fs.PathError
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("store: %s is %w", path, ErrInUse)
	case errors.As(err, &pathErr):
		return fmt.Errorf("store: %w", err)
	default:
		// ErrInvalid, ErrChecksum, ErrVersionMismatch, "file size too small":
		// the meta pages are not bbolt's.
		return fmt.Errorf("store: %s: %w: %v", path, ErrCorrupt, err)
	}
}

// guard turns a panic in bbolt (a damaged page; with SetPanicOnFault also a
// memory fault on the mapped file) into ErrCorrupt. Use as
// `defer guard(path, &err)` in a function that touches the file's pages.
func guard(path string, err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("store: %s: %w: %v", path, ErrCorrupt, r)
	}
}

// faultsPanic makes a memory fault on the goroutine (reading a page past the
// end of a damaged file) a panic that guard can recover, instead of a crash
// of the whole gateway; the returned func restores the previous setting.
func faultsPanic() func() {
	old := debug.SetPanicOnFault(true)
	return func() { debug.SetPanicOnFault(old) }
}

// Close commits the writes already handed in (their callers get their
// answers), stops the committer and closes the file. It is idempotent and
// returns after the committer has exited.
func (b *Bolt) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closing = true
		b.mu.Unlock()
		close(b.quit)
		<-b.exited
		if err := b.db.Close(); err != nil {
			b.closeErr = fmt.Errorf("store: %s: close: %w", b.path, err)
		}
	})
	return b.closeErr
}

// view runs a read transaction, with damage reported as ErrCorrupt and a
// closed database as ErrClosed.
func (b *Bolt) view(fn func(*bolt.Tx) error) (err error) {
	defer faultsPanic()()
	defer guard(b.path, &err)
	err = b.db.View(fn)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		err = ErrClosed
	}
	return err
}
