package udpgw

import (
	"net"
	"net/netip"
)

// Datagram batching (issue 11): on Linux a BatchReader reads up to its batch
// of datagrams with one recvmmsg(2) and a BatchWriter writes many with one
// sendmmsg(2), where ReadFromUDPAddrPort and WriteToUDPAddrPort make one
// system call per datagram. Elsewhere both go one datagram at a time, with
// the same results.
//
// They call recvmmsg and sendmmsg themselves (batch_linux.go), through the
// socket's syscall.RawConn and so through Go's poller, as x/net's
// ipv4.PacketConn ReadBatch and WriteBatch do. Not through those: ReadBatch
// allocates a *net.UDPAddr and its IP for every datagram it reads
// (x/net internal/socket parseInetAddr), and WriteBatch takes a *net.UDPAddr
// per datagram; here neither allocates, and addresses are netip.AddrPort
// both ways, as the listeners keep them.
//
// One socket, bound to an IPv4 address or to an IPv6 one (a dual-stack
// socket, bound to "::" or to no address, is IPv6): an IPv4 peer of a
// dual-stack socket is read as its IPv4 address, unmapped, as the listeners
// have always done, and written to as such.

// Datagram is one datagram of a batch: its bytes and its peer.
type Datagram struct {
	B    []byte
	Addr netip.AddrPort
}

// BatchReader reads one socket's datagrams, up to its batch at a time, into
// buffers it allocated once. One goroutine reads with it.
type BatchReader struct {
	conn *net.UDPConn
	bufs [][]byte   // one per slot, each of the size asked for
	out  []Datagram // the last Read's, into bufs
	sys  readSys    // batch_linux.go: recvmmsg's headers; batch_other.go: nothing
}

// NewBatchReader reads c with batch slots (at least 1) of size bytes each.
// A datagram longer than size is cut to size: the caller asks for one byte
// more than it accepts, to tell one that is too long.
func NewBatchReader(c *net.UDPConn, batch, size int) *BatchReader {
	batch = min(max(batch, 1), maxReadBatch)
	r := &BatchReader{conn: c, bufs: make([][]byte, batch), out: make([]Datagram, 0, batch)}
	mem := make([]byte, batch*size)
	for i := range r.bufs {
		r.bufs[i] = mem[i*size : (i+1)*size : (i+1)*size]
	}
	r.sys.init(r)
	return r
}

// Read waits for at least one datagram and returns every datagram waiting,
// up to the batch, in the order the kernel received them. Their bytes are
// the reader's, valid until the next Read; their addresses are unmapped
// (an IPv4 peer is an IPv4 address). A deadline or a closed socket ends the
// wait with the error ReadFromUDPAddrPort would return (net.ErrClosed,
// os.ErrDeadlineExceeded).
func (r *BatchReader) Read() ([]Datagram, error) {
	return r.read()
}

// BatchReaderSize picks a batch for datagrams of up to size bytes: up to 64
// slots within 1 MiB, at least 8 (at 65,508 bytes a datagram, 16 slots). A
// short datagram only touches the first page of its slot, so that memory is
// mostly never paged in.
func BatchReaderSize(size int) int {
	return min(64, max(8, (1<<20)/max(size, 1)))
}

// BatchWriter writes datagrams from one socket, many at a time; it is safe
// for concurrent use.
type BatchWriter struct {
	conn *net.UDPConn
	sys  writeSys // batch_linux.go: the socket's RawConn and family, scratch headers
}

// NewBatchWriter writes from c.
func NewBatchWriter(c *net.UDPConn) *BatchWriter {
	w := &BatchWriter{conn: c}
	w.sys.init(c)
	return w
}

// Write writes ds, in order; their bytes are the caller's again on return.
// A datagram the kernel refuses (an unreachable or IPv6 peer from an IPv4
// socket ...) is skipped, like one lost on the way, and the others are
// still written: Write returns how many were refused, and the peer of the
// first refused and why. A closed socket refuses all that remain
// (net.ErrClosed).
func (w *BatchWriter) Write(ds []Datagram) (failed int, to netip.AddrPort, first error) {
	return w.write(ds)
}
