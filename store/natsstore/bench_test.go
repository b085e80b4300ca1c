package natsstore

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/natstest"
	"github.com/mqttgw/mqttgw/store"
)

// benchMessage is a typical sensor publish: 64-byte payload.
var benchMessage = store.Message{Device: "sensor-0001", Listener: "sn", Topic: "sensors/0001/temp", Payload: make([]byte, 64), QoS: 1}

// BenchmarkAppend measures appends to a queue with three replicas on a
// three-node cluster on this machine (so the "network" is loopback and the
// three servers share its cores), sequential and from N goroutines at once.
// ns/op is wall time per append (the inverse of throughput); p50-ms and
// p99-ms are what one Append call waits.
//
//	go test -run '^$' -bench BenchmarkAppend -benchtime 3s ./store/natsstore
func BenchmarkAppend(b *testing.B) {
	c := natstest.Start(b, natstest.Options{})
	var names fleetNames
	for _, writers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			o := clusterOptions(c, names.name(b))
			o.MaxMessages, o.MaxBytes = -1, -1
			q := openT(b, o).Queue()
			ctx := context.Background()
			var mu sync.Mutex
			var lat []time.Duration
			start := time.Now()
			one := func(mine *[]time.Duration) {
				t := time.Now()
				if _, err := q.Append(ctx, benchMessage); err != nil {
					b.Error(err)
				}
				*mine = append(*mine, time.Since(t))
			}
			if writers > 1 {
				b.SetParallelism(writers / runtime.GOMAXPROCS(0))
				b.RunParallel(func(pb *testing.PB) {
					var mine []time.Duration
					for pb.Next() {
						one(&mine)
					}
					mu.Lock()
					lat = append(lat, mine...)
					mu.Unlock()
				})
			} else {
				for b.Loop() {
					one(&lat)
				}
			}
			report(b, lat, time.Since(start), "appends/s")
		})
	}
}

// BenchmarkApply measures State.Apply of 64 puts (an MQTT-SN engine's
// periodic write of its changed sessions) as one atomic batch.
func BenchmarkApply(b *testing.B) {
	c := natstest.Start(b, natstest.Options{})
	s := openT(b, clusterOptions(c, "bench"))
	value := make([]byte, 200)
	ops := make([]store.Op, 64)
	var lat []time.Duration
	start := time.Now()
	i := 0
	for b.Loop() {
		for j := range ops {
			ops[j] = store.Op{Kind: store.KindMQTTSNSession, Key: fmt.Sprintf("client-%06d", (i*64+j)%10000), Value: value}
		}
		i++
		t := time.Now()
		if err := s.State().Apply(context.Background(), ops...); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t))
	}
	report(b, lat, time.Since(start), "applies/s")
}

// BenchmarkReplay measures Range and Ack of a backlog, as the proxy replays
// it: Range chunks of 64, then one Ack of the chunk.
func BenchmarkReplay(b *testing.B) {
	c := natstest.Start(b, natstest.Options{})
	o := clusterOptions(c, "replay")
	o.MaxMessages, o.MaxBytes = -1, -1
	q := openT(b, o).Queue()
	ctx := context.Background()
	b.StopTimer()
	for range b.N {
		if _, err := q.Append(ctx, benchMessage); err != nil {
			b.Fatal(err)
		}
	}
	b.StartTimer()
	start := time.Now()
	var after uint64
	n := 0
	var inRange, inAck time.Duration
	for n < b.N {
		var seqs []uint64
		t := time.Now()
		if err := q.Range(after, func(m store.Message) bool { seqs = append(seqs, m.Seq); return len(seqs) < 64 }); err != nil {
			b.Fatal(err)
		}
		inRange += time.Since(t)
		if len(seqs) == 0 {
			b.Fatalf("replayed %d of %d", n, b.N)
		}
		t = time.Now()
		if err := q.Ack(ctx, seqs...); err != nil {
			b.Fatal(err)
		}
		inAck += time.Since(t)
		after = seqs[len(seqs)-1]
		n += len(seqs)
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "msgs/s")
	b.ReportMetric(float64(inRange.Microseconds())/float64(n), "range-µs/msg")
	b.ReportMetric(float64(inAck.Microseconds())/float64(n), "ack-µs/msg")
}

func report(b *testing.B, lat []time.Duration, elapsed time.Duration, unit string) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), unit)
	b.ReportMetric(float64(lat[len(lat)/2])/1e6, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100])/1e6, "p99-ms")
}
