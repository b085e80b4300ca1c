package natsstore

import "testing"

// TestLenCounting: an acknowledged append is counted once, whether its answer
// comes before, during or after the stream info request of a refresh that
// already holds it.
func TestLenCounting(t *testing.T) {
	q := &queue{msgs: 3, bytes: 30, infoLast: 10}

	q.countLocked(11, 5) // answered after the last refresh, not in its info
	q.countLocked(9, 5)  // stored before the last refresh's info, answered late
	if q.msgs != 4 || q.bytes != 35 {
		t.Fatalf("after two answers: %d, %d; want 4, 35", q.msgs, q.bytes)
	}

	// A refresh is under way; two answers arrive meanwhile, one stored
	// before its info (seq 12), one after (seq 14).
	q.refreshing = true
	q.countLocked(12, 7)
	q.countLocked(14, 9)
	// The info: 5 messages up to seq 13 (it holds 11 and 12), 50 bytes of
	// records plus JetStream's overhead of 4 a message.
	q.refreshing = false
	q.overhead = 4
	q.setLocked(5, 50+5*4, 13, q.during)
	if q.msgs != 6 || q.bytes != 59 {
		t.Fatalf("after the refresh: %d, %d; want 6, 59", q.msgs, q.bytes)
	}

	// Appends under way count too.
	q.sending, q.sendBytes = 2, 20
	if n, b := q.Len(); n != 8 || b != 79 {
		t.Fatalf("Len = %d, %d; want 8, 79", n, b)
	}
}
