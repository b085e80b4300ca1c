package natsstore

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: after
// Close, nats.go's goroutines and Ack's deleters must be gone.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
