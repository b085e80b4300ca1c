package mqttsn

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	closedLoop(b, devs, func(i, n int) []byte {
		msg, _ := mqttsn.Append(nil, &mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: ids[i], MsgID: uint16(n%60000 + 1), Data: []byte("0123456789abcdef0123456789abcdef")})
		return msg
	})
}

// closedLoop has each of devs send next(i, n), its n-th datagram, and wait
// for one answer before the next, b.N in all; it reports msgs/s and the
// process's CPU per message (clients included).
func closedLoop(b *testing.B, devs []*device, next func(i, n int) []byte) {
	var wg sync.WaitGroup
	per := b.N/len(devs) + 1
	cpu := processCPU()
	b.ResetTimer()
	for i, d := range devs {
		wg.Go(func() {
			buf := make([]byte, 64)
			for n := range per {
				if _, err := d.c.Write(next(i, n)); err != nil {
					return
				}
				if _, err := d.c.Read(buf); err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(per*len(devs))/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(processCPU()-cpu)/float64(per*len(devs)), "cpu-ns/msg")
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

// countBroker is a Broker whose Publish only counts, and checks the payload
// without keeping it: what a publish allocates is then the engine's alone.
type countBroker struct {
	*fakeBroker
	payload []byte
	n, bad  atomic.Int64
}

func (b *countBroker) Publish(_ context.Context, _ string, m udpgw.Message) error {
	if !bytes.Equal(m.Payload, b.payload) {
		b.bad.Add(1)
	}
	b.n.Add(1)
	return nil
}

// BenchmarkHandlePublishAllocs measures one uplink PUBLISH from its datagram
// to the Broker's Publish, as the UDP reader hands it over (reader.datagram:
// decode, dispatch, the worker's queue, the worker), one at a time: each
// datagram's publish is done before the next is read, as with a sensor. QoS
// 0 comes from a connected client on a registered topic id, QoS -1 from an
// address with no connection on a predefined one. The allocations it reports
// are the engine's: the broker keeps nothing.
func BenchmarkHandlePublishAllocs(b *testing.B) {
	payload := []byte(`{"t":21.5,"h":40.2,"bat":3.71}xx`)
	for _, bc := range []struct {
		name      string
		connected bool
		qos       mqttsn.QoS
	}{
		{"qos0", true, mqttsn.QoS0},
		{"qosm1", false, mqttsn.QoSMinusOne},
		{"qosm1_connected", true, mqttsn.QoSMinusOne},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cb := &countBroker{fakeBroker: newFakeBroker(), payload: payload}
			sessions := session.New(session.Options{})
			e, err := New(udpgw.Env{Name: "sn", Broker: cb, Sessions: sessions}, Options{Bind: "127.0.0.1:0",
				UnprovenRate: 1e12, // the unconnected QoS -1 sender is never proven: do not limit it
				Predefined:   []Predefined{{ID: 7, Topic: "bench/predefined"}}})
			if err != nil {
				b.Fatal(err)
			}
			sessions.AddListener("sn", session.Listener{Protocol: "mqttsn", Owner: e})
			done := make(chan error, 1)
			go func() { done <- e.Serve(context.Background()) }()
			b.Cleanup(func() {
				e.Close()
				if err := <-done; err != nil {
					b.Errorf("Serve: %v", err)
				}
			})

			pub := &mqttsn.Publish{Flags: mqttsn.Flags{QoS: bc.qos, TopicIDType: mqttsn.TopicPredefined}, TopicID: 7, Data: payload}
			from := netip.MustParseAddrPort("127.0.0.1:9") // discard: answers go nowhere
			if bc.connected {
				// A real device, so that it proves its address: its
				// first PUBLISH on the topic id its REGISTER got does.
				c, err := net.DialUDP("udp", nil, e.Addr().(*net.UDPAddr))
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { c.Close() })
				d := &device{b, c}
				d.connect("bench", 600, true)
				if bc.qos == mqttsn.QoS0 {
					pub.Flags.TopicIDType, pub.TopicID = mqttsn.TopicNormal, d.register("bench/qos0")
				}
				d.send(pub)
				for cb.n.Load() < 1 {
					runtime.Gosched()
				}
				from = c.LocalAddr().(*net.UDPAddr).AddrPort()
			}
			raw, err := mqttsn.Append(nil, pub)
			if err != nil {
				b.Fatal(err)
			}
			rd := new(reader)
			want := cb.n.Load()
			b.ReportAllocs()
			for b.Loop() {
				rd.datagram(e, from, raw)
				want++
				for cb.n.Load() < want {
					runtime.Gosched()
				}
			}
			if n := cb.bad.Load(); n > 0 {
				b.Fatalf("%d publishes with another payload", n)
			}
		})
	}
}

// windowBroker is a Broker whose Publish only counts, per device, and frees
// one place in that device's window (BenchmarkPublishQoS0).
type windowBroker struct {
	*fakeBroker
	n   atomic.Int64
	win map[string]chan struct{} // client id → its datagrams in flight; read-only once built
}

func (b *windowBroker) Publish(_ context.Context, device string, _ udpgw.Message) error {
	b.n.Add(1)
	if w := b.win[device]; w != nil {
		select {
		case <-w:
		default:
		}
	}
	return nil
}

// BenchmarkPublishQoS0 measures the engine's throughput of QoS 0 PUBLISHes
// over loopback UDP, from the socket to the Broker's Publish: 50 clients,
// each with at most 4 datagrams in flight (sent, not yet published), so
// that the socket's receive buffer never overflows. A datagram lost all the
// same frees its place after a second (counted as lost).
func BenchmarkPublishQoS0(b *testing.B) {
	const clients, window = 50, 4
	wb := &windowBroker{fakeBroker: newFakeBroker(), win: map[string]chan struct{}{}}
	for i := range clients {
		wb.win[fmt.Sprintf("b%d", i)] = make(chan struct{}, window)
	}
	e, err := New(udpgw.Env{Name: "sn", Broker: wb, Sessions: session.New(session.Options{})}, Options{Bind: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Serve(context.Background()) }()
	b.Cleanup(func() {
		e.Close()
		if err := <-done; err != nil {
			b.Errorf("Serve: %v", err)
		}
	})
	te := &testEngine{Engine: e, addr: e.Addr().String()}
	devs, ids := benchClients(b, te, true)
	var wg sync.WaitGroup
	var lost atomic.Int64
	per := b.N/len(devs) + 1
	start := wb.n.Load()
	cpu := processCPU()
	b.ResetTimer()
	for i, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			win := wb.win[fmt.Sprintf("b%d", i)]
			msg, _ := mqttsn.Append(nil, &mqttsn.Publish{TopicID: ids[i], Data: []byte("0123456789abcdef0123456789abcdef")})
			t := time.NewTimer(time.Second)
			for range per {
				select {
				case win <- struct{}{}:
				default:
					t.Reset(time.Second)
					select {
					case win <- struct{}{}:
					case <-t.C:
						lost.Add(1) // its place is taken over
					}
				}
				if _, err := d.c.Write(msg); err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	for want := start + int64(per*len(devs)) - lost.Load(); wb.n.Load() < want; {
		runtime.Gosched()
	}
	b.StopTimer()
	b.ReportMetric(float64(per*len(devs))/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(lost.Load()), "lost")
	b.ReportMetric(float64(processCPU()-cpu)/float64(per*len(devs)), "cpu-ns/msg")
}

// processCPU is the CPU time (user and system) the test process has used,
// in nanoseconds, from /proc/self/stat (in clock ticks, 10 ms; 0 where there
// is no /proc): the clients' as well as the engine's. Per message it tells
// the cost of the same work apart on a machine shared with others, where
// msgs/s depends on what else runs.
func processCPU() int64 {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	// After the command's closing parenthesis: state is field 3, utime and
	// stime fields 14 and 15 (proc(5)).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return (u + st) * int64(10*time.Millisecond) // USER_HZ is 100
}

// BenchmarkPingreq measures a request the reader answers itself, a
// connected client's PINGREQ and its PINGRESP, over loopback UDP: 50
// clients, each with one PINGREQ in flight.
func BenchmarkPingreq(b *testing.B) {
	te := startEngine(b, nil)
	devs, ids := benchClients(b, te, true)
	for i, d := range devs {
		// A PUBLISH on the topic id its REGACK carried proves the client's
		// address: its PINGREQs are not limited as an unproven source's.
		d.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: ids[i], MsgID: 1, Data: []byte("x")})
		recv[*mqttsn.Puback](d)
	}
	ping, _ := mqttsn.Append(nil, &mqttsn.Pingreq{})
	closedLoop(b, devs, func(int, int) []byte { return ping })
}
