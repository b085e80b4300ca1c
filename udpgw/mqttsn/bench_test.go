package mqttsn

import (
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// BenchmarkPublishQoS1 measures the engine's own cost of a QoS 1 PUBLISH and
// its PUBACK over loopback UDP, with a broker that acknowledges at once: 50
// clients, each with one message in flight.
func BenchmarkPublishQoS1(b *testing.B) {
	te := startEngine(b, nil)
	devs, ids := benchClients(b, te, true)
	var wg sync.WaitGroup
	per := b.N/len(devs) + 1
	b.ResetTimer()
	for i, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64)
			for n := range per {
				msg, _ := mqttsn.Append(nil, &mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: ids[i], MsgID: uint16(n%60000 + 1), Data: []byte("0123456789abcdef0123456789abcdef")})
				if _, err := d.c.Write(msg); err != nil {
					return
				}
				if _, err := d.c.Read(buf); err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(per*len(devs))/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkConnectedClientMemory reports the Go heap a connected client costs:
// its record, session, address and id table entries, and one registered topic
// (and, its address unproven here, its address check and source entry).
func BenchmarkConnectedClientMemory(b *testing.B) {
	e, err := New(udpgw.Env{Name: "sn", Broker: newFakeBroker(), Sessions: session.New(session.Options{})},
		Options{Bind: "127.0.0.1:0", MaxClients: 1 << 30, MaxUnproven: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	const clients = 10000
	var before, after runtimeMem
	before.read()
	n := 0
	for b.Loop() {
		base := n
		for i := range clients {
			from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, byte(n >> 16), byte(n >> 8), byte(n)}), 9) // loopback, discard port: answers go nowhere
			id := fmt.Sprintf("d%d", base+i)
			connect, _ := mqttsn.Append(nil, &mqttsn.Connect{Flags: mqttsn.Flags{CleanSession: true}, Duration: 60, ClientID: id})
			e.handle(from, connect, time.Now())
			reg, _ := mqttsn.Append(nil, &mqttsn.Register{MsgID: 1, TopicName: "sensors/" + id + "/temp"})
			e.handle(from, reg, time.Now())
			n++
		}
	}
	after.read()
	b.ReportMetric(float64(after.heap-before.heap)/float64(n), "heap-B/client")
	e.mu.Lock()
	if len(e.byID) != n {
		b.Fatalf("%d clients, want %d", len(e.byID), n)
	}
	e.mu.Unlock()
}

type runtimeMem struct{ heap uint64 }

func (m *runtimeMem) read() {
	runtime.GC()
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	m.heap = s.HeapAlloc
}

// BenchmarkSpoofedConnectMemory reports the Go heap a spoofed CONNECT +
// SUBSCRIBE costs (a client that never proves its address, with a
// subscription), and that max_unproven bounds what a flood of them keeps: 4×
// as many sources as max_unproven leave max_unproven clients.
func BenchmarkSpoofedConnectMemory(b *testing.B) {
	const maxUnproven = 5000
	te := startEngine(b, func(o *Options) { o.MaxUnproven = maxUnproven })
	e := te.Engine
	var before, after runtimeMem
	before.read()
	n := 0
	for b.Loop() {
		for range 4 * maxUnproven {
			from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, byte(n >> 16), byte(n >> 8), byte(n)}), 9)
			id := fmt.Sprintf("s%d", n)
			connect, _ := mqttsn.Append(nil, &mqttsn.Connect{Flags: mqttsn.Flags{CleanSession: true}, Duration: 60, ClientID: id})
			e.handle(from, connect, time.Now())
			sub, _ := mqttsn.Append(nil, &mqttsn.Subscribe{MsgID: 1, TopicName: "big/" + id})
			e.handle(from, sub, time.Now())
			n++
		}
	}
	kept := 0
	for deadline := time.Now().Add(10 * time.Second); ; { // the evicted ones' operations run
		e.mu.Lock()
		kept = len(e.byID)
		e.mu.Unlock()
		if kept <= maxUnproven || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	after.read()
	if kept > maxUnproven {
		b.Fatalf("%d clients kept, want at most max_unproven %d", kept, maxUnproven)
	}
	b.ReportMetric(float64(after.heap-before.heap)/float64(kept), "heap-B/kept-client")
}

// benchClients connects the benchmarks' 50 clients to te, each with a topic
// registered, and returns them with their topic ids.
func benchClients(b *testing.B, te *testEngine, clean bool) ([]*device, []uint16) {
	const clients = 50
	devs := make([]*device, clients)
	ids := make([]uint16, clients)
	for i := range devs {
		devs[i] = te.device(b)
		devs[i].connect(fmt.Sprintf("b%d", i), 600, clean)
		ids[i] = devs[i].register(fmt.Sprintf("bench/%d", i))
	}
	return devs, ids
}
