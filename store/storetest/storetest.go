// Package storetest is the conformance test of store.Store: the semantics
// every backend keeps (store.Bolt, the NATS JetStream backend in
// store/natsstore), checked through the interfaces alone, so that the
// gateway's engines and proxy can rely on them whichever backend runs.
//
// A backend's test calls Run with a function that opens its store. Run starts
// no goroutine that outlives it; it closes every store it opened.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/store"
)

// The queue limits every store opened for Run must have (Options.MaxMessages
// and MaxBytes of its backend).
const (
	MaxMessages = 1000
	MaxBytes    = 1 << 20
)

// MaxOverhead is the most a backend may count per message against MaxBytes
// beyond the record itself (JetStream counts its subject, headers and
// framing; Bolt nothing).
const MaxOverhead = 256

// t0 is the Enqueued time of the test messages.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)

// Run runs the conformance tests, each in a subtest with its own store.
//
// open must return an empty store with the limits MaxMessages and MaxBytes
// for each new t, and close it when t ends (Close is idempotent). Called a
// second time with the same t, after the first store was closed, it must
// reopen that same store: the restart test checks that what was committed is
// still there.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, open func(t *testing.T) store.Store)
	}{
		{"AppendRangeAck", testAppendRangeAck},
		{"RangeWhileAcking", testRangeWhileAcking},
		{"Concurrent", testConcurrent},
		{"LimitMessages", testLimitMessages},
		{"LimitBytes", testLimitBytes},
		{"TooLarge", testTooLarge},
		{"BadMessage", testBadMessage},
		{"Context", testContext},
		{"State", testState},
		{"StateRefuses", testStateRefuses},
		{"StateKeys", testStateKeys},
		{"StateRange", testStateRange},
		{"Restart", testRestart},
		{"Closed", testClosed},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

// Message is the i-th test message of device dev: its payload says both, so
// a replay can be checked for order.
func Message(dev string, i int) store.Message {
	return store.Message{
		Device:   dev,
		Listener: "sn",
		Topic:    "dev/" + dev,
		Payload:  []byte(fmt.Sprintf("%s#%d", dev, i)),
		QoS:      1,
		Enqueued: t0.Add(time.Duration(i) * time.Millisecond),
	}
}

// RecordSize is m's record size, what Len counts.
func RecordSize(t testing.TB, m store.Message) int64 {
	t.Helper()
	b, err := store.AppendMessage(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	return int64(len(b))
}

// All returns every message in the queue, in order.
func All(t testing.TB, q store.Queue) []store.Message {
	t.Helper()
	var ms []store.Message
	if err := q.Range(0, func(m store.Message) bool { ms = append(ms, m); return true }); err != nil {
		t.Fatal(err)
	}
	return ms
}

// SameMessage reports whether a and b are equal field by field.
func SameMessage(a, b store.Message) bool {
	return a.Seq == b.Seq && a.Device == b.Device && a.Listener == b.Listener && a.Topic == b.Topic &&
		bytes.Equal(a.Payload, b.Payload) && a.QoS == b.QoS && a.Retain == b.Retain && a.Enqueued.Equal(b.Enqueued)
}

func seqsOf(ms []store.Message) []uint64 {
	s := make([]uint64, len(ms))
	for i, m := range ms {
		s[i] = m.Seq
	}
	return s
}

func mustAppend(t testing.TB, q store.Queue, m store.Message) uint64 {
	t.Helper()
	seq, err := q.Append(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func testAppendRangeAck(t *testing.T, open func(t *testing.T) store.Store) {
	q := open(t).Queue()
	ctx := context.Background()
	if n, b := q.Len(); n != 0 || b != 0 {
		t.Fatalf("Len of a new store = %d, %d", n, b)
	}
	if got := All(t, q); len(got) != 0 {
		t.Fatalf("a new store holds %d messages", len(got))
	}
	var want []store.Message
	var size int64
	for i := range 5 {
		m := Message("d1", i)
		if i == 3 {
			m.Retain, m.QoS, m.Payload = true, 2, nil
		}
		seq := mustAppend(t, q, m)
		if seq != uint64(i+1) {
			t.Fatalf("append %d: seq %d, want %d", i, seq, i+1)
		}
		m.Seq = seq
		want = append(want, m)
		size += RecordSize(t, m)
	}
	if n, b := q.Len(); n != 5 || b != size {
		t.Fatalf("Len = %d, %d; want 5, %d", n, b, size)
	}
	got := All(t, q)
	if len(got) != len(want) {
		t.Fatalf("Range gave %d messages, want %d", len(got), len(want))
	}
	for i := range got {
		if !SameMessage(got[i], want[i]) {
			t.Fatalf("message %d: got %+v, want %+v", i, got[i], want[i])
		}
	}

	// Range after a sequence number, and stopping early.
	var seqs []uint64
	if err := q.Range(2, func(m store.Message) bool { seqs = append(seqs, m.Seq); return len(seqs) < 2 }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seqs) != "[3 4]" {
		t.Fatalf("Range(2) stopped after 2 = %v, want [3 4]", seqs)
	}
	seqs = nil
	if err := q.Range(5, func(m store.Message) bool { seqs = append(seqs, m.Seq); return true }); err != nil || len(seqs) != 0 {
		t.Fatalf("Range(5) = %v, %v; want nothing", seqs, err)
	}

	// Ack removes; unknown and repeated numbers are ignored.
	if err := q.Ack(ctx, 1, 3, 3, 99); err != nil {
		t.Fatal(err)
	}
	if err := q.Ack(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := q.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	got = All(t, q)
	if fmt.Sprint(seqsOf(got)) != "[2 4 5]" {
		t.Fatalf("after ack: %v, want [2 4 5]", seqsOf(got))
	}
	if n, b := q.Len(); n != 3 || b != size-RecordSize(t, want[0])-RecordSize(t, want[2]) {
		t.Fatalf("Len after ack = %d, %d", n, b)
	}
	// Range from a removed number starts at the next one still there.
	seqs = nil
	if err := q.Range(2, func(m store.Message) bool { seqs = append(seqs, m.Seq); return true }); err != nil || fmt.Sprint(seqs) != "[4 5]" {
		t.Fatalf("Range(2) after ack = %v, %v; want [4 5]", seqs, err)
	}
	// Numbers are never reused.
	if seq := mustAppend(t, q, Message("d1", 5)); seq != 6 {
		t.Fatalf("append after ack: seq %d, want 6", seq)
	}
}

// testRangeWhileAcking replays more than two of Bolt's read chunks and acks
// each message from inside the callback, as the proxy does; it appends from
// the callback too, and the new message is replayed in its turn.
func testRangeWhileAcking(t *testing.T, open func(t *testing.T) store.Store) {
	q := open(t).Queue()
	ctx := context.Background()
	const n = 600
	appendMany(t, q, "d", n)
	next := uint64(1)
	err := q.Range(0, func(m store.Message) bool {
		if m.Seq != next {
			t.Fatalf("seq %d, want %d", m.Seq, next)
		}
		next++
		if err := q.Ack(ctx, m.Seq); err != nil {
			t.Fatal(err)
		}
		if m.Seq == n {
			mustAppend(t, q, Message("d", n))
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if next != n+2 {
		t.Fatalf("replayed up to %d, want %d", next-1, n+1)
	}
	if l, b := q.Len(); l != 0 || b != 0 {
		t.Fatalf("Len = %d, %d after acking all", l, b)
	}
}

// appendMany appends messages 0..n-1 of dev from 8 goroutines and checks that
// the sequence numbers are 1..n and follow each goroutine's order.
func appendMany(t *testing.T, q store.Queue, dev string, n int) {
	t.Helper()
	const workers = 8
	var wg sync.WaitGroup
	seqs := make([]uint64, n)
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				seq, err := q.Append(context.Background(), Message(dev, i))
				if err != nil {
					errs <- err
					return
				}
				seqs[i] = seq
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := make(map[uint64]bool, n)
	for i, s := range seqs {
		if s < 1 || s > uint64(n) || seen[s] {
			t.Fatalf("message %d: seq %d (want 1..%d, each once)", i, s, n)
		}
		seen[s] = true
		if i >= workers && seqs[i-workers] >= s {
			t.Fatalf("message %d: seq %d not after its worker's previous %d", i, s, seqs[i-workers])
		}
	}
}

// testConcurrent appends from many goroutines (run with -race) while a
// consumer replays and acks, as the proxy does after a reconnect, and checks
// that each device's messages come in the order its appends returned, none
// twice, none lost.
func testConcurrent(t *testing.T, open func(t *testing.T) store.Store) {
	q := open(t).Queue()
	const devices, each = 6, 40
	ctx := context.Background()
	var wg sync.WaitGroup
	for d := range devices {
		wg.Go(func() {
			for i := range each {
				if _, err := q.Append(ctx, Message(fmt.Sprint("d", d), i)); err != nil {
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
		var acks []uint64
		err := q.Range(after, func(m store.Message) bool {
			if want := fmt.Sprintf("%s#%d", m.Device, next[m.Device]); string(m.Payload) != want {
				t.Fatalf("seq %d: payload %q, want %q", m.Seq, m.Payload, want)
			}
			next[m.Device]++
			after = m.Seq
			seen++
			acks = append(acks, m.Seq)
			return len(acks) < 16
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Ack(ctx, acks...); err != nil {
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
	for seen < devices*each {
		before := seen
		consume()
		if seen == before {
			break
		}
	}
	if seen != devices*each {
		t.Fatalf("replayed %d messages, want %d", seen, devices*each)
	}
	if n, b := q.Len(); n != 0 || b != 0 {
		t.Fatalf("Len = %d, %d after acking all", n, b)
	}
}

// testLimitMessages: appends beyond MaxMessages, from many goroutines, fail
// with ErrFull and write nothing; exactly MaxMessages succeed; an Ack makes
// room again (issue 10: a full queue refuses, never drops).
func testLimitMessages(t *testing.T, open func(t *testing.T) store.Store) {
	q := open(t).Queue()
	ctx := context.Background()
	const workers, extra = 8, 40
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, full := 0, 0
	for w := range workers {
		wg.Go(func() {
			for i := w; i < MaxMessages+extra; i += workers {
				_, err := q.Append(ctx, Message("d", i))
				mu.Lock()
				switch {
				case err == nil:
					ok++
				case errors.Is(err, store.ErrFull):
					full++
				default:
					t.Errorf("append %d: %v", i, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if ok != MaxMessages || full != extra {
		t.Fatalf("%d appends stored, %d refused; want %d, %d", ok, full, MaxMessages, extra)
	}
	if n, _ := q.Len(); n != MaxMessages {
		t.Fatalf("Len = %d, want %d", n, MaxMessages)
	}
	ms := All(t, q)
	if len(ms) != MaxMessages {
		t.Fatalf("%d messages stored, want %d", len(ms), MaxMessages)
	}
	if err := q.Ack(ctx, ms[0].Seq); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Append(ctx, Message("d", 0)); err != nil {
		t.Fatalf("append after ack: %v", err)
	}
	if _, err := q.Append(ctx, Message("d", 0)); !errors.Is(err, store.ErrFull) {
		t.Fatalf("append beyond the limit again: %v, want ErrFull", err)
	}
}

// testLimitBytes: appends of large records stop with ErrFull once the next
// would pass MaxBytes; what is stored is exact and whole.
func testLimitBytes(t *testing.T, open func(t *testing.T) store.Store) {
	q := open(t).Queue()
	ctx := context.Background()
	m := Message("d", 0)
	m.Payload = bytes.Repeat([]byte{0xA5}, 100<<10)
	size := RecordSize(t, m)
	n := 0
	for ; int64(n) <= MaxBytes/size+1; n++ {
		_, err := q.Append(ctx, m)
		if errors.Is(err, store.ErrFull) {
			break
		}
		if err != nil {
			t.Fatalf("append %d: %v", n, err)
		}
	}
	if lo, hi := int(MaxBytes/(size+MaxOverhead)), int(MaxBytes/size); n < lo || n > hi {
		t.Fatalf("%d records of %d bytes stored before ErrFull; want %d to %d", n, size, lo, hi)
	}
	if l, b := q.Len(); l != n || b != int64(n)*size {
		t.Fatalf("Len = %d, %d; want %d, %d", l, b, n, int64(n)*size)
	}
	ms := All(t, q)
	if len(ms) != n || !bytes.Equal(ms[n-1].Payload, m.Payload) {
		t.Fatalf("%d messages stored, want %d whole", len(ms), n)
	}
	if err := q.Ack(ctx, ms[0].Seq); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Append(ctx, m); err != nil {
		t.Fatalf("append after ack: %v", err)
	}
}

// testTooLarge: a record that could never fit is ErrTooLarge, not ErrFull.
func testTooLarge(t *testing.T, open func(t *testing.T) store.Store) {
	q := open(t).Queue()
	m := Message("d", 0)
	m.Payload = make([]byte, MaxBytes)
	if seq, err := q.Append(context.Background(), m); !errors.Is(err, store.ErrTooLarge) || seq != 0 {
		t.Fatalf("append of a record above MaxBytes = %d, %v; want ErrTooLarge", seq, err)
	}
	if n, b := q.Len(); n != 0 || b != 0 {
		t.Fatalf("Len = %d, %d after a refused append", n, b)
	}
	mustAppend(t, q, Message("d", 1))
}

func testBadMessage(t *testing.T, open func(t *testing.T) store.Store) {
	q := open(t).Queue()
	if _, err := q.Append(context.Background(), store.Message{QoS: 3}); !errors.Is(err, store.ErrBadValue) {
		t.Fatalf("QoS 3: %v, want ErrBadValue", err)
	}
	if n, b := q.Len(); n != 0 || b != 0 {
		t.Fatalf("Len = %d, %d after a refused append", n, b)
	}
}

// testContext: a context that ended before a write is its answer; nothing
// is written.
func testContext(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Queue().Append(ctx, Message("d", 0)); !errors.Is(err, context.Canceled) {
		t.Fatalf("append with a cancelled context: %v", err)
	}
	if err := s.State().Put(ctx, store.KindSession, "k", []byte("v")); !errors.Is(err, context.Canceled) {
		t.Fatalf("put with a cancelled context: %v", err)
	}
	if n, b := s.Queue().Len(); n != 0 || b != 0 || len(All(t, s.Queue())) != 0 {
		t.Fatalf("Len = %d, %d after a withdrawn append", n, b)
	}
	if _, ok, err := s.State().Get(store.KindSession, "k"); ok || err != nil {
		t.Fatalf("Get after a withdrawn put: %v, %v", ok, err)
	}
}

// records returns every record of kind.
func records(t testing.TB, s store.State, kind store.Kind) map[string]string {
	t.Helper()
	got := map[string]string{}
	if err := s.Range(kind, func(k string, v []byte) bool { got[k] = string(v); return true }); err != nil {
		t.Fatal(err)
	}
	return got
}

func testState(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t).State()
	ctx := context.Background()
	for _, k := range store.Kinds() {
		if got := records(t, s, k); len(got) != 0 {
			t.Fatalf("a new store holds %s records %v", k, got)
		}
	}
	for _, tc := range []struct {
		name string
		ops  []store.Op
		want map[store.Kind]map[string]string // every kind's records after the ops
	}{
		{
			name: "put",
			ops:  []store.Op{{Kind: store.KindMQTTSNSession, Key: "c1", Value: []byte("s1")}},
			want: map[store.Kind]map[string]string{store.KindMQTTSNSession: {"c1": "s1"}},
		},
		{
			name: "replace_and_other_kinds",
			ops: []store.Op{
				{Kind: store.KindMQTTSNSession, Key: "c1", Value: []byte("s1'")},
				{Kind: store.KindSession, Key: "c1", Value: []byte("reg")},
				{Kind: store.KindCoAPObservation, Key: "tok", Value: []byte{}},
			},
			want: map[store.Kind]map[string]string{
				store.KindMQTTSNSession:   {"c1": "s1'"},
				store.KindSession:         {"c1": "reg"},
				store.KindCoAPObservation: {"tok": ""},
			},
		},
		{
			name: "put_then_delete_in_one_apply",
			ops: []store.Op{
				{Kind: store.KindSession, Key: "gone", Value: []byte("x")},
				{Kind: store.KindSession, Key: "gone", Delete: true},
				{Kind: store.KindCoAPObservation, Key: "tok", Delete: true},
				{Kind: store.KindCoAPObservation, Key: "never", Delete: true}, // missing: not an error
			},
			want: map[store.Kind]map[string]string{
				store.KindMQTTSNSession: {"c1": "s1'"},
				store.KindSession:       {"c1": "reg"},
			},
		},
		{
			name: "delete_then_put_in_one_apply",
			ops: []store.Op{
				{Kind: store.KindSession, Key: "c1", Delete: true},
				{Kind: store.KindSession, Key: "c1", Value: []byte("back")},
			},
			want: map[store.Kind]map[string]string{
				store.KindMQTTSNSession: {"c1": "s1'"},
				store.KindSession:       {"c1": "back"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.Apply(ctx, tc.ops...); err != nil {
				t.Fatal(err)
			}
			for _, k := range store.Kinds() {
				got, want := records(t, s, k), tc.want[k]
				if fmt.Sprint(got) != fmt.Sprint(want) && !(len(got) == 0 && len(want) == 0) {
					t.Errorf("%s: %v, want %v", k, got, want)
				}
				for key, v := range want {
					if b, ok, err := s.Get(k, key); err != nil || !ok || string(b) != v || b == nil {
						t.Errorf("Get(%s, %q) = %q, %v, %v", k, key, b, ok, err)
					}
				}
			}
		})
	}
	if _, ok, err := s.Get(store.KindSession, "gone"); ok || err != nil {
		t.Fatalf("Get of a deleted key: %v, %v", ok, err)
	}
	if err := s.Delete(ctx, store.KindMQTTSNSession, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, store.KindMQTTSNSession, "c1"); err != nil {
		t.Fatalf("deleting a missing key: %v", err)
	}
	if err := s.Put(ctx, store.KindSession, "c2", []byte("two")); err != nil {
		t.Fatal(err)
	}
	if v, ok, _ := s.Get(store.KindSession, "c2"); !ok || string(v) != "two" {
		t.Fatalf("Get after Put = %q, %v", v, ok)
	}
	if _, ok, _ := s.Get(store.KindMQTTSNSession, "c1"); ok {
		t.Fatal("deleted record still there")
	}
	// Get returns a copy.
	v, _, _ := s.Get(store.KindSession, "c2")
	v[0] = 'X'
	if v, _, _ := s.Get(store.KindSession, "c2"); string(v) != "two" {
		t.Fatalf("changing Get's answer changed the store: %q", v)
	}
	if err := s.Apply(ctx); err != nil {
		t.Fatalf("empty Apply: %v", err)
	}
}

// testStateRefuses: unknown kinds and bad keys are refused before anything is
// written; one bad op refuses the whole Apply.
func testStateRefuses(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t).State()
	ctx := context.Background()
	bad := store.Kind(200)
	for _, tc := range []struct {
		name string
		ops  []store.Op
		want error
	}{
		{"kind_0", []store.Op{{Kind: 0, Key: "k"}}, store.ErrUnknownKind},
		{"kind_unknown", []store.Op{{Kind: bad, Key: "k"}}, store.ErrUnknownKind},
		{"empty_key", []store.Op{{Kind: store.KindSession, Key: ""}}, store.ErrBadKey},
		{"long_key", []store.Op{{Kind: store.KindSession, Key: strings.Repeat("k", store.MaxKeyLen+1)}}, store.ErrBadKey},
		{"one_bad_op", []store.Op{{Kind: store.KindSession, Key: "ok", Value: []byte("v")}, {Kind: bad, Key: "k"}}, store.ErrUnknownKind},
		{"one_bad_key", []store.Op{{Kind: store.KindSession, Key: "ok", Value: []byte("v")}, {Kind: store.KindSession}}, store.ErrBadKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.Apply(ctx, tc.ops...); !errors.Is(err, tc.want) {
				t.Fatalf("Apply = %v, want %v", err, tc.want)
			}
		})
	}
	if err := s.Put(ctx, bad, "k", nil); !errors.Is(err, store.ErrUnknownKind) {
		t.Fatalf("Put of an unknown kind: %v", err)
	}
	if err := s.Delete(ctx, store.KindSession, ""); !errors.Is(err, store.ErrBadKey) {
		t.Fatalf("Delete of an empty key: %v", err)
	}
	if _, ok, _ := s.Get(store.KindSession, "ok"); ok {
		t.Fatal("a refused Apply wrote its first op")
	}
	if _, _, err := s.Get(bad, "k"); !errors.Is(err, store.ErrUnknownKind) {
		t.Fatalf("Get of an unknown kind: %v", err)
	}
	if err := s.Range(bad, func(string, []byte) bool { return true }); !errors.Is(err, store.ErrUnknownKind) {
		t.Fatalf("Range of an unknown kind: %v", err)
	}
	if _, ok, err := s.Get(store.KindSession, ""); ok || err != nil {
		t.Fatalf("Get of an empty key: %v, %v", ok, err)
	}
}

// testStateKeys: any byte string up to MaxKeyLen is a key, kept apart from
// every other, given back by Get and Range as it was put, in bytewise order.
func testStateKeys(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t).State()
	ctx := context.Background()
	keys := []string{
		"a", "a\x00", "ab", "b", "B", "\x00", "\x00\x00", "\xff\xfe", "\xff", ".", "..", "a.b", "*", ">",
		"a b", "a\tb\r\n", "$KV", "=", "=x", "/", "-", "_", "ünïcødé", "a/b.c*d>e",
		strings.Repeat("k", 767), strings.Repeat("k", 768), strings.Repeat("k", 769), strings.Repeat("k", 1000),
		strings.Repeat("\xff", store.MaxKeyLen), strings.Repeat("\xff", store.MaxKeyLen-1) + "\xfe",
	}
	var ops []store.Op
	for i, k := range keys {
		ops = append(ops, store.Op{Kind: store.KindSession, Key: k, Value: []byte(fmt.Sprint("v", i))})
	}
	if err := s.Apply(ctx, ops...); err != nil {
		t.Fatal(err)
	}
	check := func(live map[string]int) {
		t.Helper()
		for i, k := range keys {
			v, ok, err := s.Get(store.KindSession, k)
			want, isLive := live[k]
			switch {
			case err != nil:
				t.Fatalf("Get key %d (%d bytes): %v", i, len(k), err)
			case ok != isLive || ok && string(v) != fmt.Sprint("v", want):
				t.Fatalf("Get key %d (%d bytes) = %q, %v; want v%d, %v", i, len(k), v, ok, want, isLive)
			}
		}
		var prev string
		n := 0
		err := s.Range(store.KindSession, func(k string, v []byte) bool {
			if n > 0 && k <= prev {
				t.Fatalf("Range: key %q after %q: not in bytewise order", k, prev)
			}
			if want, ok := live[k]; !ok || string(v) != fmt.Sprint("v", want) {
				t.Fatalf("Range: key of %d bytes = %q; want v%d, live %v", len(k), v, want, ok)
			}
			prev = k
			n++
			return true
		})
		if err != nil || n != len(live) {
			t.Fatalf("Range gave %d records, want %d: %v", n, len(live), err)
		}
		// Other kinds do not see them.
		if got := records(t, s, store.KindMQTTSNSession); len(got) != 0 {
			t.Fatalf("another kind holds %d records", len(got))
		}
	}
	live := map[string]int{}
	for i, k := range keys {
		live[k] = i
	}
	check(live)
	var dels []store.Op
	for i, k := range keys {
		if i%2 == 1 {
			dels = append(dels, store.Op{Kind: store.KindSession, Key: k, Delete: true})
			delete(live, k)
		}
	}
	if err := s.Apply(ctx, dels...); err != nil {
		t.Fatal(err)
	}
	check(live)
}

// testStateRange ranges over more records than two of Bolt's read chunks, in
// key order, deleting from the callback and stopping when asked.
func testStateRange(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t).State()
	ctx := context.Background()
	const n = 600
	var ops []store.Op
	for i := range n {
		ops = append(ops, store.Op{Kind: store.KindCoAPObservation, Key: fmt.Sprintf("k%04d", i), Value: []byte{byte(i)}})
	}
	if err := s.Apply(ctx, ops...); err != nil {
		t.Fatal(err)
	}
	i := 0
	err := s.Range(store.KindCoAPObservation, func(k string, v []byte) bool {
		if want := fmt.Sprintf("k%04d", i); k != want || len(v) != 1 || v[0] != byte(i) {
			t.Fatalf("record %d: %q = %x, want %q", i, k, v, want)
		}
		if err := s.Delete(ctx, store.KindCoAPObservation, k); err != nil {
			t.Fatal(err)
		}
		i++
		return true
	})
	if err != nil || i != n {
		t.Fatalf("Range saw %d of %d records: %v", i, n, err)
	}
	if left := records(t, s, store.KindCoAPObservation); len(left) != 0 {
		t.Fatalf("%d records left after deleting all", len(left))
	}
	for _, k := range []string{"a", "b"} {
		if err := s.Put(ctx, store.KindSession, k, nil); err != nil {
			t.Fatal(err)
		}
	}
	calls := 0
	_ = s.Range(store.KindSession, func(string, []byte) bool { calls++; return false })
	if calls != 1 {
		t.Fatalf("Range went on after false: %d calls", calls)
	}
}

// testRestart: what was committed before Close is there after reopening,
// with the same sequence numbers; new numbers continue after the old ones.
func testRestart(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	ctx := context.Background()
	for i := range 5 {
		mustAppend(t, s.Queue(), Message("d", i))
	}
	if err := s.Queue().Ack(ctx, 1, 4); err != nil {
		t.Fatal(err)
	}
	if err := s.State().Apply(ctx,
		store.Op{Kind: store.KindSession, Key: "dev1", Value: []byte("session")},
		store.Op{Kind: store.KindMQTTSNSession, Key: "c1", Value: []byte("sn")},
		store.Op{Kind: store.KindMQTTSNSession, Key: "c2", Value: []byte("gone")},
	); err != nil {
		t.Fatal(err)
	}
	if err := s.State().Delete(ctx, store.KindMQTTSNSession, "c2"); err != nil {
		t.Fatal(err)
	}
	wantLen, wantBytes := s.Queue().Len()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t)
	got := All(t, s.Queue())
	if fmt.Sprint(seqsOf(got)) != "[2 3 5]" {
		t.Fatalf("after reopening: %v, want [2 3 5]", seqsOf(got))
	}
	for _, m := range got {
		want := Message("d", int(m.Seq-1))
		want.Seq = m.Seq
		if !SameMessage(m, want) {
			t.Fatalf("after reopening: %+v, want %+v", m, want)
		}
	}
	if n, b := s.Queue().Len(); n != wantLen || b != wantBytes {
		t.Fatalf("Len after reopening = %d, %d; want %d, %d", n, b, wantLen, wantBytes)
	}
	if seq := mustAppend(t, s.Queue(), Message("d", 5)); seq != 6 {
		t.Fatalf("first append after reopening: seq %d, want 6", seq)
	}
	if got := records(t, s.State(), store.KindMQTTSNSession); fmt.Sprint(got) != "map[c1:sn]" {
		t.Fatalf("MQTT-SN sessions after reopening: %v", got)
	}
	if v, ok, err := s.State().Get(store.KindSession, "dev1"); !ok || err != nil || string(v) != "session" {
		t.Fatalf("Get after reopening = %q, %v, %v", v, ok, err)
	}
}

func testClosed(t *testing.T, open func(t *testing.T) store.Store) {
	s := open(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := context.Background()
	q, st := s.Queue(), s.State()
	for name, err := range map[string]error{
		"Append": func() error { _, err := q.Append(ctx, Message("d", 0)); return err }(),
		"Ack":    q.Ack(ctx, 1),
		"Range":  q.Range(0, func(store.Message) bool { return true }),
		"Put":    st.Put(ctx, store.KindSession, "k", nil),
		"Delete": st.Delete(ctx, store.KindSession, "k"),
		"Apply":  st.Apply(ctx, store.Op{Kind: store.KindSession, Key: "k"}),
		"Get":    func() error { _, _, err := st.Get(store.KindSession, "k"); return err }(),
		"RangeS": st.Range(store.KindSession, func(string, []byte) bool { return true }),
	} {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}
