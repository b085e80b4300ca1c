package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/metrics"
)

// TestBatchedConnection: the broker connection under batchConn works with
// every scheme paho dials (tcp, TLS with the server name taken from the URL,
// websockets): QoS 1 publishes from many goroutines all arrive, fewer
// system calls than packets carry them, and Close still ends with a clean
// DISCONNECT (flushed before the socket closes): the broker does not
// publish the gateway's will, and the status topic reads "offline" from
// Close itself.
func TestBatchedConnection(t *testing.T) {
	for _, scheme := range []string{"tcp", "ssl", "ws"} {
		t.Run(scheme, func(t *testing.T) {
			o := mosquittotest.Options{Users: map[string]string{"gw": "pw"}, TLS: scheme == "ssl"}
			wsAddr := freeAddr(t)
			if scheme == "ws" {
				_, port, _ := net.SplitHostPort(wsAddr)
				o.Extra = fmt.Sprintf("listener %s 127.0.0.1\nprotocol websockets\n", port)
			}
			b := mosquittotest.Start(t, o)
			sub := b.Subscribe(t, mosquittotest.SubOptions{Username: "gw", Password: "pw", QoS: 1, Topics: []string{"batch/#"}})
			url := b.URL
			var tc *tls.Config
			switch scheme {
			case "ssl":
				pem, err := os.ReadFile(b.CAFile)
				if err != nil {
					t.Fatal(err)
				}
				pool := x509.NewCertPool()
				pool.AppendCertsFromPEM(pem)
				tc = &tls.Config{RootCAs: pool} // no ServerName: 127.0.0.1 from the URL, as tls.Dial
			case "ws":
				url = "ws://" + wsAddr
			}
			reg := metrics.New()
			p, err := New(Options{URL: url, ClientID: "batch-" + scheme, Username: "gw", Password: "pw", TLS: tc, StatusTopic: "batch/status",
				Metrics: reg, Logger: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Start(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "connected to "+url, p.online)
			const n = 400
			errs := make(chan error, n)
			for i := range n {
				go func() {
					errs <- p.Publish(context.Background(), Message{Topic: fmt.Sprintf("batch/%d", i%8), Payload: fmt.Appendf(nil, "m%d", i), QoS: 1})
				}()
			}
			for range n {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			got := map[string]bool{}
			for len(got) < n {
				m := sub.Next(t, 10*time.Second)
				if m.Topic != "batch/status" {
					got[string(m.Payload)] = true
				}
			}
			packets, writes := reg.Get("mqttgw_upstream_packets_written_total"), reg.Get("mqttgw_upstream_socket_writes_total")
			t.Logf("%s: %v packets in %v writes", scheme, packets, writes)
			if writes == 0 || writes >= packets {
				t.Errorf("%v packets in %v writes: want fewer writes than packets", packets, writes)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			p.Close(ctx)
			for {
				m := sub.Next(t, 10*time.Second)
				if m.Topic == "batch/status" && string(m.Payload) == "offline" {
					break
				}
			}
			waitFor(t, 10*time.Second, "the broker to log the gateway's DISCONNECT", func() bool {
				return strings.Contains(b.Log(), "Received DISCONNECT from batch-"+scheme)
			})
			if log := b.Log(); strings.Contains(log, "Sending will") {
				t.Errorf("the broker published the gateway's will; its log:\n%s", log)
			}
		})
	}
}

// BenchmarkBrokerWrites compares, in one run, the broker connection with and
// without batchConn (issue 11: "broker writes in batches"): 128 goroutines
// publish 64-octet messages through Publish to a real Mosquitto, at QoS 0
// (fire and forget) and QoS 1 (each waits for its PUBACK). Reported: msgs/s,
// packets per write system call, and this process's CPU time per message
// (user+system, getrusage), which says what the gateway's side costs
// whatever else the machine runs.
//
//	go test -run '^$' -bench BrokerWrites -benchtime 50000x ./proxy
func BenchmarkBrokerWrites(b *testing.B) {
	broker := mosquittotest.Start(b, mosquittotest.Options{AllowAnonymous: true, Extra: "max_queued_messages 0\n"})
	for _, qos := range []byte{0, 1} {
		for _, batched := range []bool{false, true} {
			name := fmt.Sprintf("qos%d/unbatched", qos)
			if batched {
				name = fmt.Sprintf("qos%d/batched", qos)
			}
			b.Run(name, func(b *testing.B) {
				batchWrites = batched
				defer func() { batchWrites = true }()
				reg := metrics.New()
				p, err := New(Options{URL: broker.URL, ClientID: "bench-writes", Logger: zap.NewNop(), Metrics: reg})
				if err != nil {
					b.Fatal(err)
				}
				if err := p.Start(); err != nil {
					b.Fatal(err)
				}
				defer p.Close(context.Background())
				waitFor(b, 10*time.Second, "connected", p.online)
				payload := make([]byte, 64)
				b.SetParallelism(64) // 128 publishers on 2 cores
				cpu0 := cpuTime()
				start := time.Now()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := p.Publish(context.Background(), Message{Topic: "bench/writes", Payload: payload, QoS: qos}); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.StopTimer()
				elapsed := time.Since(start)
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
				b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/msg")
				if w := reg.Get("mqttgw_upstream_socket_writes_total"); w > 0 {
					b.ReportMetric(reg.Get("mqttgw_upstream_packets_written_total")/w, "packets/write")
				}
			})
		}
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
