package mqttsn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/pion/logging"
	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/metrics"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// DTLSOptions make the engine serve MQTT-SN over DTLS 1.2 (RFC 6347) with
// pre-shared keys (RFC 4279): the mqttsns listener. The PSK identity is the
// client id: a CONNECT (or a waking PINGREQ) naming another client id is
// refused, and the client's session carries the identity as its user.
type DTLSOptions struct {
	// PSK returns the key of a PSK identity; ok false fails the handshake.
	// Required. It runs during handshakes, concurrently.
	PSK func(identity string) (key []byte, ok bool)
	// HandshakeTimeout bounds one handshake; default 10s.
	HandshakeTimeout time.Duration
	// MaxHandshakes bounds the handshakes under way at once; a ClientHello
	// beyond it is dropped (counted, logged), and the client retransmits it
	// (RFC 6347 §4.2.4). Default 128.
	MaxHandshakes int
	// IdleCheck is how long a connection may carry nothing before the engine
	// looks at it: it is closed unless a live session (or a will exchange)
	// is at its peer. Default 1 minute.
	IdleCheck time.Duration
	// ConnectionIDLength is the length of the connection ids (RFC 9146) the
	// gateway asks clients to put in their records, so that a client whose
	// address changes (NAT rebinding) keeps its DTLS session. 0: 8 octets;
	// negative: no connection ids.
	ConnectionIDLength int
	// Refused, when set, is told of every refused authentication — a
	// handshake with an unknown identity or (most likely) a wrong key, a
	// CONNECT naming another client id than the identity — with the identity
	// and a short reason, so that the gateway counts and logs them with the
	// other protocols' (the engine then logs them no more itself). It may be
	// called with Engine.mu held: it must only count and log.
	Refused func(from netip.AddrPort, identity, reason string)
}

// Reasons given to DTLSOptions.Refused.
const (
	refusedUnknownIdentity = "unknown PSK identity"
	refusedWrongKey        = "wrong PSK key (no valid Finished)"
	refusedOtherClientID   = "client id is not the PSK identity"
)

func (d *DTLSOptions) defaults() {
	setDur(&d.HandshakeTimeout, 10*time.Second)
	setInt(&d.MaxHandshakes, 128)
	setDur(&d.IdleCheck, time.Minute)
	if d.ConnectionIDLength == 0 {
		d.ConnectionIDLength = 8
	}
}

// dtlsMaxPayload bounds an MQTT-SN message over DTLS: pion reads datagrams
// into 8 KiB buffers, and a record adds its header, connection id, explicit
// nonce and tag (RFC 6347 §4.1, RFC 9146 §4).
const dtlsMaxPayload = 8192 - 64

// dtlsMTU bounds the handshake flights pion sends (it fragments them).
const dtlsMTU = 1200

// handshakeResult says how one DTLS connection attempt ended; each has its
// series of mqttgw_mqttsn_dtls_handshakes_total.
type handshakeResult uint8

const (
	handshakeOK     handshakeResult = iota // completed: the peer proved a known PSK identity
	handshakeFailed                        // wrong key, unknown identity, timeout, bad messages
	handshakeBusy                          // dropped: max_handshakes under way, or max_clients connections
	numHandshakeResults
)

var handshakeNames = [numHandshakeResults]string{"ok", "failed", "busy"}

