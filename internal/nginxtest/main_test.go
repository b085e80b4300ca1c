package nginxtest

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind (the
// process waiter of testproc).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
