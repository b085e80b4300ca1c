package store

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// benchMessage is a typical sensor publish: 64-byte payload.
var benchMessage = Message{Device: "sensor-0001", Listener: "sn", Topic: "sensors/0001/temp", Payload: make([]byte, 64), QoS: 1, Enqueued: t0}

// BenchmarkAppend measures durable appends with real fsync, by commit
// interval: none (commit as soon as the committer is free; appends arriving
// during a commit share the next one), 1 ms, and 5 ms (the default).
//
//   - sequential: one goroutine, each append waits for its own commit, so
//     ns/op is the cost of a commit (bbolt's two fdatasyncs) plus the wait.
//   - parallelN: N goroutines appending in a loop (b.SetParallelism(N/2) ×
//     GOMAXPROCS 2), as N devices whose publishes wait for the store at once;
//     one commit serves many appends. ns/op is wall time per append, the
//     inverse of throughput; p50-ms and p99-ms are the latency one Append
//     call sees.
//
// Reported besides ns/op: appends/s and appends/commit (how many appends one
// fsync pair served).
//
//	go test -run '^$' -bench BenchmarkAppend -benchtime 3s ./store
func BenchmarkAppend(b *testing.B) {
	for _, iv := range []struct {
		name string
		d    time.Duration
	}{{"interval=none", -1}, {"interval=1ms", time.Millisecond}, {"interval=5ms", 5 * time.Millisecond}} {
		for _, writers := range []int{1, 8, 64, 512} {
			mode := "sequential"
			if writers > 1 {
				mode = fmt.Sprintf("parallel%d", writers)
			}
			b.Run(mode+"/"+iv.name, func(b *testing.B) {
				s, err := Open(b.TempDir(), Options{CommitInterval: iv.d, MaxMessages: -1, MaxBytes: -1})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				q := s.Queue()
				ctx := context.Background()
				var mu sync.Mutex
				var lat []time.Duration
				start := time.Now()
				if writers > 1 {
					b.SetParallelism(writers / runtime.GOMAXPROCS(0))
					b.RunParallel(func(pb *testing.PB) {
						var mine []time.Duration
						for pb.Next() {
							t := time.Now()
							if _, err := q.Append(ctx, benchMessage); err != nil {
								b.Error(err)
								return
							}
							mine = append(mine, time.Since(t))
						}
						mu.Lock()
						lat = append(lat, mine...)
						mu.Unlock()
					})
				} else {
					for b.Loop() {
						t := time.Now()
						if _, err := q.Append(ctx, benchMessage); err != nil {
							b.Fatal(err)
						}
						lat = append(lat, time.Since(t))
					}
				}
				elapsed := time.Since(start)
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
				b.ReportMetric(float64(b.N)/float64(max(s.commits.Load(), 1)), "appends/commit")
				slices.Sort(lat)
				if len(lat) > 0 {
					b.ReportMetric(float64(lat[len(lat)/2])/1e6, "p50-ms")
					b.ReportMetric(float64(lat[len(lat)*99/100])/1e6, "p99-ms")
				}
			})
		}
	}
}

// BenchmarkBoltBatch is the parallel64 append made directly with bbolt's
// DB.Batch, the alternative to the store's own committer (see
// bolt_commit.go), with bbolt's default MaxBatchDelay (10 ms), 5 ms, and 0.
//
//	go test -run '^$' -bench BenchmarkBoltBatch -benchtime 3s ./store
func BenchmarkBoltBatch(b *testing.B) {
	rec, err := AppendMessage(nil, benchMessage)
	if err != nil {
		b.Fatal(err)
	}
	for _, delay := range []time.Duration{10 * time.Millisecond, 5 * time.Millisecond, 0} {
		b.Run(fmt.Sprintf("parallel64/delay=%v", delay), func(b *testing.B) {
			db, err := bolt.Open(filepath.Join(b.TempDir(), "b.db"), 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			db.MaxBatchDelay = delay
			if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket(bucketQueue); return err }); err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					err := db.Batch(func(tx *bolt.Tx) error {
						q := tx.Bucket(bucketQueue)
						seq, err := q.NextSequence()
						if err != nil {
							return err
						}
						k := seqKey(seq)
						return q.Put(k[:], rec)
					})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			elapsed := time.Since(start)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
		})
	}
}
