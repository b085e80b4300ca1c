package proxy

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/internal/natstest"
	"github.com/mqttgw/mqttgw/metrics"
	"github.com/mqttgw/mqttgw/store"
	"github.com/mqttgw/mqttgw/store/natsstore"
)

// BenchmarkPublishQoS1 is the durable store's cost (issue 10): QoS 1
// publishes of 64 octets through Publish, from 32 and from 128 goroutines
// (pN: devices each waiting for its acknowledgement before the next), reported
// as msgs/s:
//
//   - memory/broker: no store, a real Mosquitto acknowledges each;
//   - store/broker: a store, the broker there: the store stays empty, so
//     Publish goes to the broker directly (the store's cost: one Len);
//   - store/away: a store, the broker away: every publish is an Append,
//     acknowledged once committed and synced (grouped commits; fsync for real
//     on the test's temp dir);
//   - store/replay: the broker there and the store holding a backlog of
//     20 000 messages when the run starts: publishes are appended behind it
//     while it lasts (stored/op says which share went to the store), and the
//     sender replays and removes them meanwhile (replayed/s).
//
// The store variants run with each backend: bolt (one file, fsync) and
// jetstream (store/natsstore on a real three-node nats-server cluster on
// loopback, replicas 3: an append is acknowledged once a quorum holds it),
// issue 13's comparison. p1 (one publisher) gives the latency each adds:
// ns/op is then the time from Publish to its acknowledgement.
//
// (Without a store and the broker away, Publish fails at once with
// ErrUnavailable: there is nothing to compare.)
//
//	go test -run '^$' -bench PublishQoS1 -benchtime 3s ./proxy
func BenchmarkPublishQoS1(b *testing.B) {
	outer := b
	broker := mosquittotest.Start(b, mosquittotest.Options{AllowAnonymous: true})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	away := "tcp://" + l.Addr().String() // nothing listens there once closed
	l.Close()
	run := func(b *testing.B, url string, q store.Queue, backlog, publishers int) {
		if q != nil {
			var wg sync.WaitGroup // appenders share commits
			for w := range 64 {
				wg.Go(func() {
					for i := w; i < backlog; i += 64 {
						if _, err := q.Append(context.Background(), store.Message{Topic: "bench/backlog", Payload: []byte(fmt.Sprint(i)), QoS: 1}); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
		}
		reg := metrics.New()
		p, err := New(Options{URL: url, ClientID: "bench", Store: q, Logger: zap.NewNop(), Metrics: reg, ConnectTimeout: 200 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		if err := p.Start(); err != nil {
			b.Fatal(err)
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			p.Close(ctx)
		}()
		if url == broker.URL {
			waitFor(b, 10*time.Second, "connected", p.Connected)
		}
		defer func() { b.ReportMetric(reg.Get("mqttgw_upstream_stored_total")/float64(b.N), "stored/op") }()
		payload := make([]byte, 64)
		var seq atomic.Int64
		b.SetParallelism(max(1, publishers/runtime.GOMAXPROCS(0)))
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			topic := fmt.Sprintf("bench/%d", seq.Add(1))
			for pb.Next() {
				if err := p.Publish(context.Background(), Message{Topic: topic, Payload: payload, QoS: 1}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		elapsed := time.Since(start).Seconds()
		b.ReportMetric(float64(b.N)/elapsed, "msgs/s")
		if backlog > 0 {
			// What the sender took from the store to the broker meanwhile.
			b.ReportMetric(reg.Get("mqttgw_upstream_published_total")/elapsed, "replayed/s")
		}
	}
	var nats *natstest.Cluster
	openBench := func(b *testing.B, backend string) store.Queue {
		var st store.Store
		var err error
		switch backend {
		case "bolt":
			st, err = store.Open(b.TempDir(), store.Options{MaxMessages: -1, MaxBytes: -1})
		case "jetstream":
			if nats == nil { // once, for every run (a sub-benchmark's cleanups run after each of its rounds)
				nats = natstest.Start(outer, natstest.Options{})
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			st, err = natsstore.Open(ctx, natsstore.Options{URLs: nats.URLs(), Name: fmt.Sprintf("bench%d", benchFleet.Add(1)), Instance: "gw", Replicas: 3, MaxMessages: -1, MaxBytes: -1})
		}
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		return st.Queue()
	}
	for _, n := range []int{1, 32, 128} {
		b.Run(fmt.Sprintf("memory/broker/p%d", n), func(b *testing.B) { run(b, broker.URL, nil, 0, n) })
		for _, backend := range []string{"bolt", "jetstream"} {
			b.Run(fmt.Sprintf("%s/broker/p%d", backend, n), func(b *testing.B) { run(b, broker.URL, openBench(b, backend), 0, n) })
			b.Run(fmt.Sprintf("%s/away/p%d", backend, n), func(b *testing.B) { run(b, away, openBench(b, backend), 0, n) })
			if n > 1 {
				b.Run(fmt.Sprintf("%s/replay/p%d", backend, n), func(b *testing.B) { run(b, broker.URL, openBench(b, backend), 20000, n) })
			}
		}
	}
}

// benchFleet numbers the JetStream benchmarks' fleets: each run gets its own
// streams in the one NATS cluster.
var benchFleet atomic.Int64
