package proxy

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

// BenchmarkDeviceMemory connects b.N transparent devices to a real Mosquitto,
// each subscribed to one filter, and reports what each costs the gateway: Go heap
// and goroutine stacks (HeapInuse+StackInuse after a GC, minus the same before),
// goroutines, and resident memory. Use a fixed count:
//
//	go test -run '^$' -bench DeviceMemory -benchtime 1000x ./proxy
//	go test -run '^$' -bench DeviceMemory -benchtime 10000x ./proxy
func BenchmarkDeviceMemory(b *testing.B) {
	// One descriptor per device here, and one per device in mosquitto, which
	// inherits the limit.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if need := uint64(b.N) + 1000; lim.Cur < need {
		lim.Cur = min(need, lim.Max)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			b.Fatal(err)
		}
		if lim.Cur < need {
			b.Fatalf("RLIMIT_NOFILE hard limit %d: %d devices need %d", lim.Max, b.N, need)
		}
	}
	broker := mosquittotest.Start(b, mosquittotest.Options{AllowAnonymous: true, Extra: "max_connections -1"})
	p, err := New(Options{URL: broker.URL, ConnectTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	heap0, stack0, rss0, g0 := memNow()

	b.ResetTimer()
	devs := make([]*DeviceConn, b.N)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	const workers = 8
	for w := range workers {
		wg.Go(func() {
			for i := w; i < b.N; i += workers {
				id := fmt.Sprintf("bench-%d", i)
				d, err := p.DialDevice(context.Background(), DeviceOptions{
					ClientID: id, CleanSession: true,
					Will:      &Message{Topic: "will/" + id, Payload: []byte("gone"), QoS: 1},
					OnMessage: func(Message) {},
				})
				if err == nil {
					_, err = d.Subscribe(context.Background(), "cmd/"+id+"/#", 1)
				}
				if err != nil {
					mu.Lock()
					firstErr = cmp.Or(firstErr, err)
					mu.Unlock()
					return
				}
				devs[i] = d
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	heap1, stack1, rss1, g1 := memNow()
	n := float64(b.N)
	b.ReportMetric(float64(heap1+stack1-heap0-stack0)/n, "heap+stack-B/dev")
	b.ReportMetric(float64(heap1-heap0)/n, "heap-B/dev")
	b.ReportMetric(float64(stack1-stack0)/n, "stack-B/dev")
	b.ReportMetric(float64(rss1-rss0)/n, "rss-B/dev")
	b.ReportMetric(float64(g1-g0)/n, "goroutines/dev")

	var cw sync.WaitGroup
	for w := range workers {
		cw.Go(func() {
			for i := w; i < b.N; i += workers {
				devs[i].Close(true)
			}
		})
	}
	cw.Wait()
}

// memNow returns, after a GC, the heap and stacks in use, the resident set and
// the goroutine count.
func memNow() (heap, stack, rss uint64, goroutines int) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, ms.StackInuse, residentBytes(), runtime.NumGoroutine()
}

// residentBytes is VmRSS from /proc/self/status, or 0.
func residentBytes() uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
