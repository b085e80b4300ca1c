package natsstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/natstest"
	"github.com/mqttgw/mqttgw/store"
)

// TestDrain: a closed instance's queue becomes an orphan once its lease has
// run out; one instance at a time claims its drain, reads it in order and
// acknowledges from it; the instance coming back waits in Open until the
// drainer, seeing it alive, releases its claim, and finds what was left.
func TestDrain(t *testing.T) {
	c := natstest.Start(t, natstest.Options{})
	var names fleetNames
	o := clusterOptions(c, names.name(t))
	o.OwnerLease = time.Second
	o.MaxBytes = 1 << 20
	ctx := context.Background()

	o.Instance = "gwA"
	a, err := Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := a.Queue().Append(ctx, store.Message{Device: "d", Topic: "t", Payload: fmt.Appendf(nil, "%d", i), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	o.Instance = "gwB"
	b := openT(t, o)
	o.Instance = "gwC"
	cc := openT(t, o)

	var orphans []Orphan
	waitFor(t, 10*time.Second, "gwA's queue is an orphan", func() bool {
		orphans, err = b.Orphans(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(orphans) == 1
	})
	if orphans[0] != (Orphan{Instance: "gwA", Messages: 10}) {
		t.Fatalf("orphans %+v, want gwA with 10", orphans)
	}
	if _, err := b.ClaimDrain(ctx, "gwB"); !errors.Is(err, ErrBadOptions) {
		t.Fatalf("claiming one's own queue: %v, want ErrBadOptions", err)
	}
	d, err := b.ClaimDrain(ctx, "gwA")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Release()
	if _, err := cc.ClaimDrain(ctx, "gwA"); !errors.Is(err, ErrDrainClaimed) {
		t.Fatalf("a second claim: %v, want ErrDrainClaimed", err)
	}
	// The claim outlives several leases: it is renewed. Real time must
	// pass for a TTL to run out; the claim is checked all along.
	for deadline := time.Now().Add(2500 * time.Millisecond); time.Now().Before(deadline); {
		if _, err := cc.ClaimDrain(ctx, "gwA"); !errors.Is(err, ErrDrainClaimed) {
			t.Fatalf("a second claim while the first renews: %v, want ErrDrainClaimed", err)
		}
		select {
		case <-d.Lost():
			t.Fatal("the claim was lost")
		case <-time.After(100 * time.Millisecond):
		}
	}

	var got []string
	var seqs []uint64
	if err := d.Queue().Range(0, func(m store.Message) bool {
		got = append(got, string(m.Payload))
		seqs = append(seqs, m.Seq)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}; !slices.Equal(got, want) {
		t.Fatalf("drained %v, want %v", got, want)
	}
	if err := d.Queue().Ack(ctx, seqs[:6]...); err != nil {
		t.Fatal(err)
	}
	if n, _ := d.Queue().Len(); n != 4 {
		t.Fatalf("orphan's Len after 6 acks: %d, want 4", n)
	}
	// What a device that moved from gwA waits for (gateway/fence.go).
	bl, err := cc.QueueBacklog(ctx, "gwA")
	if err != nil {
		t.Fatal(err)
	}
	if bl.First != seqs[6] || bl.Last != seqs[9] || bl.Messages != 4 {
		t.Fatalf("gwA's backlog after 6 acks: %+v, want %d..%d, 4 messages", bl, seqs[6], seqs[9])
	}
	if bl.Holds("", "d", seqs[5]) || !bl.Holds("", "d", seqs[6]) || !bl.Holds("", "d", seqs[9]) || bl.Holds("", "other", seqs[9]) {
		t.Fatalf("gwA's backlog %+v: holds d's messages up to %d: want only from %d; another device's: want none", bl, seqs[5], seqs[6])
	}
	if last, err := cc.DeviceBacklog(ctx, "gwA", "", "d"); err != nil || last != seqs[9] {
		t.Fatalf("d's last message in gwA's queue: %d, %v; want %d", last, err, seqs[9])
	}
	if last, err := cc.DeviceBacklog(ctx, "gwA", "", "other"); err != nil || last != 0 {
		t.Fatalf("another device's last message in gwA's queue: %d, %v; want none", last, err)
	}
	if bl, err := cc.QueueBacklog(ctx, "gwNone"); err != nil || bl.Messages != 0 || bl.Holds("", "d", 1) {
		t.Fatalf("backlog of an instance without a queue: %+v, %v; want none", bl, err)
	}

	// gwA comes back: its Open waits for the drainer, which sees it alive.
	o.Instance = "gwA"
	opened := make(chan *Store, 1)
	go func() {
		a, err := Open(ctx, o)
		if err != nil {
			t.Error(err)
		}
		opened <- a
	}()
	waitFor(t, 10*time.Second, "the drainer sees gwA back", func() bool {
		back, err := d.OwnerBack()
		return err == nil && back
	})
	select {
	case <-opened:
		t.Fatal("gwA's Open returned while its queue's drain was claimed")
	default:
	}
	d.Release()
	a = <-opened
	if a == nil {
		return
	}
	defer a.Close()
	if n, _ := a.Queue().Len(); n != 4 {
		t.Fatalf("gwA's Len after the drain stopped: %d, want 4", n)
	}
	got = got[:0]
	if err := a.Queue().Range(0, func(m store.Message) bool {
		got = append(got, string(m.Payload))
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"6", "7", "8", "9"}; !slices.Equal(got, want) {
		t.Fatalf("gwA's queue after the drain: %v, want %v", got, want)
	}
	if orphans, err := b.Orphans(ctx); err != nil || len(orphans) != 0 {
		t.Fatalf("orphans with gwA alive: %v, %v", orphans, err)
	}
}
