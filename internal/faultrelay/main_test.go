package faultrelay

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: Close must
// return after the scheduler and every socket reader exited, even with
// datagrams still delayed or held.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
