// Package raw is the plain-datagram listener: every datagram becomes one Uplink for
// the handler, which maps it through the rules table, keeps the device's session
// and may answer it (an ack, a downlink) through Send from the same socket, so a
// NAT pinhole the device opened lets the answer in.
//
// Serve runs one reader goroutine (the caller's) and starts none; Close stops it.
// It reads up to a batch of datagrams with one system call (recvmmsg on Linux,
// udpgw.BatchReader) and hands them to the handler one by one, in order.
// The handler is called synchronously on the reader goroutine and must not block:
// the gateway's handler maps the datagram (pure, sub-microsecond) and queues the
// publishes.
//
// # Anti-amplification
//
// A plain datagram proves nothing about its source address: there is no
// handshake and no value the device could echo, so any source may be spoofed,
// and acks and downlinks could be reflected at a victim. So no source is ever
// proven here, and every datagram Send writes is paid for by what its
// destination sent: each datagram received from an address credits it with
// three times its size (udpgw.Sources, Factor 3, at most 3 × 64 KiB banked),
// each datagram sent spends from it, and one that does not fit is not sent
// (Send returns udpgw.ErrHeld; mqttgw_amplification_held_*_total count it). An
// address is remembered Options.CreditTTL (10 min) after its last datagram, at
// most MaxSources (65536) of them, the least recently heard forgotten first.
// Acks are answers to one datagram and fit unless a rule's ack is more than
// three times the size of the datagram it answers; a downlink sent on a
// device's datagram (on_uplink) is paid by that datagram and the device's
// recent ones; a downlink sent at any other time needs the device to have sent
// at least a third of its size within CreditTTL.
package raw

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mqttgw/mqttgw/udpgw"
)

// Handler takes one uplink; Payload is only valid during the call.
type Handler func(udpgw.Uplink)

// Options configure a Listener.
type Options struct {
	Bind      string // HOST:PORT
	MaxPacket int    // larger datagrams are dropped and counted
	Handle    Handler
	// ReadBuffer is the socket's receive buffer in bytes (SO_RCVBUF); 0 keeps
	// the size udpgw.ListenUDP gave it.
	ReadBuffer int
	// CreditTTL (10 min) is how long an address keeps its anti-amplification
	// credit after its last datagram; MaxSources (65536) bounds the addresses
	// remembered (see the package comment).
	CreditTTL  time.Duration
	MaxSources int
}

// Listener reads plain datagrams from one UDP socket.
type Listener struct {
	env       udpgw.Env
	o         Options
	conn      *net.UDPConn
	tooLarge  interface{ Inc() }
	sources   *udpgw.Sources[struct{}] // every address's budget; none is ever proven
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
	udpgw.TuneSocket(env, conn, o.ReadBuffer)
	if o.CreditTTL <= 0 {
		o.CreditTTL = 10 * time.Minute
	}
	if o.MaxSources <= 0 {
		o.MaxSources = 1 << 16
	}
	tooLarge := env.Metrics.Counter("mqttgw_datagrams_dropped_total", "Datagrams dropped before mapping, by reason.", "listener", env.Name, "reason", "too_large")
	sources := udpgw.NewSources[struct{}](udpgw.SourcesOptions{
		UnprovenTTL: o.CreditTTL,
		MaxUnproven: o.MaxSources,
		Metrics:     env.Metrics,
		Listener:    env.Name,
	})
	return &Listener{env: env, o: o, conn: conn, tooLarge: tooLarge, sources: sources}, nil
}

// Name implements udpgw.Listener.
func (l *Listener) Name() string { return l.env.Name }

// Addr implements udpgw.Listener.
func (l *Listener) Addr() net.Addr { return l.conn.LocalAddr() }

// Send writes one datagram to a device from the listener's socket, when it
// fits the device's anti-amplification budget (see the package comment);
// otherwise it sends nothing and returns an error wrapping udpgw.ErrHeld.
func (l *Listener) Send(to netip.AddrPort, b []byte) error {
	if !l.sources.Spend(to, len(b), l.env.Now()) {
		return fmt.Errorf("raw: %s: %s: %d bytes: %w", l.env.Name, to, len(b), udpgw.ErrHeld)
	}
	_, err := l.conn.WriteToUDPAddrPort(b, to)
	return err
}

// Serve implements udpgw.Listener.
func (l *Listener) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	// One byte more than the limit tells an oversize datagram from one that
	// fits. Up to a batch of datagrams a read (recvmmsg on Linux), handed to
	// the handler one by one.
	size := l.o.MaxPacket + 1
	br := udpgw.NewBatchReader(l.conn, udpgw.BatchReaderSize(size), size)
	for {
		ds, err := br.Read()
		if err != nil {
			if udpgw.IsClosed(err) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("raw: %s: read: %w", l.env.Name, err)
		}
		now := l.env.Now() // one clock reading a batch: they were read together
		for _, d := range ds {
			if len(d.B) > l.o.MaxPacket {
				l.tooLarge.Inc()
				continue
			}
			l.sources.Received(d.Addr, len(d.B), now, nil) // before the handler, which may answer
			l.o.Handle(udpgw.Uplink{Listener: l.env.Name, From: d.Addr, Payload: d.B, Received: now})
		}
	}
}

// Close implements udpgw.Listener.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() { err = l.conn.Close() })
	return err
}