// dtlsTransport is the DTLS side of an engine: a pion listener that owns the
// UDP socket and demultiplexes its datagrams into connections (by source
// address, and by connection id once one is negotiated), an accept loop, and
// one goroutine per connection that runs its handshake and then reads it into
// the engine. Writes go to the connection of the peer they are for.
//
// Goroutines: serve (the accept loop) runs on Serve's goroutine; it starts one
// goroutine per accepted connection (run), at most MaxHandshakes of them in
// their handshake at once. stop cancels the handshakes under way and closes
// the listener, which ends serve; established connections stay open for the
// drain. close closes every connection, which ends their goroutines, and waits
// for them. pion itself runs a reader goroutine for the socket and a few per
// connection; they end when the listener and every connection are closed.
type dtlsTransport struct {
	name    string
	o       DTLSOptions
	log     *zap.Logger
	ln      net.Listener
	results [numHandshakeResults]*metrics.Counter
	failLog limiter // handshake failures at info level: at most one line a second

	sem    chan struct{} // one token per handshake under way
	ctx    context.Context
	cancel context.CancelFunc // stop: handshakes under way end
	wg     sync.WaitGroup     // the run goroutines

	// mu guards the fields below. It is a leaf: the engine takes it under
	// Engine.mu (identity), and nothing is called with it held.
	mu     sync.Mutex
	conns  map[*piondtls.Conn]struct{}  // every accepted connection until it is closed
	byPeer map[netip.AddrPort]*dtlsPeer // established connections by name
	closed bool
}

// dtlsPeer is one established DTLS connection.
type dtlsPeer struct {
	conn     *piondtls.Conn
	identity string // the PSK identity the client proved
}

func newDTLSTransport(e *Engine, o DTLSOptions) (*dtlsTransport, error) {
	addr, err := net.ResolveUDPAddr("udp", e.o.Bind)
	if err != nil {
		return nil, fmt.Errorf("mqttsn: %s: bind %q: %w", e.env.Name, e.o.Bind, err)
	}
	psk := o.PSK
	opts := []piondtls.ServerOption{
		piondtls.WithPSK(func(identity []byte) ([]byte, error) {
			key, ok := psk(string(identity))
			if !ok {
				return nil, &unknownIdentityError{string(identity)}
			}
			return key, nil
		}),
		piondtls.WithCipherSuites(
			piondtls.TLS_PSK_WITH_AES_128_CCM_8, // RFC 7925 §4.2: the IoT profile's PSK suite
			piondtls.TLS_PSK_WITH_AES_128_CCM,
			piondtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
			piondtls.TLS_PSK_WITH_AES_256_CCM_8,
			piondtls.TLS_PSK_WITH_AES_128_CBC_SHA256,
			piondtls.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256,
			piondtls.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256,
			piondtls.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
		),
		piondtls.WithExtendedMasterSecret(piondtls.RequestExtendedMasterSecret),
		piondtls.WithLoggerFactory(pionLogs{e.log.Named("dtls")}),
		piondtls.WithMTU(dtlsMTU),
		// pion retransmits a flight every second (doubling); HandshakeTimeout
		// ends a stalled handshake.
		piondtls.WithFlightInterval(time.Second),
		// RFC 6347 §4.2.1: the first answer to a ClientHello is a
		// HelloVerifyRequest with a cookie, no larger than the ClientHello,
		// and nothing more is sent before the client proves it receives at
		// its source address: the listener cannot amplify a spoofed request.
		piondtls.WithInsecureSkipVerifyHello(false),
		// pion binds the socket: read_buffer and the kernel's drop count are
		// applied to it as it is made (a plain socket gets udpgw.TuneSocket).
		piondtls.WithListenConfig(net.ListenConfig{Control: udpgw.ListenControl(e.env, e.o.ReadBuffer)}),
	}
	if o.ConnectionIDLength > 0 {
		// RFC 9146: clients put the gateway's connection id in their records;
		// pion's listener then routes a record by it rather than by source
		// address, and answers the latest address it came from (§6).
		opts = append(opts, piondtls.WithConnectionIDGenerator(piondtls.RandomCIDGenerator(o.ConnectionIDLength)))
	}
	ln, err := piondtls.ListenWithOptions("udp", addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("mqttsn: %s: bind %q: %w", e.env.Name, e.o.Bind, err)
	}
	d := &dtlsTransport{
		name:    e.env.Name,
		o:       o,
		log:     e.log,
		ln:      ln,
		failLog: limiter{perSecond: 1},
		sem:     make(chan struct{}, o.MaxHandshakes),
		conns:   map[*piondtls.Conn]struct{}{},
		byPeer:  map[netip.AddrPort]*dtlsPeer{},
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	for i, n := range handshakeNames {
		d.results[i] = e.env.Metrics.Counter("mqttgw_mqttsn_dtls_handshakes_total",
			"DTLS connection attempts of mqttsns listeners, by result: ok, failed (wrong key, unknown identity, timeout), busy (dropped at max_handshakes or max_clients).",
			"listener", e.env.Name, "result", n)
	}
	e.env.Metrics.GaugeFunc("mqttgw_mqttsn_dtls_connections", "Established DTLS connections of mqttsns listeners.",
		func() float64 { return float64(d.established()) }, "listener", e.env.Name)
	return d, nil
}

func (d *dtlsTransport) LocalAddr() net.Addr { return d.ln.Addr() }

func (d *dtlsTransport) established() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.byPeer)
}

