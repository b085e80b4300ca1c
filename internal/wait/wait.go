// Package wait is how the tests wait for something to happen: they poll a
// condition with a deadline, never sleep a fixed time and hope (STYLE.md).
// It imports the standard library only, so that every package's tests and
// the test servers (internal/mosquittotest, natstest, nginxtest) may use it.
package wait

import (
	"testing"
	"time"
)

// Every is the polling interval: short beside any bound a test sets, long
// enough that polling costs nothing next to the work it waits for.
const Every = 5 * time.Millisecond

// Until polls cond every Every until it holds, and reports whether it did
// within bound.
func Until(bound time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(Every)
	}
	return true
}

// For polls cond until it holds, and fails t when bound passes first.
func For(t testing.TB, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Until(bound, cond) {
		t.Fatalf("timed out after %v waiting for %s", bound, what)
	}
}
