package gateway

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/mqttsn"
)

// Issue 10, "a spoofed flood from 10 000 loopback source addresses/ports
// (CONNECTs, CONNECT+SUBSCRIBE to a large retained topic, garbage, CoAP
// GETs): gateway memory growth bounded, no source that never proved its
// address receives more than 3× what it sent, and 100 legitimate devices —
// new ones included — keep ≥ 99 % delivery."
//
// Each flood source is a UDP socket bound to its own 127.x.y.z address (all
// of 127.0.0.0/8 is loopback), which never answers anything: as a spoofed
// source, it cannot. Meanwhile 100 mqttsn.Client devices publish QoS 1 — half
// of them connected before the flood, half during it — to a Mosquitto
// subscriber. The gateway runs in this process: its heap is read before and
// after (runtime.MemStats after a GC). TestMQTTSNFlood runs a small flood with
// every `go test`; TestSoakMQTTSNFlood the 10 000 sources with MQTTGW_SOAK=1.

// floodScale is a flood's size: sources send rounds of their datagrams while
// devices publish messages each.
type floodScale struct{ sources, rounds, devices, messages int }

var (
	floodShort = floodScale{sources: 1000, rounds: 2, devices: 100, messages: 10}
	floodSoak  = floodScale{sources: 10000, rounds: 3, devices: 100, messages: 50}
)

func TestMQTTSNFlood(t *testing.T) { testFlood(t, floodShort) }

func TestSoakMQTTSNFlood(t *testing.T) {
	soakOnly(t)
	testFlood(t, floodSoak)
}

// floodSource is one flood socket and what went each way.
type floodSource struct {
	c         *net.UDPConn
	sent, got atomic.Int64
}

