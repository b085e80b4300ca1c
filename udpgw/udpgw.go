// Package udpgw holds what every device-side listener shares: the protocol-neutral
// Uplink, the Listener interface, and UDP socket plumbing.
//
// It starts no goroutines itself; each Listener's Serve runs on its caller's goroutine
// and returns when its context ends or Close is called.
package udpgw

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Uplink is one datagram from a device, as a listener received it.
type Uplink struct {
	Listener string
	From     netip.AddrPort
	// Payload is valid only during the handler call: listeners reuse their buffer.
	Payload  []byte
	Received time.Time
}

// Listener is one device-side socket and its protocol engine.
type Listener interface {
	// Name is the listener's name from the config.
	Name() string
	// Addr is the bound local address.
	Addr() net.Addr
	// Serve reads until ctx ends or Close is called; it returns nil then.
	Serve(ctx context.Context) error
	// Close stops Serve and releases the socket; it is idempotent.
	Close() error
}

// ListenUDP binds a UDP socket for a listener. A larger receive buffer than the
// kernel default absorbs bursts from many devices while the reader is busy.
func ListenUDP(bind string) (*net.UDPConn, error) {
	addr, err := net.ResolveUDPAddr("udp", bind)
	if err != nil {
		return nil, fmt.Errorf("udpgw: bind %q: %w", bind, err)
	}
	conn, err := net.ListenUDP("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("udpgw: bind %q: %w", bind, err)
	}
	_ = conn.SetReadBuffer(4 << 20) // best effort: the kernel caps it at rmem_max
	return conn, nil
}

// IsClosed reports whether err only says the socket was closed, which at shutdown
// is not an error.
func IsClosed(err error) bool {
	return errors.Is(err, net.ErrClosed)
}
