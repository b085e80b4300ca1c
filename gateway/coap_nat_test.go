package gateway

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"
)

// coapRelay stands between one CoAP client and the gateway like a NAT: the
// gateway sees the relay's upstream socket, and rebind replaces that socket
// with one on a new port, as when a NAT mapping expires and is made anew.
type coapRelay struct {
	t      *testing.T
	down   *net.UDPConn // the client sends here
	target *net.UDPAddr
	wg     sync.WaitGroup

	mu      sync.Mutex
	client  *net.UDPAddr
	up      *net.UDPConn
	swallow [][]byte // tokens whose responses the client must not see
}

func newCoAPRelay(t *testing.T, target string) *coapRelay {
	t.Helper()
	ta, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	down, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &coapRelay{t: t, down: down, target: ta}
	r.rebind()
	r.wg.Add(1)
	go r.fromClient()
	t.Cleanup(func() {
		down.Close()
		r.mu.Lock()
		r.up.Close()
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *coapRelay) addr() string { return r.down.LocalAddr().String() }

// upstreamAddr is the address the gateway sees.
func (r *coapRelay) upstreamAddr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.up.LocalAddr().String()
}

// rebind moves the relay to a new upstream port; the old one is closed, so
// anything the gateway still sends there is lost.
func (r *coapRelay) rebind() {
	up, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	old := r.up
	r.up = up
	r.mu.Unlock()
	if old != nil {
		old.Close()
	}
	r.wg.Add(1)
	go r.fromGateway(up)
}

func (r *coapRelay) fromClient() {
	defer r.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := r.down.ReadFromUDP(buf)
		if err != nil {
			return
		}
		r.mu.Lock()
		r.client = from
		up := r.up
		r.mu.Unlock()
		_, _ = up.WriteToUDP(buf[:n], r.target)
	}
}

func (r *coapRelay) fromGateway(up *net.UDPConn) {
	defer r.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, _, err := up.ReadFromUDP(buf)
		if err != nil {
			return
		}
		r.mu.Lock()
		client := r.client
		drop := false
		if m, err := decodeCoAP(buf[:n]); err == nil {
			for _, tok := range r.swallow {
				drop = drop || bytes.Equal(m.token, tok)
			}
		}
		r.mu.Unlock()
		if client != nil && !drop {
			_, _ = r.down.WriteToUDP(buf[:n], client)
		}
	}
}

// inject sends m to the gateway as if the client had sent it, from the current
// upstream port; the response is not passed on.
func (r *coapRelay) inject(m coapMsg) {
	r.mu.Lock()
	r.swallow = append(r.swallow, m.token)
	up := r.up
	r.mu.Unlock()
	if _, err := up.WriteToUDP(m.encode(), r.target); err != nil {
		r.t.Fatal(err)
	}
}

// TestCoAPNATRebinding: a device known by its client id keeps its observation
// when its address changes. libcoap observes through a relay that then moves to
// a new port; the device's next request (a publish with the same client id)
// comes from the new port, and the next notification follows it there.
func TestCoAPNATRebinding(t *testing.T) {
	env := startCoAP(t, coapOpts{})
	sub := env.reader(t, "nat/hello")
	relay := newCoAPRelay(t, env.addr)
	obs := observe(t, 60, "coap://"+relay.addr()+"/ps/nat/cmd?c=roamer")
	env.waitObservations(t, "coap", 1)
	env.mqttPub(t, "nat/cmd", "one;", false)
	obs.waitOutput(t, 10*time.Second, "one;")
	oldAddr := relay.upstreamAddr()

	relay.rebind()
	if relay.upstreamAddr() == oldAddr {
		t.Fatal("rebind kept the port")
	}
	// The device's next request, from its new address and port.
	relay.inject(coapRequest(coapNON, codePOST, 0x7001, "nat1", "/ps/nat/hello?c=roamer", []byte("moved")))
	sub.Expect(t, 5*time.Second, "nat/hello", "moved")

	env.mqttPub(t, "nat/cmd", "two;", false)
	obs.waitOutput(t, 10*time.Second, "one;two;")
	if got := env.observations("coap"); got != 1 {
		t.Errorf("observations = %v after rebinding, want 1", got)
	}
	if s := env.g.sessions.Len(); s != 1 {
		t.Errorf("sessions = %d, want 1 (one device, two addresses)", s)
	}
}
