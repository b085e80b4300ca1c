package coap

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"

	"github.com/mqttgw/mqttgw/internal/wait"
	"github.com/mqttgw/mqttgw/udpgw"
)

// BenchmarkPublishCON measures the engine alone (a fake broker that acks at
// once) for Confirmable publishes from one go-coap client.
func BenchmarkPublishCON(b *testing.B) {
	tl := startListener(b, udpgw.Env{}, Options{})
	cc, err := udp.Dial(tl.addr, options.WithErrors(func(error) {}))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	q := message.Option{ID: message.URIQuery, Value: []byte("c=bench")}
	payload := bytes.Repeat([]byte("x"), 32)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		resp, err := cc.Put(context.Background(), "/ps/bench/t", message.TextPlain, bytes.NewReader(payload), q)
		if err != nil {
			b.Fatal(err)
		}
		cc.ReleaseMessage(resp)
	}
}

// measuring skips the load measurements below unless MQTTGW_COAP_MEASURE is
// set: they take seconds and two cores, and report figures rather than pass
// or fail on them (except lost notifications).
func measuring(t *testing.T) {
	t.Helper()
	if os.Getenv("MQTTGW_COAP_MEASURE") == "" {
		t.Skip("set MQTTGW_COAP_MEASURE=1 to measure")
	}
}

// TestMeasureFanout: 1000 observers (each a device that proved its address)
// of one topic, 100 messages published to it every interval; every observer
// must get every message (0 lost), and the latency from publish to the
// observer's socket is reported (p50, p99). Non-confirmable notifications
// (the default), and Confirmable ones the observers acknowledge.
func TestMeasureFanout(t *testing.T) {
	measuring(t)
	observers, messages := 1000, 100
	if v := os.Getenv("MQTTGW_COAP_FANOUT_OBSERVERS"); v != "" {
		fmt.Sscan(v, &observers)
	}
	interval := 10 * time.Millisecond
	if v := os.Getenv("MQTTGW_COAP_FANOUT_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		interval = d
	}
	for _, con := range []bool{false, true} {
		name := map[bool]string{false: "NON", true: "CON"}[con]
		t.Run(name, func(t *testing.T) {
			tl := startListener(t, udpgw.Env{}, Options{NotifyCON: con})
			peers := make([]*rawPeer, observers)
			for i := range peers {
				p := newRawPeer(t, tl.addr)
				if r := p.do(observeReq(fmt.Sprintf("/ps/fan/t?c=fan%d", i), "f")); r.Code() != codes.Content || !r.HasOption(message.Observe) {
					t.Fatalf("observer %d: %v", i, r.Code())
				}
				proveByPing(t, p)
				peers[i] = p
			}
			waitFor(t, 10*time.Second, "proofs", func() bool { return tl.counter("mqttgw_sources_proven_total") == observers })
			var (
				mu        sync.Mutex
				latencies []time.Duration
				got       = make([][100]bool, observers)
				received  atomic.Int64
				wg        sync.WaitGroup
				stop      = make(chan struct{})
			)
			for i, p := range peers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, 2048)
					var mine []time.Duration
					defer func() {
						mu.Lock()
						latencies = append(latencies, mine...)
						mu.Unlock()
					}()
					for {
						select {
						case <-stop:
							return
						default:
						}
						_ = p.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
						n, err := p.conn.Read(buf)
						if err != nil {
							continue
						}
						at := time.Now()
						d := buf[:n]
						if n < 4 {
							continue
						}
						typ, code := message.Type(d[0]>>4&3), codes.Code(d[1])
						if typ == message.Confirmable {
							ack := byte(0x60) // ACK
							if code == codes.Empty {
								ack = 0x70 // RST: pong
							}
							_, _ = p.conn.Write([]byte{ack, 0, d[2], d[3]})
						}
						// The payload, after the marker: message number,
						// publish time (ns).
						if code != codes.Content || n < 17 || d[n-13] != 0xff {
							continue
						}
						body := d[n-12:]
						seq := binary.BigEndian.Uint32(body)
						sent := time.Unix(0, int64(binary.BigEndian.Uint64(body[4:])))
						if int(seq) < messages && !got[i][seq] {
							got[i][seq] = true
							mine = append(mine, at.Sub(sent))
							received.Add(1)
						}
					}
				}()
			}
			start := time.Now()
			for seq := range messages {
				body := make([]byte, 12)
				binary.BigEndian.PutUint32(body, uint32(seq))
				binary.BigEndian.PutUint64(body[4:], uint64(time.Now().UnixNano()))
				if err := tl.broker.Publish(context.Background(), "mqtt", udpgw.Message{Topic: "fan/t", Payload: body}); err != nil {
					t.Fatal(err)
				}
				time.Sleep(time.Until(start.Add(time.Duration(seq+1) * interval)))
			}
			want := observers * messages
			_ = wait.Until(10*time.Second, func() bool { return received.Load() == int64(want) })
			wall := time.Since(start)
			close(stop)
			wg.Wait()
			slices.Sort(latencies)
			lost := want - int(received.Load())
			p := func(q float64) time.Duration {
				if len(latencies) == 0 {
					return 0
				}
				return latencies[int(q*float64(len(latencies)-1))]
			}
			t.Logf("fanout %s: %d observers × %d messages every %v: lost %d (%.1f %%), queue_full %d, p50 %v, p99 %v, wall %v",
				name, observers, messages, interval, lost, 100*float64(lost)/float64(want),
				tl.counter("mqttgw_coap_notifications_dropped_total", "reason", "queue_full"), p(0.5), p(0.99), wall.Round(time.Millisecond))
			if lost != 0 {
				t.Errorf("%d notifications lost", lost)
			}
		})
	}
}

