package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func seqsOf(ms []Message) []uint64 {
	s := make([]uint64, len(ms))
	for i, m := range ms {
		s[i] = m.Seq
	}
	return s
}

// TestQueueLimits: an append beyond MaxMessages or MaxBytes fails with
// ErrFull and writes nothing (issue 10: the device gets a congestion answer,
// never a silent drop); an Ack makes room again.
func TestQueueLimits(t *testing.T) {
	m := testMessage("d", 0)
	size := recordSize(t, m)
	for _, tc := range []struct {
		name     string
		msgs     int
		bytes    int64
		fits     int   // appends that succeed
		wantErr  error // of the next one
		ackFrees bool  // after acking the first, one more fits
	}{
		{"max_messages", 3, -1, 3, ErrFull, true},
		{"max_bytes", -1, 2*size + size/2, 2, ErrFull, true},
		{"both_messages_first", 2, 10 * size, 2, ErrFull, true},
		{"record_above_max_bytes", -1, size - 1, 0, ErrTooLarge, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := testOptions
			o.MaxMessages, o.MaxBytes = tc.msgs, tc.bytes
			q := openT(t, t.TempDir(), o).Queue()
			ctx := context.Background()
			for i := range tc.fits {
				if _, err := q.Append(ctx, m); err != nil {
					t.Fatalf("append %d: %v", i, err)
				}
			}
			seq, err := q.Append(ctx, m)
			if !errors.Is(err, tc.wantErr) || seq != 0 {
				t.Fatalf("append beyond the limit = %d, %v; want %v", seq, err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), FileName) {
				t.Errorf("error %q does not name the file", err)
			}
			if n, _ := q.Len(); n != tc.fits {
				t.Fatalf("Len = %d after a refused append, want %d", n, tc.fits)
			}
			if got := all(t, q); len(got) != tc.fits {
				t.Fatalf("%d messages stored, want %d", len(got), tc.fits)
			}
			if tc.ackFrees {
				if err := q.Ack(ctx, 1); err != nil {
					t.Fatal(err)
				}
				if _, err := q.Append(ctx, m); err != nil {
					t.Fatalf("append after ack: %v", err)
				}
			}
		})
	}
}

// TestQueueNoLimit: negative limits are no limit.
func TestQueueNoLimit(t *testing.T) {
	o := testOptions
	o.MaxMessages, o.MaxBytes = -1, -1
	q := openT(t, t.TempDir(), o).Queue()
	for i := range 50 {
		if _, err := q.Append(context.Background(), testMessage("d", i)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAppendContext: a context that ends before the commit starts withdraws
// the append (nothing written, room given back); the answer is exact.
func TestAppendContext(t *testing.T) {
	o := testOptions
	o.CommitInterval = time.Hour // the commit never starts by itself
	b := openT(t, t.TempDir(), o)
	q := b.Queue()

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := q.Append(ctx, testMessage("d", 0)); !errors.Is(err, context.Canceled) {
		t.Fatalf("append with a cancelled context: %v", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := q.Append(ctx, testMessage("d", 1))
		errc <- err
	}()
	waitFor(t, 5*time.Second, "the append to wait for its commit", func() bool { n, _ := q.Len(); return n == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("append cancelled while waiting: %v", err)
	}
	if n, bytes := q.Len(); n != 0 || bytes != 0 {
		t.Fatalf("Len = %d, %d after the append was withdrawn", n, bytes)
	}
	// The put that follows is committed by Close; the withdrawn append is
	// not there.
	go func() { errc <- b.State().Put(context.Background(), KindSession, "k", []byte("v")) }()
	waitFor(t, 5*time.Second, "the put to be queued", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.pending) == 1 })
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("put flushed by Close: %v", err)
	}
}

// TestCloseFlushes: writes waiting for their commit when Close is called are
// committed, their callers answered, and they are there after reopening.
func TestCloseFlushes(t *testing.T) {
	dir := t.TempDir()
	o := testOptions
	o.CommitInterval = time.Hour
	b, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			_, err := b.Queue().Append(context.Background(), testMessage(fmt.Sprint("d", i), 0))
			errs <- err
		})
	}
	waitFor(t, 5*time.Second, "all appends to be queued", func() bool { l, _ := b.Queue().Len(); return l == n })
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("append flushed by Close: %v", err)
		}
	}
	b2 := openT(t, dir, testOptions)
	if got := all(t, b2.Queue()); len(got) != n {
		t.Fatalf("%d messages after reopening, want %d", len(got), n)
	}
}

// TestQueueConcurrent appends from many goroutines (run with -race) while a
// consumer replays and acks, as the proxy will after a reconnect, and checks
// that each device's messages come in the order its appends returned, none
// twice, none lost.
func TestQueueConcurrent(t *testing.T) {
	o := testOptions
	o.CommitInterval = time.Millisecond
	q := openT(t, t.TempDir(), o).Queue()
	const devices, each = 8, 100
	ctx := context.Background()
	var wg sync.WaitGroup
	for d := range devices {
		wg.Go(func() {
			for i := range each {
				if _, err := q.Append(ctx, testMessage(fmt.Sprint("d", d), i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	next := map[string]int{}
	var after uint64
	seen := 0
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	consume := func() {
		err := q.Range(after, func(m Message) bool {
			want := fmt.Sprintf("%s#%d", m.Device, next[m.Device])
			if string(m.Payload) != want {
				t.Fatalf("seq %d: payload %q, want %q", m.Seq, m.Payload, want)
			}
			next[m.Device]++
			after = m.Seq
			seen++
			if err := q.Ack(ctx, m.Seq); err != nil {
				t.Fatal(err)
			}
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		consume()
	}
	consume()
	if seen != devices*each {
		t.Fatalf("replayed %d messages, want %d", seen, devices*each)
	}
	if n, bytes := q.Len(); n != 0 || bytes != 0 {
		t.Fatalf("Len = %d, %d after acking all", n, bytes)
	}
}
