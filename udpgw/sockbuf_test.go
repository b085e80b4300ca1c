package udpgw

import (
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/metrics"
)

// TestSetReadBuffer: the size asked for is applied, and what the kernel
// granted is what getsockopt(SO_RCVBUF) reports; Linux doubles it.
func TestSetReadBuffer(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("SO_RCVBUF is read back on Linux only")
	}
	c, err := ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 96 << 10 // below any rmem_max a Linux system ships with
	got, err := SetReadBuffer(c, n)
	if err != nil {
		t.Fatal(err)
	}
	if got != 2*n {
		t.Errorf("granted %d, want %d (Linux doubles SO_RCVBUF)", got, 2*n)
	}
	if rb, err := ReadBuffer(c); err != nil || rb != got {
		t.Errorf("ReadBuffer = %d, %v; want %d", rb, err, got)
	}
	// 0 keeps the size.
	if again, err := SetReadBuffer(c, 0); err != nil || again != got {
		t.Errorf("SetReadBuffer(0) = %d, %v; want %d unchanged", again, err, got)
	}
}

// TestKernelDrops: a burst larger than a tiny receive buffer into a socket
// nobody reads is dropped by the kernel, and the exported metric shows it.
func TestKernelDrops(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("kernel drops are read from /proc/net/udp on Linux only")
	}
	c, err := ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := SetReadBuffer(c, 1); err != nil { // the kernel's minimum: a few KiB
		t.Fatal(err)
	}
	m := metrics.New()
	ExportKernelDrops(m, "t", c)
	if v, ok := KernelDrops(c); !ok || v != 0 {
		t.Fatalf("KernelDrops before the burst = %d, %v; want 0, true", v, ok)
	}
	s, err := net.DialUDP("udp", nil, c.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	payload := make([]byte, 1000)
	deadline := time.Now().Add(10 * time.Second)
	for m.Get("mqttgw_udp_kernel_drops_total", "listener", "t") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no kernel drops counted after bursts into a full buffer")
		}
		for range 100 {
			_, _ = s.Write(payload)
		}
		time.Sleep(time.Millisecond) // let the loopback deliver; the loop polls with a deadline
	}
	v, ok := KernelDrops(c)
	if !ok || v == 0 {
		t.Errorf("KernelDrops = %d, %v after the burst", v, ok)
	}
	c.Close()
	// A closed socket keeps its last value in the metric.
	if got := m.Get("mqttgw_udp_kernel_drops_total", "listener", "t"); got == 0 {
		t.Errorf("metric reset to 0 after close")
	}
}