// serve is the accept loop. pion's listener makes a connection for the first
// handshake record from a new source; its handshake runs in its own goroutine.
func (d *dtlsTransport) serve(e *Engine) error {
	for {
		nc, err := d.ln.Accept()
		if err != nil {
			if d.ctx.Err() != nil || e.isClosed() {
				return nil
			}
			return fmt.Errorf("mqttsn: %s: accept: %w", d.name, err)
		}
		conn, ok := nc.(*piondtls.Conn)
		if !ok { // not from pion's listener: cannot happen
			_ = nc.Close()
			continue
		}
		from := addrPortOf(conn.RemoteAddr())
		now := e.env.Now()
		if !e.sourceAllowed(from.Addr()) {
			// allowed_sources: no handshake with the rest (not even the cookie).
			_ = conn.Close()
			e.m.drop(dropSource)
			e.debugBad(now, "DTLS ClientHello from outside allowed_sources dropped", from, nil)
			continue
		}
		select {
		case d.sem <- struct{}{}:
		default:
			_ = conn.Close()
			d.refuse(now, from, fmt.Errorf("%d handshakes under way (max_handshakes)", d.o.MaxHandshakes))
			continue
		}
		if !d.track(conn) {
			<-d.sem
			_ = conn.Close()
			return nil
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.run(e, conn, from)
		}()
	}
}

// run is one connection's goroutine: its handshake, then its reader.
func (d *dtlsTransport) run(e *Engine, conn *piondtls.Conn, from netip.AddrPort) {
	defer d.untrack(conn)
	ctx, cancel := context.WithTimeout(d.ctx, d.o.HandshakeTimeout)
	err := conn.HandshakeContext(ctx)
	cancel()
	<-d.sem
	if err != nil {
		if d.ctx.Err() == nil { // not the end of the engine
			d.failed(e.env.Now(), from, conn, err)
		}
		_ = conn.Close()
		return
	}
	st, _ := conn.ConnectionState()
	identity := string(st.IdentityHint) // on a server: the identity the client proved
	if !d.attach(e, from, conn, identity) {
		_ = conn.Close()
		return
	}
	d.results[handshakeOK].Inc()
	if ce := d.log.Check(zap.DebugLevel, "DTLS handshake completed"); ce != nil {
		ce.Write(zap.Stringer("from", from), zap.String("identity", identity))
	}
	d.read(e, conn, from)
	d.detach(from, conn)
	_ = conn.Close()
}

