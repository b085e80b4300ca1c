package udpgw

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxReadBatch bounds a BatchReader's batch (the kernel's UIO_MAXIOV).
const maxReadBatch = 1024

// readSys is a BatchReader's recvmmsg(2) state, built once: one header, one
// iovec and one address per slot, each header pointing at its slot's.
type readSys struct {
	rc    syscall.RawConn
	hs    []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for an IPv4 address too
	fn    func(fd uintptr) bool   // recvmmsg, bound once: a closure per Read would allocate
	n     int
	err   error
	// zone remembers the last scope id's interface name (link-local peers).
	zoneID   uint32
	zoneName string
}

func (s *readSys) init(r *BatchReader) {
	s.rc, s.err = r.conn.SyscallConn()
	n := len(r.bufs)
	s.hs = make([]unix.Mmsghdr, n)
	s.iovs = make([]unix.Iovec, n)
	s.names = make([]unix.RawSockaddrInet6, n)
	for i := range s.hs {
		if len(r.bufs[i]) > 0 {
			s.iovs[i].Base = &r.bufs[i][0]
		}
		s.iovs[i].SetLen(len(r.bufs[i]))
		s.hs[i].Hdr.Iov = &s.iovs[i]
		s.hs[i].Hdr.SetIovlen(1)
		s.hs[i].Hdr.Name = (*byte)(unsafe.Pointer(&s.names[i]))
	}
	s.fn = s.recvmmsg
}

func (s *readSys) recvmmsg(fd uintptr) bool {
	for i := range s.hs {
		s.hs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		s.hs[i].Hdr.Flags = 0
		s.hs[i].Len = 0
	}
	// The socket does not block (Go's poller): with nothing waiting, EAGAIN
	// sends RawConn.Read back to the poller; otherwise it returns what was
	// waiting, up to len(hs).
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&s.hs[0])), uintptr(len(s.hs)), 0, 0, 0)
	for errno == unix.EINTR {
		n, _, errno = unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&s.hs[0])), uintptr(len(s.hs)), 0, 0, 0)
	}
	switch {
	case errno == unix.EAGAIN:
		return false
	case errno != 0:
		s.n, s.err = 0, os.NewSyscallError("recvmmsg", errno)
	default:
		s.n, s.err = int(n), nil
	}
	return true
}

func (r *BatchReader) read() ([]Datagram, error) {
	s := &r.sys
	if s.rc == nil {
		return nil, s.err // SyscallConn failed: a closed socket
	}
	r.out = r.out[:0]
	for {
		if err := s.rc.Read(s.fn); err != nil {
			return nil, err
		}
		if s.err != nil {
			return nil, s.err
		}
		for i := range s.n {
			from, ok := s.addr(&s.names[i], s.hs[i].Hdr.Namelen)
			if !ok {
				continue // no address: not a UDP datagram
			}
			r.out = append(r.out, Datagram{B: r.bufs[i][:s.hs[i].Len], Addr: from})
		}
		if len(r.out) > 0 {
			return r.out, nil
		}
	}
}

// addr decodes a sockaddr the kernel wrote: IPv4, or IPv6 unmapped.
func (s *readSys) addr(sa *unix.RawSockaddrInet6, n uint32) (netip.AddrPort, bool) {
	switch {
	case sa.Family == unix.AF_INET && n >= unix.SizeofSockaddrInet4:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), ntohs(sa4.Port)), true
	case sa.Family == unix.AF_INET6 && n >= unix.SizeofSockaddrInet6:
		a := netip.AddrFrom16(sa.Addr).Unmap()
		if sa.Scope_id != 0 && a.Is6() {
			a = a.WithZone(s.zone(sa.Scope_id))
		}
		return netip.AddrPortFrom(a, ntohs(sa.Port)), true
	}
	return netip.AddrPort{}, false
}

// zone names an interface index as net does (its name, or the number).
func (s *readSys) zone(id uint32) string {
	if id != s.zoneID || s.zoneName == "" {
		s.zoneID, s.zoneName = id, strconv.FormatUint(uint64(id), 10)
		if ifi, err := net.InterfaceByIndex(int(id)); err == nil {
			s.zoneName = ifi.Name
		}
	}
	return s.zoneName
}

// writeSys is a BatchWriter's: the socket's RawConn and address family, and
// the sendmmsg(2) scratch each Write borrows.
type writeSys struct {
	rc      syscall.RawConn
	family  int // AF_INET or AF_INET6 (dual-stack)
	err     error
	scratch sync.Pool // *sendScratch
}

// sendScratch is one Write's headers, iovecs and addresses, kept for the next.
type sendScratch struct {
	hs    [maxSend]unix.Mmsghdr
	iovs  [maxSend]unix.Iovec
	names [maxSend]unix.RawSockaddrInet6
	of    [maxSend]int          // header i is for the datagram of[i] of the Write
	fn    func(fd uintptr) bool // sendmmsg of hs[sent:n], bound once
	n     int
	sent  int
	errno syscall.Errno
}

func (s *writeSys) init(c *net.UDPConn) {
	s.rc, s.err = c.SyscallConn()
	if s.err != nil {
		return
	}
	s.family = unix.AF_INET6
	var gerr error
	if err := s.rc.Control(func(fd uintptr) {
		s.family, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
	}); err != nil || gerr != nil {
		s.family = unix.AF_INET6
		if la, ok := c.LocalAddr().(*net.UDPAddr); ok && la.IP.To4() != nil && !la.IP.IsUnspecified() {
			s.family = unix.AF_INET
		}
	}
}

