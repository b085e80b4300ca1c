package coap

import (
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/mqttgw/mqttgw/internal/wait"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// TestSpoofedSourceMemory measures what a spoofed source costs the listener:
// n sources, each a socket on its own loopback address (127.0.0.0/8), send
// one request each and never answer anything else, as a spoofed address
// would not. It reports heap and goroutine stacks per source for a read
// (GET), a publish (PUT) and an Observe registration, and bounds them.
func TestSpoofedSourceMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("sends from thousands of loopback addresses")
	}
	const n = 2000
	kinds := []struct {
		name  string
		req   func(i int) req
		bound float64 // bytes per source
	}{
		{"GET", func(i int) req {
			return req{typ: message.Confirmable, code: codes.GET, path: "/ps/spoof/t", token: "g", observe: -1}
		}, 600},
		{"PUT", func(i int) req {
			return req{typ: message.Confirmable, code: codes.PUT, path: "/ps/spoof/t", token: "p", observe: -1, payload: "21.5"}
		}, 4096},
		{"observe", func(i int) req {
			return req{typ: message.Confirmable, code: codes.GET, path: fmt.Sprint("/ps/spoof/o", i), token: "o", observe: 0}
		}, 8192},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			sessions := session.New(session.Options{})
			tl := startListener(t, udpgw.Env{Sessions: sessions}, Options{})
			tl.broker.setRetained(udpgw.Message{Topic: "spoof/t", Payload: []byte("20.0")})
			to := tl.Listener.Addr().(*net.UDPAddr)
			before := heapAndStacks()
			for i := range n {
				src := &net.UDPAddr{IP: net.IPv4(127, 1, byte(i>>8), byte(i)), Port: 0}
				c, err := net.ListenUDP("udp", src)
				if err != nil {
					t.Fatal(err)
				}
				p := &rawPeer{t: t, conn: c, mid: uint16(i)}
				b, _ := p.encode(k.req(i))
				if _, err := c.WriteToUDP(b, to); err != nil {
					t.Fatal(err)
				}
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 2048)
				if _, _, err := c.ReadFromUDP(buf); err != nil {
					t.Fatalf("source %d: no answer: %v", i, err)
				}
				c.Close()
			}
			after := heapAndStacks()
			per := float64(int64(after)-int64(before)) / n
			t.Logf("%s: %.0f bytes per spoofed source (heap + stacks), %d sessions, %d goroutines",
				k.name, per, sessions.Len(), runtime.NumGoroutine())
			if per > k.bound {
				t.Errorf("%s: %.0f bytes per spoofed source, want at most %.0f", k.name, per, k.bound)
			}
		})
	}
}

// heapAndStacks is the live heap and goroutine stack memory after a GC.
func heapAndStacks() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc + m.StackInuse
}

