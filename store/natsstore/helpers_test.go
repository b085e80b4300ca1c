package natsstore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/natstest"
	"github.com/mqttgw/mqttgw/internal/wait"
)

// openT opens a store on cluster c and closes it when the test ends.
func openT(t testing.TB, o Options) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// fleetNames gives each test its own fleet name, so that tests sharing one
// cluster never see each other's streams.
type fleetNames struct {
	mu    sync.Mutex
	n     int
	names map[testing.TB]string
}

// name returns t's fleet name, the same for every call with t.
func (f *fleetNames) name(t testing.TB) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.names == nil {
		f.names = map[testing.TB]string{}
	}
	if n, ok := f.names[t]; ok {
		return n
	}
	f.n++
	f.names[t] = fmt.Sprintf("t%d", f.n)
	return f.names[t]
}

// clusterOptions are the options of a store on c with 3 replicas.
func clusterOptions(c *natstest.Cluster, name string) Options {
	return Options{URLs: c.URLs(), Name: name, Instance: "gw1", Replicas: 3}
}

// waitFor polls cond until it holds, failing the test after bound.
var waitFor = wait.For
