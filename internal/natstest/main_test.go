package natstest

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: every
// process waiter must be gone after the cleanups, and the health probes'
// HTTP connections closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
