package wait

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestUntil: a condition that comes true is seen; one that never does is
// given up after the bound.
func TestUntil(t *testing.T) {
	var n atomic.Int32
	if !Until(time.Second, func() bool { return n.Add(1) >= 3 }) {
		t.Fatal("a condition true on its third poll was not seen")
	}
	start := time.Now()
	if Until(20*time.Millisecond, func() bool { return false }) {
		t.Fatal("a condition never true was reported true")
	}
	if time.Since(start) < 20*time.Millisecond {
		t.Fatal("gave up before the bound")
	}
}
