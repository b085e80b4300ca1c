package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestOpenCreates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	b := openT(t, dir, testOptions)
	info, err := os.Stat(dir)
	if err != nil || info.Mode().Perm() != 0o700 {
		t.Fatalf("dir: %v, %v; want mode 0700", info.Mode(), err)
	}
	if b.Path() != filepath.Join(dir, FileName) {
		t.Fatalf("Path = %s", b.Path())
	}
	info, err = os.Stat(b.Path())
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("file: %v, %v; want mode 0600", info.Mode(), err)
	}
}

// TestOpenInUse: a second gateway on the same directory is refused with an
// error that says why, after LockTimeout, and gets in once the first closed.
func TestOpenInUse(t *testing.T) {
	dir := t.TempDir()
	first, err := Open(dir, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	o := testOptions
	o.LockTimeout = 50 * time.Millisecond
	_, err = Open(dir, o)
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open: %v, want ErrInUse", err)
	}
	if want := "store: " + filepath.Join(dir, FileName) + " is in use by another process"; err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	openT(t, dir, o)
}

// writeFile makes dir/mqttgw.db from fn's bbolt transaction (a bbolt file
// that is not, or not quite, a store).
func writeBolt(t *testing.T, dir string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// writeStore makes a real store with n messages of size bytes each.
func writeStore(t *testing.T, dir string, n, size int) {
	t.Helper()
	b, err := Open(dir, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		m := testMessage("d", i)
		m.Payload = bytes.Repeat([]byte{byte(i)}, size)
		if _, err := b.Queue().Append(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// boltSize is the size a bbolt file's pages need (its high-water mark).
func boltSize(t *testing.T, path string) int64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	_ = db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
	return n
}

// TestOpenRefuses: a file that is not a store this build can use is an error
// at Open that names the file and says why, and the file is left exactly as
// it was (issue 10: never silently truncated).
func TestOpenRefuses(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 10))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	for _, tc := range []struct {
		name string
		make func(t *testing.T, dir, path string)
		want error
		says string
	}{
		{"random_64KiB", func(t *testing.T, dir, path string) {
			os.WriteFile(path, random(64<<10), 0o600)
		}, ErrCorrupt, "invalid database"},
		{"random_100B", func(t *testing.T, dir, path string) {
			os.WriteFile(path, random(100), 0o600)
		}, ErrCorrupt, "invalid database"},
		{"text", func(t *testing.T, dir, path string) {
			os.WriteFile(path, bytes.Repeat([]byte("[store]\ndir = \"/var/lib/mqttgw\"\n"), 1000), 0o600)
		}, ErrCorrupt, ""},
		{"foreign_bolt", func(t *testing.T, dir, path string) {
			writeBolt(t, dir, func(tx *bolt.Tx) error {
				b, _ := tx.CreateBucket([]byte("widgets"))
				return b.Put([]byte("w1"), []byte("blue"))
			})
		}, ErrForeign, `no "meta" bucket`},
		{"wrong_magic", func(t *testing.T, dir, path string) {
			writeBolt(t, dir, func(tx *bolt.Tx) error {
				b, _ := tx.CreateBucket([]byte("meta"))
				return b.Put([]byte("magic"), []byte("other app"))
			})
		}, ErrForeign, `magic "other app"`},
		{"newer_format", func(t *testing.T, dir, path string) {
			writeStore(t, dir, 1, 10)
			writeBolt(t, dir, func(tx *bolt.Tx) error {
				return tx.Bucket(bucketMeta).Put(keyFormat, binary.BigEndian.AppendUint32(nil, formatVersion+1))
			})
		}, ErrNewerFormat, "format 2, this build reads up to 1"},
		{"no_format", func(t *testing.T, dir, path string) {
			writeStore(t, dir, 1, 10)
			writeBolt(t, dir, func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyFormat) })
		}, ErrCorrupt, "format version"},
		{"no_queue", func(t *testing.T, dir, path string) {
			writeStore(t, dir, 1, 10)
			writeBolt(t, dir, func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketQueue) })
		}, ErrCorrupt, `no "queue" bucket`},
		{"bad_queue_record", func(t *testing.T, dir, path string) {
			writeStore(t, dir, 3, 10)
			writeBolt(t, dir, func(tx *bolt.Tx) error {
				k := seqKey(2)
				return tx.Bucket(bucketQueue).Put(k[:], []byte{0x01, 0x03})
			})
		}, ErrCorrupt, "queue record 2: flags 0x03"},
		{"bad_queue_key", func(t *testing.T, dir, path string) {
			writeStore(t, dir, 1, 10)
			writeBolt(t, dir, func(tx *bolt.Tx) error { return tx.Bucket(bucketQueue).Put([]byte("x"), []byte{1}) })
		}, ErrCorrupt, "queue entry 78"},
		{"truncated", func(t *testing.T, dir, path string) {
			writeStore(t, dir, 200, 1000)
			if err := os.Truncate(path, boltSize(t, path)/2); err != nil {
				t.Fatal(err)
			}
		}, ErrCorrupt, "truncated"},
		{"damaged_pages", func(t *testing.T, dir, path string) {
			writeStore(t, dir, 200, 1000)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			// Pages 2 to 9 (the first data pages), overwritten with noise.
			if _, err := f.WriteAt(random(8*4096), 2*4096); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}, ErrCorrupt, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, FileName)
			tc.make(t, dir, path)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b, openErr := Open(dir, testOptions)
			if openErr == nil {
				b.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(openErr, tc.want) {
				t.Fatalf("Open: %v, want %v", openErr, tc.want)
			}
			if !strings.HasPrefix(openErr.Error(), "store: "+path+": ") || !strings.Contains(openErr.Error(), tc.says) {
				t.Fatalf("error %q does not name the file or lacks %q", openErr, tc.says)
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before, after) {
				t.Fatal("Open changed the file")
			}
			t.Log(openErr)
		})
	}
}

// TestOpenAccepts: an empty file, or a bbolt file without any bucket (what a
// crash during the first Open leaves), is a new store; a store without a kind
// bucket (written before that kind existed) gets it.
func TestOpenAccepts(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(t *testing.T, dir, path string)
	}{
		{"empty_file", func(t *testing.T, dir, path string) { os.WriteFile(path, nil, 0o600) }},
		{"empty_bolt", func(t *testing.T, dir, path string) {
			writeBolt(t, dir, func(tx *bolt.Tx) error { return nil })
		}},
		{"kind_missing", func(t *testing.T, dir, path string) {
			writeStore(t, dir, 1, 10)
			writeBolt(t, dir, func(tx *bolt.Tx) error { return tx.DeleteBucket(stateBucket(KindCoAPObservation)) })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.make(t, dir, filepath.Join(dir, FileName))
			b := openT(t, dir, testOptions)
			if err := b.State().Put(context.Background(), KindCoAPObservation, "k", []byte("v")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestOpenNotAFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, FileName), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, testOptions); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("Open: %v", err)
	}
}