// TestMeasurePublishRate: peers devices (each proven) publish requests
// back to back, each waiting for its answer (2.04) before the next,
// Confirmable (QoS 1) or Non-confirmable (QoS 0): answered requests per
// second through the engine and a broker that acknowledges at once.
func TestMeasurePublishRate(t *testing.T) {
	measuring(t)
	const peers, each = 100, 500
	for _, typ := range []message.Type{message.NonConfirmable, message.Confirmable} {
		name := map[message.Type]string{message.NonConfirmable: "NON", message.Confirmable: "CON"}[typ]
		t.Run(name, func(t *testing.T) {
			tl := startListener(t, udpgw.Env{Broker: nopBroker{}}, Options{})
			ps := make([]*rawPeer, peers)
			for i := range ps {
				p := newRawPeer(t, tl.addr)
				if r := p.do(req{typ: message.Confirmable, code: codes.PUT, path: fmt.Sprintf("/ps/rate/t?c=rate%d", i), token: "p", observe: -1, payload: "1"}); r.Code() != codes.Changed {
					t.Fatalf("peer %d: %v", i, r.Code())
				}
				proveByPing(t, p)
				ps[i] = p
			}
			var wg sync.WaitGroup
			var failed atomic.Int64
			start := time.Now()
			for i, p := range ps {
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, 512)
					for j := range each {
						b, _ := p.encode(req{typ: typ, code: codes.PUT, path: fmt.Sprintf("/ps/rate/t?c=rate%d", i), token: "t", observe: -1, payload: "21.5"})
						for try := 0; ; try++ {
							_, _ = p.conn.Write(b)
							_ = p.conn.SetReadDeadline(time.Now().Add(time.Second))
							n, err := p.conn.Read(buf)
							if err == nil && n >= 4 && codes.Code(buf[1]) == codes.Changed {
								break
							}
							if try == 3 {
								failed.Add(1)
								break
							}
						}
						_ = j
					}
				}()
			}
			wg.Wait()
			d := time.Since(start)
			t.Logf("publish %s: %d peers × %d requests in %v: %.0f answered/s, %d failed", name, peers, each, d.Round(time.Millisecond), float64(peers*each)/d.Seconds(), failed.Load())
		})
	}
}