// TestProvenDeviceMemory measures what a device that proved its address
// costs the listener (heap and goroutine stacks, the registry's session
// included, the broker's side not: it keeps nothing) and its goroutines: n
// devices each publish once, answer the gateway's ping (which proves their
// address) and publish again; or register an observation, answer the ping
// and publish. It measures once they are answered, and once they are idle:
// EXCHANGE_LIFETIME later (RFC 7252 §4.8.2), when no copy of their requests
// can come any more, and bounds the idle cost (issue 11: at most 1 KiB per
// idle device and per observation, and no goroutine for either).
func TestProvenDeviceMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("a thousand devices")
	}
	const n = 1000
	kinds := []struct {
		name  string
		first func(i int) req
	}{
		{"publish", func(i int) req {
			return req{typ: message.Confirmable, code: codes.PUT, path: fmt.Sprintf("/ps/mem/t?c=pub%d", i), token: "p", observe: -1, payload: "21.5"}
		}},
		{"observe", func(i int) req {
			return observeReq(fmt.Sprintf("/ps/mem/o%d?c=obs%d", i, i), "o")
		}},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			tl := startListener(t, udpgw.Env{Broker: nopBroker{}}, Options{})
			// n sources read once and are forgotten first: the tables a burst
			// of n unproven sources grows (udpgw.Sources keeps its map's size)
			// are the listener's, not the devices'.
			for i := range n {
				w := newRawPeer(t, tl.addr)
				w.quiet = true
				if r := w.do(req{typ: message.Confirmable, code: codes.GET, path: "/ps/mem/w", token: fmt.Sprint(i), observe: -1}); r.Code() != codes.NotFound {
					t.Fatalf("read %d: %v", i, r.Code())
				}
			}
			tl.expireIdle(time.Now().Add(exchangeLifetime))
			peers := make([]*rawPeer, n)
			for i := range peers {
				peers[i] = newRawPeer(t, tl.addr)
			}
			g0, before := runtime.NumGoroutine(), heapAndStacks()
			for i, p := range peers {
				if r := p.do(k.first(i)); r.Code() != codes.Changed && r.Code() != codes.Content {
					t.Fatalf("device %d: %v", i, r.Code())
				}
				proveByPing(t, p)
				// A request once proven: served as every later one will be.
				if r := p.do(req{typ: message.NonConfirmable, code: codes.PUT, path: fmt.Sprintf("/ps/mem/p?c=%s%d", k.name[:3], i), token: "q", observe: -1, payload: "1"}); r.Code() != codes.Changed {
					t.Fatalf("device %d, proven: %v", i, r.Code())
				}
			}
			waitFor(t, 5*time.Second, "proofs", func() bool { return tl.counter("mqttgw_sources_proven_total") == n })
			// Requests still being answered leave.
			wait.Until(2*time.Second, func() bool { return runtime.NumGoroutine()-g0 < n/10 })
			answered, g1 := heapAndStacks(), runtime.NumGoroutine()
			tl.expireIdle(time.Now().Add(exchangeLifetime + time.Minute))
			wait.Until(2*time.Second, func() bool { return runtime.NumGoroutine()-g0 < n/10 })
			idle, g2 := heapAndStacks(), runtime.NumGoroutine()
			per := func(after uint64) float64 { return float64(int64(after)-int64(before)) / n }
			t.Logf("%s: answered %.0f bytes and %.2f goroutines per device; idle %.0f bytes and %.2f goroutines per device (heap + stacks, session included)",
				k.name, per(answered), float64(g1-g0)/n, per(idle), float64(g2-g0)/n)
			// An observing device is a device and an observation: 1 KiB each.
			if bound := map[string]float64{"publish": 1024, "observe": 2048}[k.name]; per(idle) > bound && !raceEnabled {
				t.Errorf("%s: %.0f bytes per idle device, want at most %.0f", k.name, per(idle), bound)
			}
			if g := float64(g1-g0) / n; g >= 0.01 {
				t.Errorf("%s: %.2f goroutines per device, want none", k.name, g)
			}
		})
	}
}

// expireIdle runs the listener's expiry at now, past the life of the state a
// source's exchanges leave: go-coap's connections (ConnIdle), unproven
// entries (UnprovenTTL) and the proven path's peers (EXCHANGE_LIFETIME).
func (tl *testListener) expireIdle(now time.Time) {
	tl.peersMu.Lock()
	for _, p := range tl.peers {
		p.cc.CheckExpirations(now)
	}
	tl.peersMu.Unlock()
	tl.sources.Expire(now)
	tl.expireFast(now)
	tl.sweepObservers(now)
}

// proveByPing waits for the ping the gateway sends a source it served before
// the source proved its address, and answers it: the Reset proves the address.
func proveByPing(t *testing.T, p *rawPeer) {
	t.Helper()
	p.quiet = true
	defer func() { p.quiet = false }()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		m := p.recv(time.Until(deadline))
		if m == nil {
			break
		}
		if m.Type() == message.Confirmable && m.Code() == codes.Empty {
			p.send([]byte{0x70, 0x00, byte(m.MessageID() >> 8), byte(m.MessageID())})
			return
		}
	}
	t.Fatal("no ping to answer")
}
