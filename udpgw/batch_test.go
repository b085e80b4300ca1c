package udpgw

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"
)

// peer is a device's socket for the batch tests.
func peer(t *testing.T, network, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Skipf("%s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readAll reads with r until want datagrams came, copying them.
func readAll(t *testing.T, r *BatchReader, c *net.UDPConn, want int) []Datagram {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []Datagram
	for len(got) < want {
		ds, err := r.Read()
		if err != nil {
			t.Fatalf("Read after %d of %d: %v", len(got), want, err)
		}
		for _, d := range ds {
			got = append(got, Datagram{B: bytes.Clone(d.B), Addr: d.Addr})
		}
	}
	return got
}

// TestBatchReadWrite: datagrams from several peers are read, in order and
// from the right addresses, IPv4 peers unmapped on a dual-stack socket; the
// answers written in one batch reach each peer in order.
func TestBatchReadWrite(t *testing.T) {
	for _, tc := range []struct {
		name, bind string
		peers      []string // network and address of each peer
	}{
		{"ipv4", "127.0.0.1:0", []string{"udp4 127.0.0.1:0", "udp4 127.0.0.1:0"}},
		{"dualstack", ":0", []string{"udp4 127.0.0.1:0", "udp6 [::1]:0"}},
		{"ipv6", "[::1]:0", []string{"udp6 [::1]:0", "udp6 [::1]:0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ListenUDP(tc.bind)
			if err != nil {
				t.Skipf("bind %s: %v", tc.bind, err)
			}
			defer c.Close()
			port := c.LocalAddr().(*net.UDPAddr).AddrPort().Port()
			var peers []*net.UDPConn
			for _, p := range tc.peers {
				var network, addr string
				fmt.Sscan(p, &network, &addr)
				peers = append(peers, peer(t, network, addr))
			}
			r := NewBatchReader(c, 4, 100)
			const each = 7 // more than a batch: several reads
			for i := range each {
				for k, p := range peers {
					to := netip.AddrPortFrom(p.LocalAddr().(*net.UDPAddr).AddrPort().Addr(), port)
					if _, err := p.WriteToUDPAddrPort(fmt.Appendf(nil, "%d-%d", k, i), to); err != nil {
						t.Fatal(err)
					}
				}
			}
			got := readAll(t, r, c, each*len(peers))
			next := make([]int, len(peers))
			for _, d := range got {
				if d.Addr.Addr().Is4In6() || d.Addr.Addr().Zone() != "" {
					t.Errorf("from %s: want an unmapped address", d.Addr)
				}
				k := -1
				for i, p := range peers {
					if p.LocalAddr().(*net.UDPAddr).AddrPort() == d.Addr {
						k = i
					}
				}
				if k < 0 {
					t.Fatalf("%q from %s: no such peer", d.B, d.Addr)
				}
				if want := fmt.Sprintf("%d-%d", k, next[k]); string(d.B) != want {
					t.Errorf("from peer %d: %q, want %q", k, d.B, want)
				}
				next[k]++
			}

			// The answers: all in one Write, interleaved between the peers.
			w := NewBatchWriter(c)
			var out []Datagram
			for i := range each {
				for k, p := range peers {
					out = append(out, Datagram{B: fmt.Appendf(nil, "ack %d-%d", k, i), Addr: p.LocalAddr().(*net.UDPAddr).AddrPort()})
				}
			}
			if failed, to, err := w.Write(out); failed != 0 {
				t.Fatalf("Write: %d failed, first to %s: %v", failed, to, err)
			}
			buf := make([]byte, 100)
			for k, p := range peers {
				_ = p.SetReadDeadline(time.Now().Add(5 * time.Second))
				for i := range each {
					n, err := p.Read(buf)
					if err != nil {
						t.Fatalf("peer %d: %v", k, err)
					}
					if want := fmt.Sprintf("ack %d-%d", k, i); string(buf[:n]) != want {
						t.Errorf("peer %d got %q, want %q", k, buf[:n], want)
					}
				}
			}
		})
	}
}

// TestBatchWriteSkipsRefused: a datagram the socket cannot send (an IPv6
// peer from an IPv4 socket, no address) is counted and skipped; the others
// go, in order.
func TestBatchWriteSkipsRefused(t *testing.T) {
	c, err := ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := peer(t, "udp4", "127.0.0.1:0")
	to := p.LocalAddr().(*net.UDPAddr).AddrPort()
	v6 := netip.MustParseAddrPort("[2001:db8::1]:5683")
	out := []Datagram{{B: []byte("a"), Addr: to}, {B: []byte("x"), Addr: v6}, {B: []byte("b"), Addr: to}, {B: []byte("y")}, {B: []byte("c"), Addr: to}}
	failed, at, first := NewBatchWriter(c).Write(out)
	if failed != 2 || first == nil || at != v6 {
		t.Errorf("Write = %d, %v, %s; want 2 failed, the first to %s", failed, first, at, v6)
	}
	buf := make([]byte, 10)
	_ = p.SetReadDeadline(time.Now().Add(5 * time.Second))
	for _, want := range []string{"a", "b", "c"} {
		n, err := p.Read(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("got %q, %v; want %q", buf[:n], err, want)
		}
	}
}

// TestBatchReadOversize: a datagram longer than the slot is cut to it, which
// tells the caller it was too long; the next one is whole.
func TestBatchReadOversize(t *testing.T) {
	c, err := ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := peer(t, "udp4", "127.0.0.1:0")
	to := c.LocalAddr().(*net.UDPAddr).AddrPort()
	p.WriteToUDPAddrPort(bytes.Repeat([]byte("z"), 50), to)
	p.WriteToUDPAddrPort([]byte("short"), to)
	got := readAll(t, NewBatchReader(c, 8, 11), c, 2)
	if len(got[0].B) != 11 || string(got[1].B) != "short" {
		t.Errorf("read %q, %q; want 11 bytes of 50, then \"short\"", got[0].B, got[1].B)
	}
}

// TestBatchReadEnds: a read deadline and Close end a Read waiting, with the
// errors ReadFromUDPAddrPort returns.
func TestBatchReadEnds(t *testing.T) {
	c, err := ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := NewBatchReader(c, 4, 64)
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := r.Read(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Read past the deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := r.Read()
		done <- err
	}()
	c.Close() // whether Read is waiting yet or not, it must end
	select {
	case err := <-done:
		if !IsClosed(err) {
			t.Errorf("Read after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read did not return after Close")
	}
	if failed, _, err := NewBatchWriter(c).Write([]Datagram{{B: []byte("a"), Addr: netip.MustParseAddrPort("127.0.0.1:9")}, {B: []byte("b"), Addr: netip.MustParseAddrPort("127.0.0.1:9")}}); failed != 2 || !IsClosed(err) {
		t.Errorf("Write after Close: %d failed, %v; want 2, net.ErrClosed", failed, err)
	}
}

// TestBatchAllocs: reading and writing allocate nothing once running.
func TestBatchAllocs(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("counted on Linux")
	}
	c, err := ListenUDP("[::1]:0")
	if err != nil {
		c, err = ListenUDP("127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	self := c.LocalAddr().(*net.UDPAddr).AddrPort()
	r, w := NewBatchReader(c, 8, 64), NewBatchWriter(c)
	out := make([]Datagram, 8)
	for i := range out {
		out[i] = Datagram{B: []byte("0123456789"), Addr: self}
	}
	allocs := testing.AllocsPerRun(100, func() {
		if failed, _, err := w.Write(out); failed != 0 {
			t.Fatal(err)
		}
		for n := 0; n < len(out); {
			ds, err := r.Read()
			if err != nil {
				t.Fatal(err)
			}
			n += len(ds)
		}
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations a round of 8 datagrams, want 0", allocs)
	}
}

// BenchmarkBatch sends datagrams to its own socket and reads them back, 32
// at a time, with one system call each way (batched) or one a datagram.
func BenchmarkBatch(b *testing.B) {
	c, err := ListenUDP("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	self := c.LocalAddr().(*net.UDPAddr).AddrPort()
	const n = 32
	out := make([]Datagram, n)
	for i := range out {
		out[i] = Datagram{B: make([]byte, 40), Addr: self}
	}
	b.Run("batched", func(b *testing.B) {
		r, w := NewBatchReader(c, n, 1500), NewBatchWriter(c)
		b.ReportAllocs()
		for b.Loop() {
			w.Write(out)
			for got := 0; got < n; {
				ds, err := r.Read()
				if err != nil {
					b.Fatal(err)
				}
				got += len(ds)
			}
		}
		b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "datagrams/s")
	})
	b.Run("single", func(b *testing.B) {
		buf := make([]byte, 1500)
		b.ReportAllocs()
		for b.Loop() {
			for _, d := range out {
				c.WriteToUDPAddrPort(d.B, d.Addr)
			}
			for range n {
				if _, _, err := c.ReadFromUDPAddrPort(buf); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "datagrams/s")
	})
}
