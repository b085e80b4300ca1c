package raw

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/metrics"
	"github.com/mqttgw/mqttgw/udpgw"
)

// TestOversizeDroppedAndAnswer: a datagram over max_packet is dropped and counted,
// the listener goes on reading, and Send answers a device from the listener's port.
func TestOversizeDroppedAndAnswer(t *testing.T) {
	m := metrics.New()
	got := make(chan udpgw.Uplink, 4)
	l, err := New(udpgw.Env{Name: "t", Metrics: m}, Options{Bind: "127.0.0.1:0", MaxPacket: 8, Handle: func(u udpgw.Uplink) {
		u.Payload = append([]byte(nil), u.Payload...)
		got <- u
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Serve(ctx) }()

	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	to := l.Addr().(*net.UDPAddr)
	c.WriteToUDP([]byte("123456789"), to) // 9 bytes: one too many
	c.WriteToUDP([]byte("12345678"), to)
	var u udpgw.Uplink
	select {
	case u = <-got:
		if string(u.Payload) != "12345678" {
			t.Errorf("handled %q", u.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("datagram after the oversize one not handled")
	}
	if v := m.Get("mqttgw_datagrams_dropped_total", "listener", "t", "reason", "too_large"); v != 1 {
		t.Errorf("too_large counted %v, want 1", v)
	}
	if u.From != c.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Errorf("From = %v, want %v", u.From, c.LocalAddr())
	}
	if err := l.Send(u.From, []byte("ack")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "ack" || from.Port() != netip.MustParseAddrPort(l.Addr().String()).Port() {
		t.Fatalf("answer %q from %v: %v", buf[:n], from, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve after cancel = %v, want nil", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

// TestSendBudget: no plain-datagram source is ever proven, so what Send writes
// to an address is paid for by what it sent: at most 3× its bytes, the rest
// held (not sent) and counted.
func TestSendBudget(t *testing.T) {
	m := metrics.New()
	got := make(chan udpgw.Uplink, 4)
	l, err := New(udpgw.Env{Name: "t", Metrics: m}, Options{Bind: "127.0.0.1:0", MaxPacket: 64, Handle: func(u udpgw.Uplink) { got <- u }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go l.Serve(ctx)

	stranger := netip.MustParseAddrPort("127.0.0.1:9")
	if err := l.Send(stranger, []byte("x")); !errors.Is(err, udpgw.ErrHeld) {
		t.Fatalf("Send to an address never heard from = %v, want ErrHeld", err)
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.WriteToUDP([]byte("0123456789"), l.Addr().(*net.UDPAddr)) // 10 bytes: 30 may come back
	var u udpgw.Uplink
	select {
	case u = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("datagram not handled")
	}
	if err := l.Send(u.From, make([]byte, 31)); !errors.Is(err, udpgw.ErrHeld) {
		t.Fatalf("31 bytes for 10 received: %v, want ErrHeld", err)
	}
	if err := l.Send(u.From, make([]byte, 20)); err != nil {
		t.Fatal(err)
	}
	if err := l.Send(u.From, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	if err := l.Send(u.From, []byte("y")); !errors.Is(err, udpgw.ErrHeld) {
		t.Fatalf("a 31st byte: %v, want ErrHeld", err)
	}
	if v := m.Get("mqttgw_amplification_held_bytes_total", "listener", "t"); v != 1+31+1 {
		t.Errorf("held bytes = %v, want 33", v)
	}
	// What was sent arrived; what was held did not.
	buf := make([]byte, 64)
	var sizes []int
	for {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			break
		}
		sizes = append(sizes, n)
	}
	if len(sizes) != 2 || sizes[0] != 20 || sizes[1] != 10 {
		t.Errorf("received datagrams of %v bytes, want [20 10]", sizes)
	}
}

// TestReadBufferAndKernelDrops: read_buffer is applied to the socket, and a
// burst larger than a tiny buffer, sent before Serve reads anything, shows in
// mqttgw_udp_kernel_drops_total.
func TestReadBufferAndKernelDrops(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("SO_RCVBUF and /proc/net/udp are read on Linux only")
	}
	m := metrics.New()
	big, err := New(udpgw.Env{Name: "big", Metrics: m}, Options{Bind: "127.0.0.1:0", MaxPacket: 64, Handle: func(udpgw.Uplink) {}, ReadBuffer: 200 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	if n, err := udpgw.ReadBuffer(big.conn); err != nil || n != 400<<10 {
		t.Errorf("SO_RCVBUF = %d, %v; want %d (Linux doubles 200 KiB)", n, err, 400<<10)
	}

	l, err := New(udpgw.Env{Name: "t", Metrics: m}, Options{Bind: "127.0.0.1:0", MaxPacket: 2048, Handle: func(udpgw.Uplink) {}, ReadBuffer: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.DialUDP("udp", nil, l.Addr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 1000)
	deadline := time.Now().Add(10 * time.Second)
	for m.Get("mqttgw_udp_kernel_drops_total", "listener", "t") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no kernel drops counted for a burst into an unread socket")
		}
		for range 100 {
			_, _ = c.Write(payload)
		}
		time.Sleep(time.Millisecond) // polling: let loopback deliver
	}
}

// TestBurstInOrder: a burst waiting before Serve reads (so that one read
// takes many) is handled datagram by datagram, in order, each with its own
// payload and its sender's address, IPv4 unmapped on a dual-stack socket;
// the oversize ones among them are dropped and counted.
func TestBurstInOrder(t *testing.T) {
	m := metrics.New()
	type got struct {
		from    netip.AddrPort
		payload string
	}
	var seen []got
	done := make(chan struct{})
	const each = 40 // per peer, every fifth too long
	l, err := New(udpgw.Env{Name: "t", Metrics: m}, Options{Bind: ":0", MaxPacket: 8, Handle: func(u udpgw.Uplink) {
		seen = append(seen, got{u.From, string(u.Payload)})
		if len(seen) == 2*(each-each/5) {
			close(done)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.UDPAddr).Port
	var peers []*net.UDPConn
	for range 2 {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		peers = append(peers, c)
	}
	for i := range each {
		for k, c := range peers {
			b := []byte{byte('a' + k), byte('0' + i/10), byte('0' + i%10)}
			if i%5 == 4 {
				b = append(b, "-too-long"...)
			}
			if _, err := c.WriteToUDP(b, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error)
	go func() { served <- l.Serve(ctx) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("handled %d datagrams, want %d", len(seen), 2*(each-each/5))
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	next := [2]int{}
	for _, g := range seen {
		k := int(g.payload[0] - 'a')
		if k < 0 || k > 1 || g.from != peers[k].LocalAddr().(*net.UDPAddr).AddrPort() {
			t.Fatalf("%q from %s: not from its peer %v (unmapped)", g.payload, g.from, peers[min(max(k, 0), 1)].LocalAddr())
		}
		if next[k]%5 == 4 {
			next[k]++ // the oversize one
		}
		if want := string([]byte{byte('a' + k), byte('0' + next[k]/10), byte('0' + next[k]%10)}); g.payload != want {
			t.Errorf("peer %d: %q, want %q", k, g.payload, want)
		}
		next[k]++
	}
	if v := m.Get("mqttgw_datagrams_dropped_total", "listener", "t", "reason", "too_large"); v != 2*each/5 {
		t.Errorf("too_large counted %v, want %d", v, 2*each/5)
	}
}

// BenchmarkServe measures the listener's reading, from the socket to a
// handler that only counts: 4 senders, each with at most 16 datagrams in
// flight.
func BenchmarkServe(b *testing.B) {
	const senders, window = 4, 16
	wins := make([]chan struct{}, senders)
	for i := range wins {
		wins[i] = make(chan struct{}, window)
	}
	l, err := New(udpgw.Env{Name: "t", Metrics: metrics.New()}, Options{Bind: "127.0.0.1:0", MaxPacket: 1024, Handle: func(u udpgw.Uplink) {
		select {
		case <-wins[u.Payload[0]]:
		default:
		}
	}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error)
	go func() { served <- l.Serve(ctx) }()
	defer func() {
		cancel()
		<-served
	}()
	per := b.N/senders + 1
	b.ReportAllocs()
	b.ResetTimer()
	done := make(chan struct{})
	for k := range senders {
		go func() {
			defer func() { done <- struct{}{} }()
			c, err := net.DialUDP("udp", nil, l.Addr().(*net.UDPAddr))
			if err != nil {
				b.Error(err)
				return
			}
			defer c.Close()
			msg := make([]byte, 40)
			msg[0] = byte(k)
			t := time.NewTimer(time.Second)
			for range per {
				select {
				case wins[k] <- struct{}{}:
				default:
					t.Reset(time.Second)
					select {
					case wins[k] <- struct{}{}:
					case <-t.C: // lost: its place is taken over
					}
				}
				c.Write(msg)
			}
		}()
	}
	for range senders {
		<-done
	}
	b.StopTimer()
	b.ReportMetric(float64(per*senders)/b.Elapsed().Seconds(), "datagrams/s")
}
