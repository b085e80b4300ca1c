package store_test

import (
	"sync"
	"testing"

	"github.com/mqttgw/mqttgw/store"
	"github.com/mqttgw/mqttgw/store/storetest"
)

// TestConformance runs the backend-neutral store tests (store/storetest)
// against Bolt; store/natsstore runs the same against NATS JetStream.
func TestConformance(t *testing.T) {
	var mu sync.Mutex
	dirs := map[*testing.T]string{} // each test's directory, for reopening
	storetest.Run(t, func(t *testing.T) store.Store {
		mu.Lock()
		dir, ok := dirs[t]
		if !ok {
			dir = t.TempDir()
			dirs[t] = dir
		}
		mu.Unlock()
		b, err := store.Open(dir, store.Options{
			NoSync:         true, // the logic, not the disk: the crash tests sync
			CommitInterval: -1,
			MaxMessages:    storetest.MaxMessages,
			MaxBytes:       storetest.MaxBytes,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := b.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return b
	})
}
