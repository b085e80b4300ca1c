package natsstore

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/natstest"
	"github.com/mqttgw/mqttgw/store"
)

// TestOwnership runs two instances of one fleet on a three-node cluster
// (the clustered path of JetStream's checks, where a fence is checked before
// the proposal).
func TestOwnership(t *testing.T) {
	c := natstest.Start(t, natstest.Options{})
	var names fleetNames
	pair := func(t *testing.T, lease time.Duration) (a, b *Store) {
		o := clusterOptions(c, names.name(t))
		o.OwnerLease = lease
		o.MaxBytes = 1 << 20 // each queue stream reserves it: four pairs fit the test cluster
		o.Instance = "gwA"
		a = openT(t, o)
		o.Instance = "gwB"
		b = openT(t, o)
		return a, b
	}
	ctx := context.Background()

	// Take is a compare-and-swap: the last taker owns the key, each take a
	// new revision; taking a key one owns changes nothing.
	t.Run("take", func(t *testing.T) {
		a, b := pair(t, 0)
		const key = "sn\x00dev1"
		if inst, rev, err := a.Owner(key); inst != "" || rev != 0 || err != nil {
			t.Fatalf("Owner of a new key: %q, %d, %v", inst, rev, err)
		}
		r1, prev, err := a.Take(ctx, key)
		if err != nil || prev != "" || r1 == 0 {
			t.Fatalf("A takes a new key: rev %d, prev %q, %v", r1, prev, err)
		}
		if r, prev, err := a.Take(ctx, key); r != r1 || prev != "gwA" || err != nil {
			t.Fatalf("A takes its own key: rev %d, prev %q, %v; want %d, gwA", r, prev, err, r1)
		}
		r2, prev, err := b.Take(ctx, key)
		if err != nil || prev != "gwA" || r2 <= r1 {
			t.Fatalf("B takes A's key: rev %d, prev %q, %v; want > %d, gwA", r2, prev, err, r1)
		}
		if inst, rev, err := a.Owner(key); inst != "gwB" || rev != r2 || err != nil {
			t.Fatalf("Owner: %q, %d, %v; want gwB, %d", inst, rev, err, r2)
		}
		// Both at once, many times: every take succeeds, and the owner is
		// the one whose revision is the last.
		var wg sync.WaitGroup
		revs := [2][]uint64{}
		for i, s := range []*Store{a, b} {
			wg.Go(func() {
				for range 10 {
					r, _, err := s.Take(ctx, key)
					if err != nil {
						t.Errorf("%s: Take: %v", s.Instance(), err)
						return
					}
					revs[i] = append(revs[i], r)
				}
			})
		}
		wg.Wait()
		inst, rev, err := a.Owner(key)
		if err != nil {
			t.Fatal(err)
		}
		winner := slices.Max(append(slices.Clone(revs[0]), revs[1]...))
		if rev != winner || inst != map[bool]string{true: "gwA", false: "gwB"}[slices.Contains(revs[0], winner)] {
			t.Fatalf("after concurrent takes: owner %q at %d; A took %v, B took %v", inst, rev, revs[0], revs[1])
		}
	})

	// TakeFrom swaps only from the revision read: of two instances adopting
	// one orphan on the same read, one wins; a key never taken is taken
	// from 0.
	t.Run("take from", func(t *testing.T) {
		a, b := pair(t, 0)
		const key, fresh = "raw\x00dev1", "raw\x00dev2"
		r1, _, err := a.Take(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		r2, ok, err := b.TakeFrom(ctx, key, r1)
		if err != nil || !ok || r2 <= r1 {
			t.Fatalf("B takes from A's revision: rev %d, %v, %v; want > %d, true", r2, ok, err, r1)
		}
		if r, ok, err := a.TakeFrom(ctx, key, r1); err != nil || ok || r != 0 {
			t.Fatalf("A takes from a stale revision: rev %d, %v, %v; want 0, false", r, ok, err)
		}
		if inst, rev, err := a.Owner(key); inst != "gwB" || rev != r2 || err != nil {
			t.Fatalf("Owner: %q, %d, %v; want gwB, %d", inst, rev, err, r2)
		}
		if r, ok, err := a.TakeFrom(ctx, fresh, r2); err != nil || ok {
			t.Fatalf("take of a key never taken from revision %d: rev %d, %v, %v; want not ok", r2, r, ok, err)
		}
		r3, ok, err := a.TakeFrom(ctx, fresh, 0)
		if err != nil || !ok || r3 == 0 {
			t.Fatalf("take of a key never taken from 0: rev %d, %v, %v", r3, ok, err)
		}
		if inst, rev, err := b.Owner(fresh); inst != "gwA" || rev != r3 || err != nil {
			t.Fatalf("Owner: %q, %d, %v; want gwA, %d", inst, rev, err, r3)
		}
		if _, _, err := a.TakeFrom(ctx, "", 0); !errors.Is(err, store.ErrBadKey) {
			t.Fatalf("empty key: %v; want ErrBadKey", err)
		}
	})

	// A write fenced by a revision that is no longer the owner key's is
	// refused, alone or in a batch, and the batch's other ops are written.
	t.Run("fence", func(t *testing.T) {
		a, b := pair(t, 0)
		const k1, k2 = "sn\x00dev1", "sn\x00dev2"
		put := func(k, v string) store.Op {
			return store.Op{Kind: store.KindMQTTSNSession, Key: k, Value: []byte(v)}
		}
		get := func(k string) string {
			v, _, err := a.State().Get(store.KindMQTTSNSession, k)
			if err != nil {
				t.Fatal(err)
			}
			return string(v)
		}
		a1, _, _ := a.Take(ctx, k1)
		a2, _, _ := a.Take(ctx, k2)
		if lost, err := a.ApplyOwned(ctx, []store.Op{put(k1, "A1"), put(k2, "A2")}, []uint64{a1, a2}); lost != nil || err != nil {
			t.Fatalf("owner's batch: lost %v, %v", lost, err)
		}
		b1, _, err := b.Take(ctx, k1)
		if err != nil {
			t.Fatal(err)
		}
		if lost, err := b.ApplyOwned(ctx, []store.Op{put(k1, "B1")}, []uint64{b1}); lost != nil || err != nil {
			t.Fatalf("new owner's write: lost %v, %v", lost, err)
		}
		// A still thinks it owns k1: its batch loses k1's op, keeps k2's.
		lost, err := a.ApplyOwned(ctx, []store.Op{put(k1, "A1 stale"), put(k2, "A2 again")}, []uint64{a1, a2})
		if err != nil || !slices.Equal(lost, []int{0}) {
			t.Fatalf("stale owner's batch: lost %v, %v; want [0]", lost, err)
		}
		if lost, err := a.ApplyOwned(ctx, []store.Op{{Kind: store.KindMQTTSNSession, Key: k1, Delete: true}}, []uint64{a1}); err != nil || !slices.Equal(lost, []int{0}) {
			t.Fatalf("stale owner's delete: lost %v, %v; want [0]", lost, err)
		}
		if v1, v2 := get(k1), get(k2); v1 != "B1" || v2 != "A2 again" {
			t.Fatalf("records %q, %q; want B1, \"A2 again\"", v1, v2)
		}
	})

	// The live key expires once its instance stopped renewing it.
	t.Run("lease", func(t *testing.T) {
		a, b := pair(t, 2*time.Second)
		for _, s := range []*Store{a, b} {
			if ok, err := b.Alive(s.Instance()); !ok || err != nil {
				t.Fatalf("Alive(%s) while it runs: %v, %v", s.Instance(), ok, err)
			}
		}
		if ok, err := b.Alive("gwC"); ok || err != nil {
			t.Fatalf("Alive of an instance never started: %v, %v", ok, err)
		}
		// Renewals keep it: still alive after several leases.
		deadline := time.Now().Add(5 * time.Second) // over two leases
		for time.Now().Before(deadline) {
			if ok, err := b.Alive("gwA"); !ok || err != nil {
				t.Fatalf("Alive(gwA) while it renews: %v, %v", ok, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "gwA's live key to expire", func() bool {
			ok, err := b.Alive("gwA")
			if err != nil {
				t.Fatal(err)
			}
			return !ok
		})
	})

	// A watcher sees every take from then on, with its revision.
	t.Run("watch", func(t *testing.T) {
		a, b := pair(t, 0)
		type change struct {
			key, inst string
			rev       uint64
		}
		got := make(chan change, 10)
		stop, err := a.WatchOwners(func(key, inst string, rev uint64) { got <- change{key, inst, rev} })
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		key := "sn\x00" + string(bytes.Repeat([]byte("x"), inlineKeyMax+1)) // hashed: the key comes from the value
		ra, _, err := a.Take(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		rb, _, err := b.Take(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []change{{key, "gwA", ra}, {key, "gwB", rb}} {
			select {
			case ch := <-got:
				if ch != want {
					t.Fatalf("watch: %q %s %d; want %s %d", ch.key[:8], ch.inst, ch.rev, want.inst, want.rev)
				}
			case <-time.After(15 * time.Second):
				t.Fatalf("watch: no change after 15s; want %s %d", want.inst, want.rev)
			}
		}
	})
}
