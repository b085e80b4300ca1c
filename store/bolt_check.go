package store

import (
	"encoding/binary"
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"
)

// scan is what check learnt about an existing file.
type scan struct {
	highSeq  uint64 // the highest Seq ever given (0 for a new file)
	messages int
	bytes    int64
}

// check opens an existing file read-only and reads all of it before Open
// opens it for writing. Read-only because bbolt's writable Open already
// reads the free-page list, which in a truncated file lies past the end
// (a fault, not an error); so the truncation is found here first, from the
// meta page's high-water mark, and the reading runs with faults turned into
// panics that become ErrCorrupt.
//
// bbolt's own consistency check (Tx.Check) is not used: it trusts the page
// headers, so a damaged overflow count makes it loop up to 2³² times, and a
// damaged element offset faults in a goroutine of its own, which would crash
// the gateway instead of reporting the file. pages and walk check what the
// store relies on; `bbolt check` can still be run on a copy by hand.
func check(path string, o Options) (sc scan, err error) {
	defer faultsPanic()()
	var file *os.File
	defer func() {
		// A panic inside bolt.Open (a damaged free-page list) leaves its
		// file open and locked: close it here.
		if r := recover(); r != nil {
			if file != nil {
				_ = file.Close()
			}
			err = fmt.Errorf("store: %s: %w: %v", path, ErrCorrupt, r)
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		ReadOnly:        true,
		Timeout:         o.LockTimeout,
		PreLoadFreelist: true, // for Tx.Page in pages
		OpenFile:        capture(&file),
	})
	if err != nil {
		return scan{}, openError(path, err)
	}
	defer func() {
		if cerr := db.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("store: %s: close after check: %w", path, cerr)
		}
	}()
	err = db.View(func(tx *bolt.Tx) error {
		info, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		if tx.Size() > info.Size() {
			return fmt.Errorf("store: %s: %w: truncated: its pages need %d bytes, the file has %d", path, ErrCorrupt, tx.Size(), info.Size())
		}
		if err := pages(tx); err != nil {
			return fmt.Errorf("store: %s: %w: %w", path, ErrCorrupt, err)
		}
		sc, err = walk(tx, path)
		return err
	})
	return sc, err
}

// capture is an os.OpenFile for bolt.Options that keeps the file in *f, so
// that it can be closed after a panic inside bolt.Open.
func capture(f **os.File) func(string, int, os.FileMode) (*os.File, error) {
	return func(name string, flag int, mode os.FileMode) (*os.File, error) {
		file, err := os.OpenFile(name, flag, mode)
		*f = file
		return file, err
	}
}

// pages checks the header of every page in use below the high-water mark:
// its type is one bbolt writes, and its overflow run ends below the mark
// (bbolt loops over a run when it frees it). Free pages are skipped one by
// one: they keep stale contents.
func pages(tx *bolt.Tx) error {
	hwm := int(tx.Size() / int64(tx.DB().Info().PageSize))
	free := 0
	for id := 2; id < hwm; { // pages 0 and 1 are the meta pages, checked by bbolt
		p, err := tx.Page(id)
		if err != nil {
			return fmt.Errorf("page %d: %w", id, err)
		}
		switch p.Type {
		case "free":
			free++
			id++
			continue
		case "branch", "leaf", "freelist":
		default:
			return fmt.Errorf("page %d: type %s", id, p.Type)
		}
		if p.OverflowCount >= hwm-id {
			return fmt.Errorf("page %d: %d overflow pages, past the end at page %d", id, p.OverflowCount, hwm)
		}
		id += 1 + p.OverflowCount
	}
	// Every page of the free list must have been met above: one past the
	// end, or inside a run in use, would be handed out by the next commit.
	if n := tx.DB().Stats().FreePageN; n != free {
		return fmt.Errorf("free list of %d pages, %d of them free pages below the end", n, free)
	}
	return nil
}

// walk checks that tx is an mqttgw store this build can read and reads every
// record: queue records are decoded and counted, state records only read
// (their engines decode them).
func walk(tx *bolt.Tx, path string) (scan, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		empty := true
		_ = tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
		if empty {
			// A crash between bbolt creating the file and initBuckets.
			return scan{}, nil
		}
		return scan{}, fmt.Errorf("store: %s: %w: no %q bucket", path, ErrForeign, bucketMeta)
	}
	if magic := meta.Get(keyMagic); string(magic) != formatMagic {
		return scan{}, fmt.Errorf("store: %s: %w: magic %q, want %q", path, ErrForeign, magic, formatMagic)
	}
	v := meta.Get(keyFormat)
	if len(v) != 4 || binary.BigEndian.Uint32(v) == 0 {
		return scan{}, fmt.Errorf("store: %s: %w: format version is %q, not a uint32 from 1", path, ErrCorrupt, v)
	}
	if f := binary.BigEndian.Uint32(v); f > formatVersion {
		return scan{}, fmt.Errorf("store: %s: %w: format %d, this build reads up to %d", path, ErrNewerFormat, f, formatVersion)
	}

	q := tx.Bucket(bucketQueue)
	if q == nil {
		return scan{}, fmt.Errorf("store: %s: %w: no %q bucket", path, ErrCorrupt, bucketQueue)
	}
	sc := scan{highSeq: q.Sequence()}
	c := q.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) != 8 || v == nil {
			return scan{}, fmt.Errorf("store: %s: %w: queue entry % x is not a record", path, ErrCorrupt, k[:min(len(k), 16)])
		}
		seq := binary.BigEndian.Uint64(k)
		if err := checkMessage(v); err != nil {
			return scan{}, fmt.Errorf("store: %s: %w: queue record %d: %w", path, ErrCorrupt, seq, err)
		}
		sc.messages++
		sc.bytes += int64(len(v))
		sc.highSeq = max(sc.highSeq, seq)
	}
	for _, kind := range Kinds() {
		bk := tx.Bucket(stateBucket(kind))
		if bk == nil {
			continue // added after this file was written; Open creates it
		}
		if err := bk.ForEach(func(k, v []byte) error {
			if v == nil {
				return fmt.Errorf("store: %s: %w: %s: nested bucket %q", path, ErrCorrupt, kind, k[:min(len(k), 64)])
			}
			return nil
		}); err != nil {
			return scan{}, err
		}
	}
	return sc, nil
}

// queueRecord decodes one queue entry.
func queueRecord(k, v []byte) (Message, error) {
	if len(k) != 8 {
		return Message{}, fmt.Errorf("%w: queue key % x is not 8 octets", ErrCorrupt, k[:min(len(k), 16)])
	}
	seq := binary.BigEndian.Uint64(k)
	if v == nil {
		return Message{}, fmt.Errorf("%w: queue record %d is a bucket", ErrCorrupt, seq)
	}
	m, err := decodeMessage(v)
	if err != nil {
		return Message{}, fmt.Errorf("%w: queue record %d: %w", ErrCorrupt, seq, err)
	}
	m.Seq = seq
	return m, nil
}