func testFlood(t *testing.T, scale floodScale) {
	b := startMosquitto(t, false)
	// max_unproven below the spoofed clients the flood makes, so that the
	// least recently heard are evicted all along.
	maxUnproven := scale.sources / 2
	g := startGateway(t, upstreamTOML(b)+fmt.Sprintf(`
[[listener]]
name = "sn"
type = "mqttsn"
bind = "127.0.0.1:0"
[listener.mqttsn]
retry_interval = "300ms"
max_retries = 5
max_unproven = %d

[[listener]]
name = "coap"
type = "coap"
bind = "127.0.0.1:0"
`, maxUnproven))
	snAddr := g.ListenerAddr("sn").(*net.UDPAddr).AddrPort()
	coapAddr := g.ListenerAddr("coap").(*net.UDPAddr).AddrPort()
	b.Publish(t, mosquittotest.PubOptions{Username: "reader", Password: "reader-secret", Topic: "flood/big", Payload: []byte(strings.Repeat("F", floodBig)), QoS: 1, Retain: true})
	sub := b.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1, Topics: []string{"flood/dev/#"}})

	sources := openFloodSources(t, scale.sources)
	var heap0 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&heap0)

	// The devices: half connect now, half once the flood is under way.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var (
		wg                 sync.WaitGroup
		acked, retried     atomic.Int64
		ackedMu            sync.Mutex
		ackedSet           = map[string]bool{} // payloads the gateway acknowledged
		failMu             sync.Mutex
		failures           []string
		floodStarted       = make(chan struct{})
		firstHalfConnected sync.WaitGroup
	)
	fail := func(format string, args ...any) {
		failMu.Lock()
		defer failMu.Unlock()
		if len(failures) < 10 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	firstHalfConnected.Add(scale.devices / 2)
	for i := range scale.devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			early := i < scale.devices/2
			if !early {
				<-floodStarted
			}
			c, err := mqttsn.Dial(ctx, snAddr.String(), mqttsn.ClientOptions{ClientID: fmt.Sprintf("dev%d", i), CleanSession: true,
				RetryInterval: 300 * time.Millisecond, MaxRetries: 8})
			if err != nil {
				fail("device %d: dial: %v", i, err)
				return
			}
			defer c.Close()
			connect := func() error {
				var err error
				for range 5 {
					if err = c.Connect(ctx); err == nil {
						return nil
					}
				}
				return err
			}
			err = connect()
			if early {
				firstHalfConnected.Done()
			}
			if err != nil {
				fail("device %d: connect: %v", i, err)
				return
			}
			topic := fmt.Sprintf("flood/dev/%d", i)
			for seq := range scale.messages {
				payload := []byte(fmt.Sprintf("%d:%d", i, seq))
				for attempt := 0; ; attempt++ {
					err := c.Publish(ctx, topic, mqttsn.QoS1, false, payload)
					if err == nil {
						acked.Add(1)
						ackedMu.Lock()
						ackedSet[string(payload)] = true
						ackedMu.Unlock()
						break
					}
					if attempt == 4 {
						fail("device %d message %d: %v", i, seq, err)
						break
					}
					retried.Add(1)
					_ = connect() // evicted, or the flood lost our datagrams: again
				}
			}
		}()
	}
	firstHalfConnected.Wait()

	// The flood, bounded in datagrams, not time; the second half of the
	// devices connects while it goes on.
	target := func(i int) netip.AddrPort {
		if i%4 == 3 {
			return coapAddr
		}
		return snAddr
	}
	var fwg sync.WaitGroup
	const senders = 4
	for w := range senders {
		fwg.Add(1)
		go func() {
			defer fwg.Done()
			for round := range scale.rounds {
				for i := w; i < len(sources); i += senders {
					for _, d := range floodDatagrams(i, round) {
						if _, err := sources[i].c.WriteToUDPAddrPort(d, target(i)); err == nil {
							sources[i].sent.Add(int64(len(d)))
						}
					}
				}
			}
		}()
	}
	close(floodStarted)

	// Every message the gateway acknowledged reaches the subscriber (QoS 1:
	// acknowledged once the broker has it). It is read while all this runs,
	// and only when one is owed, so that a quiet subscriber is a lost
	// acknowledged message and fails the test (Next), not a reason to wait.
	seen := map[string]bool{}
	owed := func() bool {
		ackedMu.Lock()
		defer ackedMu.Unlock()
		for p := range ackedSet {
			if !seen[p] {
				return true
			}
		}
		return false
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); fwg.Wait(); close(allDone) }()
	want := scale.devices * scale.messages
	var peak uint64 // the largest heap seen meanwhile (no GC forced)
	sample := time.Now()
	for done := false; ; {
		select {
		case <-allDone:
			done = true
		default:
		}
		if time.Since(sample) > 250*time.Millisecond {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			sample = time.Now()
		}
		if owed() {
			seen[string(sub.Next(t, 30*time.Second).Payload)] = true
			continue
		}
		if done {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the devices did not finish within 5 minutes")
		}
		select { // more acknowledgements to come: look again shortly
		case <-allDone:
		case <-time.After(20 * time.Millisecond):
		}
	}

	// What the flood sources got: wait until nothing more comes.
	total := func() (n int64) {
		for _, s := range sources {
			n += s.got.Load()
		}
		return n
	}
	for last, deadline := int64(-1), time.Now().Add(30*time.Second); ; {
		n := total()
		if n == last || time.Now().After(deadline) {
			break
		}
		last = n
		time.Sleep(300 * time.Millisecond) // a quiet interval, polled
	}
	var heap1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&heap1)
	growth := int64(heap1.HeapAlloc) - int64(heap0.HeapAlloc)

	var over []string
	var floodSent, floodGot int64
	for i, s := range sources {
		sent, got := s.sent.Load(), s.got.Load()
		floodSent += sent
		floodGot += got
		if got > 3*sent && len(over) < 10 {
			over = append(over, fmt.Sprintf("source %d (%s, kind %d): got %d for %d", i, s.c.LocalAddr(), i%4, got, sent))
		}
	}
	m := g.Metrics()
	t.Logf("flood: %d sources × %d rounds sent %d octets, got %d; held %v octets (%v datagrams) on sn; unproven clients now %v, ended %v evicted + %v expired; rate limited %v; kernel drops sn %v",
		len(sources), scale.rounds, floodSent, floodGot,
		m.Get("mqttgw_amplification_held_bytes_total", "listener", "sn"), m.Get("mqttgw_amplification_held_total", "listener", "sn"),
		m.Get("mqttgw_mqttsn_unproven_clients", "listener", "sn"),
		m.Get("mqttgw_mqttsn_unproven_ended_total", "listener", "sn", "reason", "evicted"),
		m.Get("mqttgw_mqttsn_unproven_ended_total", "listener", "sn", "reason", "expired"),
		m.Get("mqttgw_source_rate_limited_total", "listener", "sn"), m.Get("mqttgw_udp_kernel_drops_total", "listener", "sn"))
	t.Logf("devices: %d × %d QoS 1 messages, %d acknowledged (%.2f %%), %d retried; all acknowledged ones, %d distinct, at the subscriber",
		scale.devices, scale.messages, acked.Load(), 100*float64(acked.Load())/float64(want), retried.Load(), len(seen))
	t.Logf("gateway heap (in process): %.1f MB before the flood, %.1f MB after it (both after a GC): %+.1f MB (%d B per source); at most %.1f MB seen meanwhile (no GC forced)",
		float64(heap0.HeapAlloc)/1e6, float64(heap1.HeapAlloc)/1e6, float64(growth)/1e6, growth/int64(len(sources)), float64(peak)/1e6)

	if len(over) > 0 {
		t.Errorf("flood sources got more than 3× what they sent:\n%s", strings.Join(over, "\n"))
	}
	if n := int(acked.Load()); n*100 < want*99 {
		t.Errorf("%d of %d device messages acknowledged and delivered: below 99 %%; failures: %s", n, want, strings.Join(failures, "; "))
	}
	// Bounded: what max_unproven clients and their source entries cost
	// (BenchmarkSpoofedConnectMemory: under 3 KB each) with a wide margin,
	// the payloads they may buffer all together (64 MiB, held retained
	// messages), and 32 MiB for the rest (caches, buffers, the broker client).
	if limit := int64(maxUnproven)*8<<10 + 64<<20 + 32<<20; growth > limit {
		t.Errorf("heap grew by %d B during the flood, over %d", growth, limit)
	}
}

