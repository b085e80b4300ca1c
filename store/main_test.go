package store

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: the
// committer must be gone after Close, and bbolt must have started none.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
