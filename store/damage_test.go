package store

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestOpenDamagedFiles writes noise over a real store's pages, 300 times with
// different seeds (page headers and anywhere in the file), and checks that
// Open either refuses the file (ErrCorrupt, or ErrForeign and ErrNewerFormat
// when the noise hit the meta bucket) or opens it and serves reads
// and writes without a crash: a damaged page must never take the gateway down
// with a panic or a memory fault. (Before pages() and the fault guards, this
// found bbolt looping 2³² times in Tx.Check, a fault in the check's own
// goroutine, and a commit panicking on a free-list id past the end.)
func TestOpenDamagedFiles(t *testing.T) {
	src := t.TempDir()
	writeStore(t, src, 300, 700)
	orig, err := os.ReadFile(filepath.Join(src, FileName))
	if err != nil {
		t.Fatal(err)
	}
	pageCount := boltSize(t, filepath.Join(src, FileName)) / 4096
	ctx := context.Background()
	opened, refused := 0, 0
	for seed := range 300 {
		rng := rand.New(rand.NewPCG(uint64(seed), 10))
		data := append([]byte{}, orig...)
		for range 1 + rng.IntN(3) {
			off := rng.Int64N(pageCount)*4096 + rng.Int64N(64) // a page header
			if rng.IntN(3) == 0 {
				off = rng.Int64N(int64(len(data))) // anywhere
			}
			for i := int64(0); i < 1+rng.Int64N(16) && off+i < int64(len(data)); i++ {
				data[off+i] = byte(rng.Uint32())
			}
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, FileName), data, 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := Open(dir, testOptions)
		if err != nil {
			// Noise in the meta bucket's name or values reads as another
			// application's file or a newer format: refused all the same.
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrForeign) && !errors.Is(err, ErrNewerFormat) {
				t.Fatalf("seed %d: %v, want ErrCorrupt, ErrForeign or ErrNewerFormat", seed, err)
			}
			refused++
			continue
		}
		opened++ // the noise hit payloads, free pages or unused bytes
		var seqs []uint64
		_ = b.Queue().Range(0, func(m Message) bool { seqs = append(seqs, m.Seq); return true })
		for i := range 20 {
			_, _ = b.Queue().Append(ctx, testMessage("x", i))
		}
		_ = b.Queue().Ack(ctx, seqs...)
		_ = b.State().Put(ctx, KindSession, "k", []byte("v"))
		if err := b.Close(); err != nil {
			t.Fatalf("seed %d: Close: %v", seed, err)
		}
	}
	t.Logf("%d damaged files refused, %d opened", refused, opened)
}