// openFloodSources binds n sockets, each to its own loopback address, and
// starts a reader per socket that counts what arrives; t.Cleanup closes them
// and waits for the readers.
func openFloodSources(t *testing.T, n int) []*floodSource {
	t.Helper()
	sources := make([]*floodSource, n)
	var readers sync.WaitGroup
	t.Cleanup(func() {
		for _, s := range sources {
			if s != nil {
				s.c.Close()
			}
		}
		readers.Wait()
	})
	for i := range sources {
		// 127.20.0.1 ... : distinct addresses, none the gateway's own.
		a := netip.AddrFrom4([4]byte{127, 20 + byte(i/62500), byte(i / 250 % 250), byte(1 + i%250)})
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
		if err != nil {
			t.Fatalf("flood source %d: %v", i, err)
		}
		s := &floodSource{c: c}
		sources[i] = s
		readers.Add(1)
		go func() {
			defer readers.Done()
			// Small: nothing larger than 3 × what a source sends (under
			// 100 octets a round) may come, and a larger datagram read
			// short still counts more than that.
			buf := make([]byte, 1500)
			for {
				k, _, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				s.got.Add(int64(k))
			}
		}()
	}
	return sources
}

// floodDatagrams is what source i sends in one round, by i mod 4: a CONNECT;
// a CONNECT and a SUBSCRIBE to the large retained topic; garbage; a CoAP GET
// of the large retained value (to the coap listener).
func floodDatagrams(i, round int) [][]byte {
	enc := func(m mqttsn.Message) []byte {
		b, err := mqttsn.Append(nil, m)
		if err != nil {
			panic(err)
		}
		return b
	}
	id := fmt.Sprintf("f%d", i)
	switch i % 4 {
	case 0:
		return [][]byte{enc(&mqttsn.Connect{Flags: mqttsn.Flags{CleanSession: true}, Duration: 600, ClientID: id})}
	case 1:
		return [][]byte{
			enc(&mqttsn.Connect{Flags: mqttsn.Flags{CleanSession: true}, Duration: 600, ClientID: id}),
			enc(&mqttsn.Subscribe{Flags: mqttsn.Flags{QoS: 1}, MsgID: uint16(round + 1), TopicName: "flood/big"}),
		}
	case 2:
		g := make([]byte, 8+i%24)
		_, _ = rand.Read(g)
		return [][]byte{g}
	default:
		return [][]byte{coapRequest(coapCON, codeGET, uint16(i+round), "fl", "/ps/flood/big", nil).encode()}
	}
}
