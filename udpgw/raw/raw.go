// Package raw is the plain-datagram listener: every datagram becomes one Uplink for
// the handler, which maps it through the rules table, keeps the device's session
// and may answer it (an ack, a downlink) through Send from the same socket, so a
// NAT pinhole the device opened lets the answer in.
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
	"net/netip"
	"sync"

	"github.com/mqttgw/mqttgw/udpgw"
)

// Handler takes one uplink; Payload is only valid during the call.
type Handler func(udpgw.Uplink)

// Options configure a Listener.
type Options struct {
	Bind      string // HOST:PORT
	MaxPacket int    // larger datagrams are dropped and counted
	Handle    Handler
}

// Listener reads plain datagrams from one UDP socket.
type Listener struct {
	env       udpgw.Env
	o         Options
	conn      *net.UDPConn
	tooLarge  interface{ Inc() }
	closeOnce sync.Once
}

// New binds the listener's socket; nothing is read until Serve.
func New(env udpgw.Env, o Options) (*Listener, error) {
	env = env.WithDefaults()
	if o.Handle == nil {
		return nil, fmt.Errorf("raw: %s: no handler", env.Name)
	}
	conn, err := udpgw.ListenUDP(o.Bind)
	if err != nil {
		return nil, err
	}
	tooLarge := env.Metrics.Counter("mqttgw_datagrams_dropped_total", "Datagrams dropped before mapping, by reason.", "listener", env.Name, "reason", "too_large")
	return &Listener{env: env, o: o, conn: conn, tooLarge: tooLarge}, nil
}

// Name implements udpgw.Listener.
func (l *Listener) Name() string { return l.env.Name }

// Addr implements udpgw.Listener.
func (l *Listener) Addr() net.Addr { return l.conn.LocalAddr() }

// Send writes one datagram to a device from the listener's socket.
func (l *Listener) Send(to netip.AddrPort, b []byte) error {
	_, err := l.conn.WriteToUDPAddrPort(b, to)
	return err
}

// Serve implements udpgw.Listener.
func (l *Listener) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	// One byte more than the limit tells an oversize datagram from one that fits.
	buf := make([]byte, l.o.MaxPacket+1)
	for {
		n, from, err := l.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if udpgw.IsClosed(err) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("raw: %s: read: %w", l.env.Name, err)
		}
		if n > l.o.MaxPacket {
			l.tooLarge.Inc()
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		l.o.Handle(udpgw.Uplink{Listener: l.env.Name, From: from, Payload: buf[:n], Received: l.env.Now()})
	}
}

// Close implements udpgw.Listener.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() { err = l.conn.Close() })
	return err
}
