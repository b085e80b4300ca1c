package natsstore

import (
	"testing"

	"github.com/mqttgw/mqttgw/internal/natstest"
	"github.com/mqttgw/mqttgw/store"
	"github.com/mqttgw/mqttgw/store/storetest"
)

// TestConformance runs the backend-neutral store tests (store/storetest),
// which Bolt passes too, against a real three-node JetStream cluster with
// three replicas; each test is its own fleet on the one cluster.
func TestConformance(t *testing.T) {
	c := natstest.Start(t, natstest.Options{})
	var names fleetNames
	storetest.Run(t, func(t *testing.T) store.Store {
		o := clusterOptions(c, names.name(t))
		o.MaxMessages, o.MaxBytes = storetest.MaxMessages, storetest.MaxBytes
		return openT(t, o)
	})
}
