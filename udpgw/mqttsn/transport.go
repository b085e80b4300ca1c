package mqttsn

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

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
type udpTransport struct {
	conn *net.UDPConn
}

func (u *udpTransport) LocalAddr() net.Addr { return u.conn.LocalAddr() }

func (u *udpTransport) serve(e *Engine) error {
	buf := make([]byte, e.o.MaxPacket+1) // one more: tells an oversize datagram
	rd := new(reader)                    // this reader's alone
	for {
		n, from, err := u.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if e.isClosed() || udpgw.IsClosed(err) {
				return nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			return fmt.Errorf("mqttsn: %s: read: %w", e.env.Name, err)
		}
		rd.datagram(e, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), buf[:n])
	}
}

func (u *udpTransport) writeTo(b []byte, to netip.AddrPort) error {
	_, err := u.conn.WriteToUDPAddrPort(b, to)
	return err
}

// stop wakes the reader, which sees the engine closed.
func (u *udpTransport) stop() error { return u.conn.SetReadDeadline(time.Now()) }

func (u *udpTransport) close() error { return u.conn.Close() }
