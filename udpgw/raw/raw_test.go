package raw

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/udpgw"
)

// TestOversizeDropped: a datagram over max_packet is dropped and reported, and the
// listener goes on reading.
func TestOversizeDropped(t *testing.T) {
	conn, err := udpgw.ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 4)
	tooLarge := make(chan int, 4)
	l := New("t", conn, 8, func(u udpgw.Uplink) { got <- string(u.Payload) }, func(n int) { tooLarge <- n })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Serve(ctx) }()

	c, err := net.Dial("udp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("123456789")) // 9 bytes: one too many
	c.Write([]byte("12345678"))
	select {
	case n := <-tooLarge:
		if n != 9 {
			t.Errorf("tooLarge(%d), want 9 (one past the limit)", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("oversize datagram not reported")
	}
	select {
	case p := <-got:
		if p != "12345678" {
			t.Errorf("handled %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("datagram after the oversize one not handled")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve after cancel = %v, want nil", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}
