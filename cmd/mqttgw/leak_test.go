package main

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind (the
// in-process gateways of the tool tests included).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
