// Package raw is the plain-datagram listener: every datagram becomes one Uplink for
// the handler, which maps it through the rules table. It has no protocol of its own,
// so it never answers a device.
//
// Serve runs one reader goroutine (the caller's) and starts none; Close stops it.
// The handler is called synchronously on the reader goroutine and must not block:
// the gateway's handler maps the datagram (pure, sub-microsecond) and queues the
// publishes.
package raw

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/mqttgw/mqttgw/udpgw"
)

// Handler takes one uplink; Payload is only valid during the call.
type Handler func(udpgw.Uplink)

// Listener reads plain datagrams from one UDP socket.
type Listener struct {
	name      string
	conn      *net.UDPConn
	maxPacket int
	handle    Handler
	// tooLarge is called for a datagram over maxPacket, which is dropped.
	tooLarge  func(size int)
	closeOnce sync.Once
}

// New wraps a bound socket. tooLarge may be nil.
func New(name string, conn *net.UDPConn, maxPacket int, handle Handler, tooLarge func(size int)) *Listener {
	if tooLarge == nil {
		tooLarge = func(int) {}
	}
	return &Listener{name: name, conn: conn, maxPacket: maxPacket, handle: handle, tooLarge: tooLarge}
}

// Name implements udpgw.Listener.
func (l *Listener) Name() string { return l.name }

// Addr implements udpgw.Listener.
func (l *Listener) Addr() net.Addr { return l.conn.LocalAddr() }

// Serve implements udpgw.Listener.
func (l *Listener) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	// One byte more than the limit tells an oversize datagram from one that fits.
	buf := make([]byte, l.maxPacket+1)
	for {
		n, from, err := l.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if udpgw.IsClosed(err) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("raw: %s: read: %w", l.name, err)
		}
		if n > l.maxPacket {
			l.tooLarge(n)
			continue
		}
		l.handle(udpgw.Uplink{Listener: l.name, From: from, Payload: buf[:n], Received: time.Now()})
	}
}

// Close implements udpgw.Listener.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() { err = l.conn.Close() })
	return err
}
