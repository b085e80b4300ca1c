package natsstore

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/natstest"
	"github.com/mqttgw/mqttgw/store"
	"github.com/mqttgw/mqttgw/store/storetest"
)

// nodeIndex returns the index of the node whose server name is name.
func nodeIndex(t *testing.T, c *natstest.Cluster, name string) int {
	t.Helper()
	for i, n := range c.Nodes {
		if n.Name == name {
			return i
		}
	}
	t.Fatalf("no node %q", name)
	return -1
}

// queueLeader returns the server name of the queue stream's leader.
func (s *Store) queueLeader(ctx context.Context) (string, error) {
	info, err := s.q.stream.Info(ctx)
	if err != nil {
		return "", err
	}
	if info.Cluster == nil {
		return "", fmt.Errorf("stream %s: no cluster info", s.q.name)
	}
	return info.Cluster.Leader, nil
}

// TestKillOneOfThree kills the node leading the queue's stream while a
// writer appends: with three replicas, appends and reads go on once the other
// two elect a leader, every acknowledged append is there exactly once and in
// order, and the state bucket works too. Then the node comes back and catches
// up.
func TestKillOneOfThree(t *testing.T) {
	c := natstest.Start(t, natstest.Options{})
	s := openT(t, clusterOptions(c, "fo"))
	q, st := s.Queue(), s.State()
	ctx := context.Background()

	type acked struct {
		seq uint64
		i   int
	}
	var (
		mu    sync.Mutex
		done  []acked
		errs  []error
		stop  = make(chan struct{})
		wg    sync.WaitGroup
		count = func() int { mu.Lock(); defer mu.Unlock(); return len(done) }
	)
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			seq, err := q.Append(ctx, storetest.Message("d", i))
			mu.Lock()
			if err != nil {
				errs = append(errs, fmt.Errorf("append %d: %w", i, err))
			} else {
				done = append(done, acked{seq, i})
			}
			mu.Unlock()
		}
	})
	waitFor(t, 30*time.Second, "20 appends before the kill", func() bool { return count() >= 20 })

	leader, err := s.queueLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	victim := nodeIndex(t, c, leader)
	c.Kill(victim)
	before := count()
	t.Logf("killed %s, the queue's leader, after %d appends", leader, before)
	waitFor(t, 60*time.Second, "20 appends after the kill", func() bool { return count() >= before+20 })
	close(stop)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d appends failed across the kill, first: %v", len(errs), errs[0])
	}
	if now, err := s.queueLeader(ctx); err != nil || now == leader {
		t.Fatalf("queue leader after the kill: %q, %v", now, err)
	}

	// Every acknowledged append is there once, in the order of the appends.
	got := storetest.All(t, q)
	if len(got) != len(done) {
		t.Fatalf("Range gave %d messages, %d appends were acknowledged", len(got), len(done))
	}
	for k, a := range done {
		m := got[k]
		if m.Seq != a.seq || string(m.Payload) != fmt.Sprintf("d#%d", a.i) {
			t.Fatalf("message %d: seq %d payload %q; acknowledged seq %d for d#%d", k, m.Seq, m.Payload, a.seq, a.i)
		}
	}
	if n, _ := q.Len(); n != len(done) {
		t.Fatalf("Len = %d, want %d", n, len(done))
	}

	// State writes and reads go on.
	if err := st.Apply(ctx,
		store.Op{Kind: store.KindSession, Key: "dev1", Value: []byte("s1")},
		store.Op{Kind: store.KindMQTTSNSession, Key: "c1", Value: []byte("sn1")},
	); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := st.Get(store.KindSession, "dev1"); !ok || err != nil || string(v) != "s1" {
		t.Fatalf("Get = %q, %v, %v", v, ok, err)
	}
	var keys []string
	if err := st.Range(store.KindMQTTSNSession, func(k string, _ []byte) bool { keys = append(keys, k); return true }); err != nil || fmt.Sprint(keys) != "[c1]" {
		t.Fatalf("Range = %v, %v", keys, err)
	}

	// Acks go on, and the node comes back and catches up.
	seqs := make([]uint64, len(got))
	for i, m := range got {
		seqs[i] = m.Seq
	}
	if err := q.Ack(ctx, seqs[:len(seqs)/2]...); err != nil {
		t.Fatal(err)
	}
	c.Restart(victim)
	mustAppendN(t, q, 5)
	if n, _ := q.Len(); n != len(seqs)-len(seqs)/2+5 {
		t.Fatalf("Len after the restart = %d, want %d", n, len(seqs)-len(seqs)/2+5)
	}
	if got := storetest.All(t, q); len(got) != len(seqs)-len(seqs)/2+5 || got[0].Seq != seqs[len(seqs)/2] {
		t.Fatalf("after the restart: %d messages from seq %d", len(got), got[0].Seq)
	}
	if !strings.Contains(c.Log(victim), "Server is ready") {
		t.Fatal("the restarted node's log lacks its start")
	}

	// Now the node this store is connected to: it reconnects to another and
	// goes on.
	conn := nodeIndex(t, c, s.nc.ConnectedServerName())
	c.Kill(conn)
	mustAppendN(t, q, 5)
	if got := storetest.All(t, q); len(got) != len(seqs)-len(seqs)/2+10 {
		t.Fatalf("after killing %s: %d messages", c.Nodes[conn].Name, len(got))
	}
	if s.nc.ConnectedServerName() == c.Nodes[conn].Name {
		t.Fatal("still connected to the killed node")
	}
	if v, ok, err := st.Get(store.KindMQTTSNSession, "c1"); !ok || err != nil || string(v) != "sn1" {
		t.Fatalf("Get after killing %s = %q, %v, %v", c.Nodes[conn].Name, v, ok, err)
	}
}

func mustAppendN(t *testing.T, q store.Queue, n int) {
	t.Helper()
	for i := range n {
		if _, err := q.Append(context.Background(), storetest.Message("e", i)); err != nil {
			t.Fatal(err)
		}
	}
}
