package nginxtest

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"
)

// echo is a UDP server on 127.0.0.1 that answers every datagram with its
// name and the datagram; stop closes its socket.
func echo(t *testing.T, name string) (addr string, stop func()) {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(append([]byte(name+" "), buf[:n]...), from)
		}
	}()
	stop = func() { c.Close(); <-done }
	t.Cleanup(stop)
	return c.LocalAddr().String(), stop
}

// ask sends msg from a socket bound to src through n and returns the answer.
func ask(t *testing.T, n *Nginx, src, msg string) string {
	t.Helper()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, net.UDPAddrFromAddrPort(mustAddrPort(t, n.Addr)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1500)
	for range 20 { // UDP: ask again until answered (nginx may still be marking a failure)
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if k, err := c.Read(buf); err == nil && k > 0 {
			return string(buf[:k])
		}
	}
	t.Fatalf("no answer to %q from %s through nginx\n%s", msg, src, n.Log())
	return ""
}

// TestBalancesBySourceAddress: datagrams from one source address always
// reach the same upstream (hash $remote_addr consistent), sources spread
// over both, and when an upstream's port is closed its sources move to the
// other one.
func TestBalancesBySourceAddress(t *testing.T) {
	a, stopA := echo(t, "a")
	b, _ := echo(t, "b")
	n := Start(t, Options{Upstreams: []string{a, b}})
	seen := map[string]string{}
	count := map[string]int{}
	for i := range 40 {
		src := fmt.Sprintf("127.0.2.%d", i+1)
		got := ask(t, n, src, "ping")
		seen[src] = got[:1]
		count[got[:1]]++
		if again := ask(t, n, src, "ping"); again[:1] != got[:1] {
			t.Fatalf("%s: first answered by %s, then by %s", src, got[:1], again[:1])
		}
	}
	if count["a"] == 0 || count["b"] == 0 {
		t.Fatalf("40 sources all went to one upstream: %v", count)
	}

	stopA() // its port now answers ICMP port unreachable
	for src, up := range seen {
		if got := ask(t, n, src, "again"); got != "b again" {
			t.Fatalf("%s (was on %s) after a stopped: answer %q, want \"b again\"", src, up, got)
		}
	}
}

func mustAddrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}