// read hands the connection's datagrams to the engine, under the
// connection's name (from), until the connection ends or, silent for
// IdleCheck, has no session to serve.
func (d *dtlsTransport) read(e *Engine, conn *piondtls.Conn, from netip.AddrPort) {
	buf := make([]byte, e.o.MaxPacket+1)
	for {
		_ = conn.SetReadDeadline(time.Now().Add(d.o.IdleCheck))
		n, err := conn.Read(buf)
		var ne net.Error
		switch {
		case err == nil:
			e.receive(from, buf[:n], nil)
		case errors.As(err, &ne) && ne.Timeout():
			if d.ctx.Err() == nil && e.peerInUse(from) {
				continue
			}
			if ce := d.log.Check(zap.DebugLevel, "idle DTLS connection without a session closed"); ce != nil {
				ce.Write(zap.Stringer("from", from))
			}
			return
		case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, piondtls.ErrConnClosed):
			return // closed by the peer (close_notify), a fatal alert, or close
		case strings.Contains(err.Error(), "buffer is too small"):
			// A record over MaxPacket: like an oversize datagram.
			e.receive(from, buf, nil)
		default:
			// A warning alert or a record pion could not use: the
			// connection goes on (RFC 6347 §4.1.2.7: invalid records are
			// discarded).
			if ce := d.log.Check(zap.DebugLevel, "DTLS read"); ce != nil {
				ce.Write(zap.Stringer("from", from), zap.Error(err))
			}
		}
	}
}

// writeTo sends b to the connection named to.
func (d *dtlsTransport) writeTo(b []byte, to netip.AddrPort) error {
	d.mu.Lock()
	p := d.byPeer[to]
	d.mu.Unlock()
	if p == nil {
		return fmt.Errorf("%w: no DTLS connection named %v", net.ErrClosed, to)
	}
	_, err := p.conn.Write(b)
	if errors.Is(err, piondtls.ErrConnClosed) {
		return fmt.Errorf("%w: %v", net.ErrClosed, err)
	}
	return err
}

// identity returns the PSK identity of the connection named a; "" when none.
func (d *dtlsTransport) identity(a netip.AddrPort) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if p := d.byPeer[a]; p != nil {
		return p.identity
	}
	return ""
}

// stop ends serve and the handshakes under way; established connections
// stay for the drain.
func (d *dtlsTransport) stop() error {
	d.cancel()
	err := d.ln.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// close closes every connection and waits for their goroutines. pion closes
// the socket with the last connection.
func (d *dtlsTransport) close() error {
	_ = d.stop()
	d.mu.Lock()
	d.closed = true
	conns := make([]*piondtls.Conn, 0, len(d.conns))
	for c := range d.conns {
		conns = append(conns, c)
	}
	d.mu.Unlock()
	for _, c := range conns {
		_ = c.Close() // sends close_notify on an established connection
	}
	d.wg.Wait()
	return nil
}

// track records an accepted connection; false once close began.
func (d *dtlsTransport) track(c *piondtls.Conn) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.conns[c] = struct{}{}
	return true
}

func (d *dtlsTransport) untrack(c *piondtls.Conn) {
	d.mu.Lock()
	delete(d.conns, c)
	d.mu.Unlock()
}

// attach names an established connection from; an older connection of the
// same name (the peer handshook again, or another peer now has its old
// address) is closed: one name, one connection. At most MaxClients
// connections are kept.
func (d *dtlsTransport) attach(e *Engine, from netip.AddrPort, c *piondtls.Conn, identity string) bool {
	d.mu.Lock()
	old := d.byPeer[from]
	if old == nil && len(d.byPeer) >= e.o.MaxClients {
		d.mu.Unlock()
		d.refuse(e.env.Now(), from, fmt.Errorf("%d DTLS connections (max_clients)", e.o.MaxClients))
		return false
	}
	if d.closed {
		d.mu.Unlock()
		return false
	}
	d.byPeer[from] = &dtlsPeer{conn: c, identity: identity}
	d.mu.Unlock()
	if old != nil {
		_ = old.conn.Close()
	}
	return true
}

func (d *dtlsTransport) detach(from netip.AddrPort, c *piondtls.Conn) {
	d.mu.Lock()
	if p := d.byPeer[from]; p != nil && p.conn == c {
		delete(d.byPeer, from)
	}
	d.mu.Unlock()
}