// maxSend bounds one sendmmsg (the kernel's UIO_MAXIOV is 1024).
const maxSend = 64

func (w *BatchWriter) write(ds []Datagram) (failed int, to netip.AddrPort, first error) {
	s := &w.sys
	fail := func(err error, d Datagram) {
		if failed == 0 {
			first, to = err, d.Addr
		}
		failed++
	}
	switch {
	case len(ds) == 0:
		return 0, netip.AddrPort{}, nil
	case s.rc == nil:
		return len(ds), ds[0].Addr, s.err
	case len(ds) == 1:
		// One datagram: sendto, as WriteToUDPAddrPort makes it, costs the same.
		if _, err := w.conn.WriteToUDPAddrPort(ds[0].B, ds[0].Addr); err != nil {
			fail(err, ds[0])
		}
		return failed, to, first
	}
	sc, _ := s.scratch.Get().(*sendScratch)
	if sc == nil {
		sc = new(sendScratch)
		sc.fn = sc.sendmmsg
	}
	defer func() {
		clear(sc.iovs[:]) // let the caller's buffers go
		s.scratch.Put(sc)
	}()
	for next := 0; next < len(ds); {
		// Headers for the next ones, skipping those with no address for
		// this socket's family.
		sc.n = 0
		for ; next < len(ds) && sc.n < maxSend; next++ {
			d := ds[next]
			nl, ok := sockaddr(&sc.names[sc.n], d.Addr, s.family)
			if !ok {
				fail(&net.OpError{Op: "write", Net: "udp", Addr: net.UDPAddrFromAddrPort(d.Addr), Err: errNoFamily}, d)
				continue
			}
			sc.iovs[sc.n] = unix.Iovec{}
			if len(d.B) > 0 {
				sc.iovs[sc.n].Base = &d.B[0]
			}
			sc.iovs[sc.n].SetLen(len(d.B))
			sc.hs[sc.n] = unix.Mmsghdr{Hdr: unix.Msghdr{Name: (*byte)(unsafe.Pointer(&sc.names[sc.n])), Namelen: nl, Iov: &sc.iovs[sc.n]}}
			sc.hs[sc.n].Hdr.SetIovlen(1)
			sc.of[sc.n] = next
			sc.n++
		}
		for sc.sent = 0; sc.sent < sc.n; {
			sc.errno = 0
			if err := s.rc.Write(sc.fn); err != nil {
				// Closed: none of the rest is written.
				for i := sc.sent; i < sc.n; i++ {
					fail(err, ds[sc.of[i]])
				}
				for _, d := range ds[next:] {
					fail(err, d)
				}
				return failed, to, first
			}
			if sc.errno != 0 {
				// The kernel refused the datagram at sent: skip it.
				d := ds[sc.of[sc.sent]]
				fail(&net.OpError{Op: "write", Net: "udp", Addr: net.UDPAddrFromAddrPort(d.Addr), Err: os.NewSyscallError("sendmmsg", sc.errno)}, d)
				sc.sent++
			}
		}
	}
	return failed, to, first
}

// sendmmsg writes hs[sent:n] and moves sent past what the kernel took; when
// it refuses the first of them, errno says why.
func (sc *sendScratch) sendmmsg(fd uintptr) bool {
	hs := sc.hs[sc.sent:sc.n]
	n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&hs[0])), uintptr(len(hs)), 0, 0, 0)
	for errno == unix.EINTR {
		n, _, errno = unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&hs[0])), uintptr(len(hs)), 0, 0, 0)
	}
	switch errno {
	case 0:
		if n == 0 {
			sc.errno = unix.EIO // took none, said nothing: do not try forever
		}
		sc.sent += int(n)
	case unix.EAGAIN:
		return false // the socket's buffer is full: wait until it is writable
	default:
		sc.errno = errno
	}
	return true
}

var errNoFamily = errors.New("address of another family than the socket's")

// sockaddr writes a as a socket address of family into sa and returns its
// length: an IPv4 address as itself on an IPv4 socket and mapped on an IPv6
// one, as WriteToUDPAddrPort does.
func sockaddr(sa *unix.RawSockaddrInet6, a netip.AddrPort, family int) (uint32, bool) {
	ip := a.Addr()
	if family == unix.AF_INET {
		ip = ip.Unmap()
		if !ip.Is4() {
			return 0, false
		}
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Port: htons(a.Port()), Addr: ip.As4()}
		return unix.SizeofSockaddrInet4, true
	}
	if !ip.IsValid() {
		return 0, false
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: htons(a.Port()), Addr: ip.As16()}
	if z := ip.Zone(); z != "" {
		sa.Scope_id = zoneIndex(z)
	}
	return unix.SizeofSockaddrInet6, true
}

func zoneIndex(z string) uint32 {
	if ifi, err := net.InterfaceByName(z); err == nil {
		return uint32(ifi.Index)
	}
	n, _ := strconv.ParseUint(z, 10, 32)
	return uint32(n)
}

// htons and ntohs: a sockaddr's port is in network order (big-endian) in
// memory.
func htons(p uint16) uint16 {
	var b [2]byte
	b[0], b[1] = byte(p>>8), byte(p)
	return *(*uint16)(unsafe.Pointer(&b))
}

func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}
