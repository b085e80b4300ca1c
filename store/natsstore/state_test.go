package natsstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/mqttgw/mqttgw/internal/natstest"
	"github.com/mqttgw/mqttgw/store"
)

// TestStateLimits: what JetStream cannot hold is refused before anything is
// sent: a value beyond the server's payload limit, an Apply beyond one atomic
// batch.
func TestStateLimits(t *testing.T) {
	c := natstest.Start(t, natstest.Options{Nodes: 1})
	s := openT(t, Options{URLs: c.URLs(), Instance: "gw1"})
	st := s.State()
	ctx := context.Background()

	big := make([]byte, s.nc.MaxPayload())
	if err := st.Put(ctx, store.KindSession, "big", big); !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("Put of %d bytes: %v, want ErrTooLarge", len(big), err)
	}
	fits := make([]byte, s.nc.MaxPayload()-1024)
	if err := st.Put(ctx, store.KindSession, "fits", fits); err != nil {
		t.Fatalf("Put of %d bytes: %v", len(fits), err)
	}
	if v, ok, err := st.Get(store.KindSession, "fits"); !ok || err != nil || !bytes.Equal(v, fits) {
		t.Fatalf("Get of %d bytes: %d, %v, %v", len(fits), len(v), ok, err)
	}

	ops := make([]store.Op, MaxApplyOps+1)
	for i := range ops {
		ops[i] = store.Op{Kind: store.KindSession, Key: fmt.Sprint("k", i), Value: []byte("v")}
	}
	if err := st.Apply(ctx, ops...); !errors.Is(err, ErrTooManyOps) || !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("Apply of %d ops: %v, want ErrTooManyOps", len(ops), err)
	}
	if _, ok, _ := st.Get(store.KindSession, "k0"); ok {
		t.Fatal("a refused Apply wrote its first op")
	}
	if err := st.Apply(ctx, ops[:MaxApplyOps]...); err != nil {
		t.Fatalf("Apply of %d ops: %v", MaxApplyOps, err)
	}
	n := 0
	if err := st.Range(store.KindSession, func(string, []byte) bool { n++; return true }); err != nil || n != MaxApplyOps+1 {
		t.Fatalf("Range: %d records, %v; want %d", n, err, MaxApplyOps+1)
	}
}

// TestDeleteMarker: a deletion is a KV delete marker with a TTL, so deleted
// keys leave nothing behind for long; nats.go's KeyValue sees the key
// deleted.
func TestDeleteMarker(t *testing.T) {
	c := natstest.Start(t, natstest.Options{Nodes: 1})
	s := openT(t, Options{URLs: c.URLs(), Instance: "gw1"})
	ctx := context.Background()
	if err := s.State().Put(ctx, store.KindSession, "dev1", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := s.State().Delete(ctx, store.KindSession, "dev1"); err != nil {
		t.Fatal(err)
	}
	key, _ := kvKey(store.KindSession, "dev1")
	raw, err := s.st.stream.GetLastMsgForSubject(ctx, s.st.prefix+key)
	if err != nil {
		t.Fatal(err)
	}
	if raw.Header.Get(hdrKVOperation) != "DEL" || raw.Header.Get(hdrTTL) != deleteMarkerTTL.String() {
		t.Fatalf("marker headers %v", raw.Header)
	}
	info, err := s.st.stream.Info(ctx)
	if err != nil || info.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages, want the marker alone: %v", info.State.Msgs, err)
	}
	kv, err := s.js.KeyValue(ctx, StateBucket(DefaultName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, key); err == nil {
		t.Fatal("nats.go KeyValue.Get found a deleted key")
	}
}
