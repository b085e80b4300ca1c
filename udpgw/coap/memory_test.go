package coap

import (
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

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
