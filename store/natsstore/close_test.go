package natsstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/natstest"
	"github.com/mqttgw/mqttgw/store"
	"github.com/mqttgw/mqttgw/store/storetest"
)

// TestServerGone: with its only server gone, an append keeps retrying until
// Options.Timeout and then says it is unconfirmed (not that it failed: it
// may have been stored); Close waits for it; reads fail after their own
// bound; nothing is left running.
func TestServerGone(t *testing.T) {
	c := natstest.Start(t, natstest.Options{Nodes: 1})
	s, err := Open(context.Background(), Options{URLs: c.URLs(), Instance: "gw1", Timeout: 2 * time.Second, RequestTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	q := s.Queue()
	if _, err := q.Append(context.Background(), storetest.Message("d", 0)); err != nil {
		t.Fatal(err)
	}
	c.Kill(0)

	if _, _, err := s.State().Get(store.KindSession, "k"); err == nil {
		t.Fatal("Get without a server succeeded")
	}
	errc := make(chan error, 1)
	go func() {
		_, err := q.Append(context.Background(), storetest.Message("d", 1))
		errc <- err
	}()
	waitFor(t, 5*time.Second, "the append to be under way", func() bool { n, _ := q.Len(); return n == 2 })
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrUnconfirmed) {
			t.Fatalf("append without a server: %v, want ErrUnconfirmed", err)
		}
	default:
		t.Fatalf("Close returned after %v, before the append under way", time.Since(start))
	}
	if _, err := q.Append(context.Background(), storetest.Message("d", 2)); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("append after Close: %v", err)
	}
}
