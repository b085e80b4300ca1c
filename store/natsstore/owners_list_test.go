package natsstore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/natstest"
	"github.com/mqttgw/mqttgw/store"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// owned is what RangeOwners reported for one key.
type owned struct {
	instance string
	rev      uint64
}

// rangeAll collects RangeOwners's calls, failing the test on a key reported
// twice.
func rangeAll(t *testing.T, s *Store) map[string]owned {
	t.Helper()
	got := map[string]owned{}
	err := s.RangeOwners(func(key, instance string, rev uint64) bool {
		if _, dup := got[key]; dup {
			t.Errorf("key %q reported twice", key)
		}
		got[key] = owned{instance, rev}
		return true
	})
	if err != nil {
		t.Fatalf("RangeOwners: %v", err)
	}
	return got
}

// consumers is the number of consumers on the fleet's state stream.
func consumers(t *testing.T, s *Store) int {
	t.Helper()
	info, err := s.st.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Consumers
}

// TestRangeOwners lists the owner keys of two instances of one fleet on a
// three-node cluster, and the instances alive.
func TestRangeOwners(t *testing.T) {
	c := natstest.Start(t, natstest.Options{})
	var names fleetNames
	pair := func(t *testing.T, lease time.Duration) (a, b *Store) {
		o := clusterOptions(c, names.name(t))
		o.OwnerLease = lease
		o.MaxBytes = 1 << 20 // each queue stream reserves it
		o.Instance = "gwA"
		a = openT(t, o)
		o.Instance = "gwB"
		b = openT(t, o)
		return a, b
	}
	ctx := context.Background()

	// Every key once, with its last owner and the revision Owner reads;
	// a hashed key (longer than inlineKeyMax) and one with a NUL alike;
	// no consumer left behind.
	t.Run("owners", func(t *testing.T) {
		a, b := pair(t, 0)
		if got := rangeAll(t, a); len(got) != 0 {
			t.Fatalf("no key taken yet: %v", got)
		}
		keys := []string{"sn\x00dev1", "sn\x00dev2", "coap\x00dev1", "sn\x00" + strings.Repeat("L", inlineKeyMax+10)}
		for i, k := range keys {
			s := a
			if i%2 == 1 {
				s = b
			}
			if _, _, err := s.Take(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
		// B takes A's first key over; A takes B's hashed one back.
		for _, tk := range []struct {
			s   *Store
			key string
		}{{b, keys[0]}, {a, keys[3]}, {a, keys[3]}} {
			if _, _, err := tk.s.Take(ctx, tk.key); err != nil {
				t.Fatal(err)
			}
		}
		want := map[string]owned{}
		for _, k := range keys {
			inst, rev, err := a.Owner(k)
			if err != nil {
				t.Fatal(err)
			}
			want[k] = owned{inst, rev}
		}
		if want[keys[0]].instance != "gwB" || want[keys[1]].instance != "gwB" || want[keys[2]].instance != "gwA" || want[keys[3]].instance != "gwA" {
			t.Fatalf("owners after the takes: %v", want)
		}
		for _, s := range []*Store{a, b} {
			if got := rangeAll(t, s); !maps.Equal(got, want) {
				t.Errorf("%s: RangeOwners %v, want %v", s.Instance(), got, want)
			}
		}
		// fn returning false ends the calls.
		n := 0
		if err := a.RangeOwners(func(string, string, uint64) bool { n++; return false }); err != nil || n != 1 {
			t.Errorf("fn returning false: %d calls, %v; want 1", n, err)
		}
		if n := consumers(t, a); n != 0 {
			t.Errorf("%d consumers left on the state stream after the passes", n)
		}
	})

	// A delete marker on an owner key (a `nats kv del`) is no owner.
	t.Run("marker", func(t *testing.T) {
		a, _ := pair(t, 0)
		for _, k := range []string{"sn\x00gone", "sn\x00kept"} {
			if _, _, err := a.Take(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
		m := &nats.Msg{Subject: a.st.ownerSubject("sn\x00gone"), Header: nats.Header{hdrKVOperation: {"DEL"}}}
		if _, err := a.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
		got := rangeAll(t, a)
		if _, ok := got["sn\x00gone"]; ok || got["sn\x00kept"].instance != "gwA" || len(got) != 1 {
			t.Errorf("RangeOwners %v, want sn\\x00kept alone", got)
		}
	})

	// Many keys: one pass reads them all, in about a second, not one round
	// trip per key; keys taken while it runs are there once.
	t.Run("many", func(t *testing.T) {
		a, b := pair(t, 0)
		const n = 20000
		key := func(i int) string { return fmt.Sprintf("sn\x00dev%06d", i) }
		// Written as Take writes them, without its read before: Take costs
		// a round trip each, too slow for a test's setup.
		var acks []jetstream.PubAckFuture
		for i := range n {
			val, err := appendEnvelope(nil, key(i), []byte(map[bool]string{true: "gwA", false: "gwB"}[i%3 == 0]))
			if err != nil {
				t.Fatal(err)
			}
			f, err := a.js.PublishMsgAsync(&nats.Msg{Subject: a.st.ownerSubject(key(i)), Data: val})
			if err != nil {
				t.Fatal(err)
			}
			acks = append(acks, f)
			if len(acks) == 1000 || i == n-1 { // below nats.go's bound of pending publishes
				for _, f := range acks {
					select {
					case <-f.Ok():
					case err := <-f.Err():
						t.Fatal(err)
					case <-time.After(30 * time.Second):
						t.Fatal("async publish not acknowledged within 30s")
					}
				}
				acks = acks[:0]
			}
		}
		// A takes keys all over the range while B reads: keys whose old
		// message JetStream counted as pending for B's consumer are gone
		// before it gets there.
		stop := make(chan struct{})
		done := make(chan []string, 1)
		go func() {
			var taken []string
			defer func() { done <- taken }()
			for i := 1; ; i += 997 {
				select {
				case <-stop:
					return
				default:
				}
				k := key(i % n)
				if _, _, err := a.Take(ctx, k); err != nil {
					t.Errorf("Take: %v", err)
					return
				}
				taken = append(taken, k)
			}
		}()
		start := time.Now()
		got := rangeAll(t, b)
		took := time.Since(start)
		close(stop)
		taken := <-done
		t.Logf("RangeOwners: %d keys in %v, %d taken meanwhile", len(got), took, len(taken))
		if len(got) != n {
			t.Fatalf("RangeOwners: %d keys, want %d", len(got), n)
		}
		perInstance := map[string]int{}
		for _, o := range got {
			perInstance[o.instance]++
		}
		if perInstance["gwA"] < n/3 || perInstance["gwA"]+perInstance["gwB"] != n {
			t.Errorf("keys per instance %v", perInstance)
		}
		// After the takes, a pass sees each of them at A.
		got = rangeAll(t, b)
		for _, k := range taken {
			if o := got[k]; o.instance != "gwA" {
				t.Errorf("%q: %v after A took it", k, o)
			}
		}
		if n := consumers(t, a); n != 0 {
			t.Errorf("%d consumers left on the state stream after the passes", n)
		}
	})

	// Instances lists the live keys: both instances while they run, the
	// closed one gone once its lease has passed; an instance without a
	// lease is not announced.
	t.Run("instances", func(t *testing.T) {
		a, b := pair(t, time.Second)
		if got, err := a.Instances(); err != nil || !slices.Equal(got, []string{"gwA", "gwB"}) {
			t.Fatalf("Instances: %v, %v; want [gwA gwB]", got, err)
		}
		o := clusterOptions(c, names.name(t))
		o.MaxBytes = 1 << 20
		o.Instance = "gwQuiet"
		openT(t, o)
		b.Close()
		waitFor(t, 10*time.Second, "gwB's live key expired", func() bool {
			got, err := a.Instances()
			if err != nil {
				t.Fatal(err)
			}
			return slices.Equal(got, []string{"gwA"})
		})
	})

	// After Close, both fail with store.ErrClosed.
	t.Run("closed", func(t *testing.T) {
		a, _ := pair(t, 0)
		a.Close()
		if err := a.RangeOwners(func(string, string, uint64) bool { return true }); !errors.Is(err, store.ErrClosed) {
			t.Errorf("RangeOwners after Close: %v, want store.ErrClosed", err)
		}
		if _, err := a.Instances(); !errors.Is(err, store.ErrClosed) {
			t.Errorf("Instances after Close: %v, want store.ErrClosed", err)
		}
	})
}
