package raw

import (
	"context"
	"net"
	"net/netip"
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
