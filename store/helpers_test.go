package store

import (
	"fmt"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/wait"
)

// testOptions are the options of most tests: no fsync (the tests check
// logic, not the disk; the crash and benchmark tests sync for real) and no
// added commit wait.
var testOptions = Options{NoSync: true, CommitInterval: -1}

// openT opens a store in dir and closes it when the test ends.
func openT(t testing.TB, dir string, o Options) *Bolt {
	t.Helper()
	b, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// testMessage is the i-th message of device dev: its payload says both, so
// a replay can be checked for order.
func testMessage(dev string, i int) Message {
	return Message{
		Device:   dev,
		Listener: "sn",
		Topic:    "dev/" + dev,
		Payload:  []byte(fmt.Sprintf("%s#%d", dev, i)),
		QoS:      1,
		Enqueued: t0.Add(time.Duration(i) * time.Millisecond),
	}
}

// recordSize is m's record size, what Len and MaxBytes count.
func recordSize(t testing.TB, m Message) int64 {
	t.Helper()
	b, err := AppendMessage(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	return int64(len(b))
}

// all returns every message in the queue, in order.
func all(t testing.TB, q Queue) []Message {
	t.Helper()
	var ms []Message
	if err := q.Range(0, func(m Message) bool { ms = append(ms, m); return true }); err != nil {
		t.Fatal(err)
	}
	return ms
}

// waitFor polls cond until it holds, failing the test after bound.
var waitFor = wait.For
