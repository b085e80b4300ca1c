package store

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestRestart: what was written before Close is there after Open, with the
// counters, and sequence numbers go on where they were, also when every
// message was acknowledged (a reused number could be mistaken for an
// acknowledged one).
func TestRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	b, err := Open(dir, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := b.Queue().Append(ctx, testMessage("d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Queue().Ack(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := b.State().Put(ctx, KindMQTTSNSession, "c1", []byte("regs")); err != nil {
		t.Fatal(err)
	}
	n1, bytes1 := b.Queue().Len()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b = openT(t, dir, testOptions)
	if n, bytes := b.Queue().Len(); n != n1 || bytes != bytes1 {
		t.Fatalf("Len after reopening = %d, %d; before %d, %d", n, bytes, n1, bytes1)
	}
	got := all(t, b.Queue())
	if fmt.Sprint(seqsOf(got)) != "[2 3]" || string(got[0].Payload) != "d#1" {
		t.Fatalf("queue after reopening: %v", seqsOf(got))
	}
	if v, ok, err := b.State().Get(KindMQTTSNSession, "c1"); err != nil || !ok || string(v) != "regs" {
		t.Fatalf("state after reopening: %q, %v, %v", v, ok, err)
	}
	if err := b.Queue().Ack(ctx, 2, 3); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b = openT(t, dir, testOptions)
	seq, err := b.Queue().Append(ctx, testMessage("d", 3))
	if err != nil || seq != 4 {
		t.Fatalf("append after acking all and reopening: seq %d, %v; want 4", seq, err)
	}
}

// TestReopenChurn reopens a store many times after appends and acks that
// free and reuse pages, so that Open's checks (pages in use, free list) are
// run on files that have been through bbolt's page reuse.
func TestReopenChurn(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	var acked uint64
	for round := range 6 {
		b, err := Open(dir, testOptions)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		q := b.Queue()
		for i := range 300 {
			m := testMessage("d", i)
			m.Payload = make([]byte, 100+i*7%3000) // some records overflow a page
			if _, err := q.Append(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
		var seqs []uint64
		_ = q.Range(acked, func(m Message) bool { seqs = append(seqs, m.Seq); return len(seqs) < 250 })
		if err := q.Ack(ctx, seqs...); err != nil {
			t.Fatal(err)
		}
		acked = seqs[len(seqs)-1]
		for i := range 50 {
			if err := b.State().Put(ctx, KindSession, fmt.Sprint(round, "/", i), make([]byte, i*50)); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	b := openT(t, dir, testOptions)
	if n, _ := b.Queue().Len(); n != 6*50 {
		t.Fatalf("%d messages after the rounds, want %d", n, 6*50)
	}
}

// TestCrashCopy: the file as it is on disk while the store is open, after
// writes returned and without Close, is what a crash leaves (bbolt's
// committed transactions are on disk; nothing waits in memory). A copy of it
// opens with every acknowledged write.
func TestCrashCopy(t *testing.T) {
	dir := t.TempDir()
	o := testOptions
	o.NoSync = false
	b := openT(t, dir, o)
	ctx := context.Background()
	for i := range 10 {
		if _, err := b.Queue().Append(ctx, testMessage("d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Queue().Ack(ctx, 1, 2); err != nil {
		t.Fatal(err)
	}
	if err := b.State().Put(ctx, KindSession, "d", []byte("alive")); err != nil {
		t.Fatal(err)
	}
	crashed := t.TempDir()
	copyFile(t, filepath.Join(dir, FileName), filepath.Join(crashed, FileName))

	c := openT(t, crashed, testOptions)
	if got := seqsOf(all(t, c.Queue())); fmt.Sprint(got) != "[3 4 5 6 7 8 9 10]" {
		t.Fatalf("queue of the crashed copy: %v", got)
	}
	if v, ok, _ := c.State().Get(KindSession, "d"); !ok || string(v) != "alive" {
		t.Fatalf("state of the crashed copy: %q, %v", v, ok)
	}
	if seq, err := c.Queue().Append(ctx, testMessage("d", 10)); err != nil || seq != 11 {
		t.Fatalf("append to the crashed copy: %d, %v", seq, err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// crashWriterEnv makes the test binary a writer that TestKill9 kills.
const crashWriterEnv = "MQTTGW_STORE_CRASH_WRITER"

// TestKill9 runs a writer process that appends from 4 goroutines with real
// fsync and prints each sequence number once Append returned, and SIGKILLs
// it in full flight. Every number it printed (acknowledged) must be in the
// store when it is opened again (issue 10: gateway kill -9, 0 acknowledged
// lost), and nothing else is damaged.
func TestKill9(t *testing.T) {
	if dir := os.Getenv(crashWriterEnv); dir != "" {
		crashWriter(dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9$")
	cmd.Env = append(os.Environ(), crashWriterEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[uint64]bool{}
	buf := make([]byte, 0, 1<<16)
	chunk := make([]byte, 4096)
	for len(acked) < 300 {
		n, err := out.Read(chunk)
		buf = append(buf, chunk[:n]...)
		for {
			i := strings.IndexByte(string(buf), '\n')
			if i < 0 {
				break
			}
			if seq, err := strconv.ParseUint(string(buf[:i]), 10, 64); err == nil {
				acked[seq] = true
			}
			buf = buf[i+1:]
		}
		if err != nil {
			t.Fatalf("writer stopped after %d acknowledged appends: %v", len(acked), err)
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// Lines already written to the pipe are acknowledged too.
	rest, _ := io.ReadAll(out)
	for _, line := range strings.Split(string(append(buf, rest...)), "\n") {
		if seq, err := strconv.ParseUint(line, 10, 64); err == nil {
			acked[seq] = true
		}
	}
	_ = cmd.Wait()

	b := openT(t, dir, testOptions)
	stored := map[uint64]bool{}
	for _, m := range all(t, b.Queue()) {
		stored[m.Seq] = true
	}
	for seq := range acked {
		if !stored[seq] {
			t.Errorf("acknowledged message %d lost", seq)
		}
	}
	t.Logf("%d appends acknowledged before SIGKILL, %d in the store after", len(acked), len(stored))
}

// crashWriter is the writer process of TestKill9; it runs until killed.
func crashWriter(dir string) {
	b, err := Open(dir, Options{CommitInterval: -1})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	lines := make(chan uint64, 1024)
	for w := range 4 {
		go func() {
			for i := 0; ; i++ {
				seq, err := b.Queue().Append(context.Background(), testMessage(fmt.Sprint("w", w), i))
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				lines <- seq
			}
		}()
	}
	for seq := range lines {
		fmt.Println(seq)
	}
}
