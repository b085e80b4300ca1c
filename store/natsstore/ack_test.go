package natsstore

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/mqttgw/mqttgw/internal/natstest"
	"github.com/mqttgw/mqttgw/store"
)

// TestAckPurgesTheFront: acknowledging a run from the queue's first message
// purges it in one request; what is not acknowledged stays, in order, also
// when the run has a message missing (acknowledged before) or the acks come
// out of order.
func TestAckPurgesTheFront(t *testing.T) {
	c := natstest.Start(t, natstest.Options{})
	var names fleetNames
	q := openT(t, clusterOptions(c, names.name(t))).Queue()
	ctx := context.Background()
	var seqs []uint64
	for i := range 12 {
		seq, err := q.Append(ctx, store.Message{Topic: "t", Payload: fmt.Appendf(nil, "%d", i), QoS: 1})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	left := func() []string {
		var out []string
		if err := q.Range(0, func(m store.Message) bool { out = append(out, string(m.Payload)); return true }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	steps := []struct {
		ack  []uint64
		want []string
	}{
		{[]uint64{seqs[2], seqs[0], seqs[1], seqs[4], 0}, []string{"3", "5", "6", "7", "8", "9", "10", "11"}},
		{[]uint64{seqs[0], seqs[3], seqs[5]}, []string{"6", "7", "8", "9", "10", "11"}}, // 0 acknowledged before
		{[]uint64{seqs[6], seqs[7], seqs[9], seqs[8]}, []string{"10", "11"}},
		{[]uint64{seqs[11]}, []string{"10"}},
	}
	for i, s := range steps {
		if err := q.Ack(ctx, s.ack...); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := left(); !slices.Equal(got, s.want) {
			t.Fatalf("step %d: left %v, want %v", i, got, s.want)
		}
		if n, _ := q.Len(); n != len(s.want) {
			t.Fatalf("step %d: Len %d, want %d", i, n, len(s.want))
		}
	}
}
