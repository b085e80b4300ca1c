package udpgw

import (
	"runtime"
	"sync/atomic"
	"syscall"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/metrics"
)

// TuneSocket applies a listener's read_buffer (bytes; 0 keeps the size the
// socket has) to its socket c, logs what the kernel granted when it is short
// of what was asked (raise net.core.rmem_max), and exports the kernel's drop
// count for c (ExportKernelDrops). Every engine that owns a plain UDP socket
// calls it once after binding, with its Env; one whose socket another library
// binds (pion's DTLS listener) uses ListenControl instead.
func TuneSocket(env Env, c syscall.Conn, readBuffer int) {
	env = env.WithDefaults()
	granted, err := SetReadBuffer(c, readBuffer)
	switch {
	case err != nil:
		env.Logger.Warn("read_buffer not applied", zap.Int("asked", readBuffer), zap.Error(err))
	case readBuffer > 0 && runtime.GOOS == "linux" && granted < 2*readBuffer:
		// Linux reports twice the usable size (socket(7)).
		env.Logger.Warn("read_buffer capped by the kernel: raise net.core.rmem_max (sysctl) to get it",
			zap.Int("asked", readBuffer), zap.Int("granted", granted/2))
	case readBuffer > 0:
		env.Logger.Debug("read_buffer applied", zap.Int("asked", readBuffer), zap.Int("granted", granted))
	}
	ExportKernelDrops(env.Metrics, env.Name, c)
}

// ListenControl returns a net.ListenConfig Control function that applies
// TuneSocket to the socket being bound, for a socket a library binds itself
// (pion/dtls: dtls.WithListenConfig).
func ListenControl(env Env, readBuffer int) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		TuneSocket(env, rawConn{c}, readBuffer)
		return nil
	}
}

type rawConn struct{ rc syscall.RawConn }

func (r rawConn) SyscallConn() (syscall.RawConn, error) { return r.rc, nil }

// SetReadBuffer asks the kernel for a receive buffer (SO_RCVBUF) of n bytes on
// c (a *net.UDPConn), so that a burst waits in the kernel while the reader is
// busy instead of being dropped there, and returns what the kernel granted
// (getsockopt SO_RCVBUF). n == 0 changes nothing and returns the current size.
//
// Linux doubles the value asked for (half of it is bookkeeping overhead, see
// socket(7)) and caps the request at net.core.rmem_max, so the granted size is
// 2 × min(n, rmem_max); a process with CAP_NET_ADMIN may go beyond rmem_max,
// which SetReadBuffer then tries with SO_RCVBUFFORCE. The caller compares the
// result with 2 × n (TuneSocket logs it). Elsewhere the size is asked for and,
// where the system cannot report it, granted is n.
func SetReadBuffer(c syscall.Conn, n int) (granted int, err error) {
	return setReadBuffer(c, n)
}

// ReadBuffer returns the receive buffer size the kernel reports for c
// (getsockopt SO_RCVBUF: on Linux, twice the usable size), or 0 and an error
// where the system cannot tell.
func ReadBuffer(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	return readBuffer(rc)
}

// KernelDrops reads how many datagrams the kernel dropped for c because its
// receive buffer was full (or for bad checksums): the drops column of
// /proc/net/udp or /proc/net/udp6 for c's socket. ok is false where the system
// does not tell (not Linux, no /proc) or once c is closed.
func KernelDrops(c syscall.Conn) (drops uint64, ok bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	d, err := newDropCounter(rc)
	if err != nil {
		return 0, false
	}
	return d.read()
}

// ExportKernelDrops registers mqttgw_udp_kernel_drops_total{listener}, the
// kernel's count of datagrams it dropped for c (KernelDrops), read at each
// scrape. It registers nothing where the system does not tell (see
// KernelDrops). The value only rises while c is open and keeps its last value
// once c is closed; the metrics registry has no counter function, so it is
// exported as a gauge function.
func ExportKernelDrops(m *metrics.Registry, listener string, c syscall.Conn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	d, err := newDropCounter(rc)
	if err != nil {
		return
	}
	var last atomic.Uint64
	m.GaugeFunc("mqttgw_udp_kernel_drops_total", "Datagrams the kernel dropped for the listener's socket (receive buffer full): the drops column of /proc/net/udp.",
		func() float64 {
			if v, ok := d.read(); ok {
				last.Store(v)
			}
			return float64(last.Load())
		}, "listener", listener)
}
