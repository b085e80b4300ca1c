package mqttsn

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/udpgw"
)

// transport is the engine's socket: plain UDP (udpTransport) or DTLS 1.2
// (dtlsTransport, the mqttsns listener). The engine knows a peer by a
// netip.AddrPort, which is where its datagrams come from on UDP, and on DTLS
// the address its connection's handshake came from: the connection's name,
// kept when its records later come from elsewhere (RFC 9146 connection ids,
// NAT rebinding), so that the peer's session stays where it is.
type transport interface {
	// LocalAddr is the bound address.
	LocalAddr() net.Addr
	// serve runs on Serve's goroutine and hands every datagram to
	// e.receive, until stop or close; it returns nil then.
	serve(e *Engine) error
	// writeTo sends one datagram to a peer; b is the caller's again on return.
	writeTo(b []byte, to netip.AddrPort) error
	// stop makes serve return at once; writes keep working, so that Serve's
	// drain still answers devices.
	stop() error
	// close releases the socket and returns after every goroutine the
	// transport started has exited; later writes fail.
	close() error
}

// udpTransport is plain UDP: one socket, read by serve on Serve's goroutine
// (one reader, reader.go), written directly. It starts no goroutine and
// allocates nothing per datagram.
//
// Datagrams go in batches both ways (issue 11; udpgw.BatchReader and
// BatchWriter: recvmmsg and sendmmsg on Linux). serve reads what waits, up
// to a batch, with one system call and hands the datagrams to the engine
// one by one, as before. An outbox's datagrams leave with one system call
// (writeOut), and outboxes flushed at the same time share it: while one
// goroutine writes, the outboxes others flush meanwhile (the workers'
// PUBACKs, the reader's answers) are copied to a queue and returned from at
// once, and the writing goroutine writes the queue too before it returns.
// Nothing waits for a timer or for another goroutine to be scheduled: a
// lone outbox is written at once by its own goroutine. (The reader does not
// hold the writer's place across a whole read batch: it may wait for the
// broker there, handing on a QoS 0 publish, and the workers' PUBACKs would
// wait with it; measured, that cost QoS 1 2-4 % msgs/s for 12 % less CPU
// on PINGREQs.) The engine's rule stands: compose under e.mu, write
// after it; u.mu guards only the queue and is never held across a write.
type udpTransport struct {
	conn *net.UDPConn

	mu      sync.Mutex
	w       *udpgw.BatchWriter // made by the first writer
	writing bool               // a goroutine is the writer: the others queue
	queue   []outItem          // waiting for the writer, their bytes in queued
	queued  []byte
	// The writer's own, touched only by the goroutine that set writing:
	// the queue it took last (reused for the next), and the list it hands
	// BatchWriter.
	spare    []outItem
	spareBuf []byte
	ds       []udpgw.Datagram
}

// maxQueued bounds the bytes waiting for the writer: past it a flush
// writes its outbox itself, as if no one were writing.
const maxQueued = 256 << 10

// maxKept is the largest queue buffer the writer keeps for the next.
const maxKept = 64 << 10

func (u *udpTransport) LocalAddr() net.Addr { return u.conn.LocalAddr() }

func (u *udpTransport) serve(e *Engine) error {
	size := e.o.MaxPacket + 1 // one more: tells an oversize datagram
	br := udpgw.NewBatchReader(u.conn, udpgw.BatchReaderSize(size), size)
	rd := new(reader) // this reader's alone
	for {
		ds, err := br.Read()
		if err != nil {
			if e.isClosed() || udpgw.IsClosed(err) {
				return nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			return fmt.Errorf("mqttsn: %s: read: %w", e.env.Name, err)
		}
		for _, d := range ds {
			rd.datagram(e, d.Addr, d.B) // unmapped by the reader
		}
	}
}

func (u *udpTransport) writeTo(b []byte, to netip.AddrPort) error {
	_, err := u.conn.WriteToUDPAddrPort(b, to)
	return err
}

// writeOut writes one outbox's datagrams (buf, items), in order, with those
// other goroutines flush meanwhile (see udpTransport); buf is the caller's
// again on return. A datagram not written is like one lost: logged at debug
// level, retransmission or the client recovers.
func (u *udpTransport) writeOut(e *Engine, buf []byte, items []outItem) {
	if len(items) == 0 {
		return
	}
	u.mu.Lock()
	if u.w == nil {
		u.w = udpgw.NewBatchWriter(u.conn)
	}
	if u.writing && len(u.queued) < maxQueued {
		for _, it := range items {
			start := len(u.queued)
			u.queued = append(u.queued, buf[it.start:it.end]...)
			u.queue = append(u.queue, outItem{to: it.to, start: start, end: len(u.queued)})
		}
		u.mu.Unlock()
		return
	}
	if u.writing {
		// The queue is full: write alone, beside the writer.
		u.mu.Unlock()
		u.send(e, buf, items, nil)
		return
	}
	u.writing = true
	u.mu.Unlock()
	u.ds = u.send(e, buf, items, u.ds)
	u.drain(e)
}

// drain writes the queue until it is empty, then lets another goroutine be
// the writer; the writer calls it.
func (u *udpTransport) drain(e *Engine) {
	for {
		u.mu.Lock()
		if len(u.queue) == 0 {
			u.writing = false
			u.mu.Unlock()
			return
		}
		items, buf := u.queue, u.queued
		u.queue, u.queued = u.spare[:0], u.spareBuf[:0]
		u.mu.Unlock()
		u.ds = u.send(e, buf, items, u.ds)
		if cap(buf) <= maxKept {
			u.spare, u.spareBuf = items[:0], buf[:0]
		} else {
			u.spare, u.spareBuf = nil, nil // a burst's: let it go
		}
	}
}

// send writes items of buf with one BatchWriter.Write, building its list in
// ds (returned for reuse), and logs what failed.
func (u *udpTransport) send(e *Engine, buf []byte, items []outItem, ds []udpgw.Datagram) []udpgw.Datagram {
	ds = ds[:0]
	for _, it := range items {
		ds = append(ds, udpgw.Datagram{B: buf[it.start:it.end], Addr: it.to})
	}
	if failed, to, err := u.w.Write(ds); failed > 0 && !udpgw.IsClosed(err) {
		if ce := e.log.Check(zap.DebugLevel, "write failed"); ce != nil {
			ce.Write(zap.Stringer("to", to), zap.Int("datagrams", failed), zap.Error(err))
		}
	}
	clear(ds) // let the buffers go
	return ds
}

// stop wakes the reader, which sees the engine closed.
func (u *udpTransport) stop() error { return u.conn.SetReadDeadline(time.Now()) }

func (u *udpTransport) close() error { return u.conn.Close() }
