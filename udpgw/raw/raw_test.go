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