// failed counts a failed handshake. A refused authentication goes to Refused
// when set; the rest (and every failure without Refused) is logged at info
// level, at most once a second: a device that cannot authenticate must be
// visible without debug logs, and a flood of them must not flood the log.
func (d *dtlsTransport) failed(now time.Time, from netip.AddrPort, conn *piondtls.Conn, err error) {
	d.results[handshakeFailed].Inc()
	var identity, reason string
	var unknown *unknownIdentityError
	switch {
	case errors.As(err, &unknown):
		identity, reason = unknown.identity, refusedUnknownIdentity
	case errors.Is(err, context.DeadlineExceeded):
		// pion drops records it cannot decrypt (RFC 6347 §4.1.2.7), so a
		// wrong key shows as a timeout. Once the client named a known
		// identity (ClientKeyExchange, which pion records after the PSK
		// lookup) that is the likely cause; before, the client never
		// answered the cookie (a spoofed source, or it went away).
		if st, ok := conn.ConnectionState(); ok && len(st.IdentityHint) > 0 {
			identity, reason = string(st.IdentityHint), refusedWrongKey
			err = fmt.Errorf("identity %q: no valid Finished within handshake_timeout (wrong key?): %w", identity, err)
		} else {
			err = fmt.Errorf("handshake not completed within handshake_timeout: %w", err)
		}
	}
	if reason != "" && d.o.Refused != nil {
		d.o.Refused(from, identity, reason)
		return
	}
	d.logLimited(now, "DTLS handshake failed", from, err)
}

// refuse counts a connection dropped for a limit and logs it like a failure.
func (d *dtlsTransport) refuse(now time.Time, from netip.AddrPort, err error) {
	d.results[handshakeBusy].Inc()
	d.logLimited(now, "DTLS connection dropped", from, err)
}

func (d *dtlsTransport) logLimited(now time.Time, msg string, from netip.AddrPort, err error) {
	ok, suppressed := d.failLog.allow(now)
	if !ok {
		return
	}
	d.log.Info(msg, zap.Stringer("from", from), zap.Error(err), zap.Int("suppressed_before", suppressed))
}

// peerInUse reports whether the connection named a still serves something: a
// live session at a (connected, asleep or awake) or a will exchange under way.
func (e *Engine) peerInUse(a netip.AddrPort) bool {
	p := session.Peer{Addr: a}
	if e.env.Sessions.ByPeer(e.env.Name, p) != nil {
		return true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.pending[p]
	return ok
}

// addrPortOf converts a pion remote address (a *net.UDPAddr) to the engine's
// form, IPv4 unmapped.
func addrPortOf(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.UDPAddr:
		ap = a.AddrPort()
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// pionLogs sends pion's logs to zap at debug level: a failed handshake is one
// device's problem, which the engine logs itself (rate-limited) and counts.
type pionLogs struct{ log *zap.Logger }

func (p pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{p.log.Sugar().With("scope", scope)}
}

type pionLogger struct{ s *zap.SugaredLogger }

func (p pionLogger) Trace(string)              {}
func (p pionLogger) Tracef(string, ...any)     {}
func (p pionLogger) Debug(m string)            { p.s.Debug(m) }
func (p pionLogger) Debugf(f string, a ...any) { p.s.Debugf(f, a...) }
func (p pionLogger) Info(m string)             { p.s.Debug(m) }
func (p pionLogger) Infof(f string, a ...any)  { p.s.Debugf(f, a...) }
func (p pionLogger) Warn(m string)             { p.s.Debug(m) }
func (p pionLogger) Warnf(f string, a ...any)  { p.s.Debugf(f, a...) }
func (p pionLogger) Error(m string)            { p.s.Debug(m) }
func (p pionLogger) Errorf(f string, a ...any) { p.s.Debugf(f, a...) }
