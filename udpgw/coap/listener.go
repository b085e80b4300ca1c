package coap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapNet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/monitor/inactivity"
	"github.com/plgd-dev/go-coap/v3/options/config"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	udpserver "github.com/plgd-dev/go-coap/v3/udp/server"
	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// Listener is one CoAP or CoAP-over-DTLS socket and its engine. It implements
// udpgw.Listener.
type Listener struct {
	env  udpgw.Env
	opts Options
	log  *zap.Logger
	ctr  *counters
	pool *pool.Pool

	// connector is env.Broker's when the listener relays each device over
	// its own broker connection (transparent mode, transparent.go), and
	// connChecker too when it has one.
	connector   udpgw.Connector
	connChecker ConnectionChecker

	// ps keeps the observations in Options.State across a restart
	// (persist.go); nil without one.
	ps *persister

	ctx    context.Context // ends when Close begins
	cancel context.CancelFunc

	// Plain CoAP: the socket and go-coap's wrapper of it (for writes).
	conn  *net.UDPConn
	uconn *coapNet.UDPConn
	// coaps: go-coap's DTLS server owns its socket (pion binds it).
	dtls *dtlsListener

	closeOnce sync.Once
	runMu     sync.RWMutex // guards closed; read-held around wg.Add so Close's Wait never races an Add
	closed    bool
	wg        sync.WaitGroup // every goroutine started through goStart, and every handler call

	peersMu sync.Mutex // guards peers
	peers   map[netip.AddrPort]*peer

	// Plain CoAP: the sources that have not proven their address (their
	// budget, rate and deduplication state; see unproven.go), the proofs, and
	// the Echo values that make them. nil for coaps.
	sources       *udpgw.Sources[srcState]
	echo          *echoer
	unprovenSlots chan struct{} // one per unproven request being handled

	proofMu   sync.Mutex                    // guards proofWait
	proofWait map[netip.AddrPort][]*pending // notifications held for an address's proof

	// Plain CoAP: the proven sources served without a connection (fast.go),
	// those with requests waiting, and the goroutines serving them.
	fastMu      sync.Mutex // guards fast, fastReady, fastWorkers and every fastPeer's fields
	fast        map[netip.AddrPort]*fastPeer
	fastReady   []*fastPeer
	fastWorkers int

	// The sender (notify.go): the devices with a notification that may go,
	// and the timers of what devices wait for.
	sendMu sync.Mutex // guards ready, timers
	ready  []*device
	timers timerHeap
	wake   chan struct{} // capacity 1: the sender has work
	// sendBuf is the sender's encoding buffer: the sender's alone.
	sendBuf []byte

	mu         sync.Mutex                       // guards devices, perTopic, sent, pendingObs
	devices    map[string]*device               // by device key (the session key's Device)
	perTopic   map[string]int                   // observations per observed filter, all devices
	sent       map[sentKey]sentRef              // notifications an ACK or RST may answer
	pendingObs map[*observation]pendingObserver // registered from unproven addresses
}

var (
	_ udpgw.Listener = (*Listener)(nil)
	_ session.Owner  = (*Listener)(nil)
)

// peer is go-coap's connection state for one remote address of a plain CoAP
// listener: deduplication cache, block-wise transfers, the received-message loop.
type peer struct {
	cc   *udpclient.Conn
	stop context.CancelFunc // ends the loop goroutine go-coap started for cc
}

// New binds the listener's socket; nothing is read until Serve. env.Broker is
// required; the other fields of env take udpgw.Env's defaults.
func New(env udpgw.Env, opts Options) (*Listener, error) {
	env = env.WithDefaults()
	if env.Broker == nil {
		return nil, ErrNoBroker
	}
	opts.applyDefaults()
	l := &Listener{
		env:      env,
		opts:     opts,
		log:      env.Logger,
		ctr:      newCounters(env.Metrics, env.Name),
		pool:     pool.New(1024, 2048),
		peers:    map[netip.AddrPort]*peer{},
		devices:  map[string]*device{},
		perTopic: map[string]int{},
		sent:     map[sentKey]sentRef{},
		wake:     make(chan struct{}, 1),

		pendingObs: map[*observation]pendingObserver{},
	}
	l.connector, _ = env.Broker.(udpgw.Connector)
	if l.connector != nil {
		l.connChecker, _ = env.Broker.(ConnectionChecker)
	}
	if opts.State != nil && l.connector == nil {
		// In transparent mode the subscriptions live on the devices' own
		// broker connections, which a restart ends: nothing to keep.
		l.ps = newPersister(opts.State, env)
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	if opts.DTLS != nil {
		d, err := l.newDTLS()
		if err != nil {
			l.cancel()
			return nil, err
		}
		l.dtls = d
	} else {
		conn, err := udpgw.ListenUDP(opts.Bind)
		if err != nil {
			l.cancel()
			return nil, err
		}
		udpgw.TuneSocket(env, conn, opts.ReadBuffer)
		l.conn = conn
		l.uconn = coapNet.NewUDPConn("udp", conn)
		l.sources = udpgw.NewSources[srcState](udpgw.SourcesOptions{
			Factor:      opts.Amplification,
			MaxUnproven: opts.MaxUnproven,
			UnprovenTTL: opts.UnprovenTTL,
			MaxProven:   opts.MaxPeers * 2,
			ProvenTTL:   opts.Keepalive * 3 / 2,
			Rate:        opts.UnprovenRate,
			Metrics:     env.Metrics,
			Listener:    env.Name,
		})
		l.echo = newEchoer()
		l.unprovenSlots = make(chan struct{}, maxUnprovenInflight)
		l.proofWait = map[netip.AddrPort][]*pending{}
		l.fast = map[netip.AddrPort]*fastPeer{}
	}
	env.Metrics.GaugeFunc("mqttgw_coap_observations", "Active Observe registrations.", func() float64 {
		l.mu.Lock()
		defer l.mu.Unlock()
		n := 0
		for _, c := range l.perTopic {
			n += c
		}
		return float64(n)
	}, "listener", env.Name)
	env.Metrics.GaugeFunc("mqttgw_coap_devices", "Devices with state in the CoAP engine.", func() float64 {
		l.mu.Lock()
		defer l.mu.Unlock()
		return float64(len(l.devices))
	}, "listener", env.Name)
	return l, nil
}

// Name is the listener's name from the config.
func (l *Listener) Name() string { return l.env.Name }

// Addr is the bound local address.
func (l *Listener) Addr() net.Addr {
	if l.dtls != nil {
		return l.dtls.ln.Addr()
	}
	return l.conn.LocalAddr()
}

// Serve reads until ctx ends or Close is called, and returns nil then, after
// every goroutine of the listener has exited. With Options.State it first
// restores the observations kept there, and at the end writes what is left.
func (l *Listener) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = l.Close() })
	defer stop()
	l.goStart(l.sender)
	if l.ps != nil {
		defer l.finalWrite() // after Close: every goroutine that changes them has exited
		if err := l.restore(); err != nil {
			_ = l.Close()
			return err
		}
		l.goStart(l.writer)
	}
	var err error
	if l.dtls != nil {
		err = l.dtls.srv.Serve(l.dtls.ln)
	} else {
		l.goStart(l.expirePeers)
		err = l.readUDP()
	}
	stopped := l.isClosed() // Close or the context ended the read: not an error
	cerr := l.Close()
	if stopped {
		return nil
	}
	if err == nil {
		err = cerr
	}
	return err
}

// Close stops Serve, releases the socket and waits for the listener's goroutines.
// It is idempotent; a second call returns once the first has finished.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.runMu.Lock()
		l.closed = true
		l.runMu.Unlock()
		l.cancel()
		if l.dtls != nil {
			l.dtls.srv.Stop()
			_ = l.dtls.ln.Close() // Stop closes it only once Serve has begun
		} else {
			err = l.conn.Close()
			if udpgw.IsClosed(err) {
				err = nil
			}
		}
		l.peersMu.Lock()
		peers := l.peers
		l.peers = map[netip.AddrPort]*peer{}
		l.peersMu.Unlock()
		for _, p := range peers {
			p.close()
		}
		l.wg.Wait()
	})
	return err
}

func (l *Listener) isClosed() bool {
	l.runMu.RLock()
	defer l.runMu.RUnlock()
	return l.closed
}

// enter counts one more running goroutine or handler call; false once Close began.
func (l *Listener) enter() bool {
	l.runMu.RLock()
	defer l.runMu.RUnlock()
	if l.closed {
		return false
	}
	l.wg.Add(1)
	return true
}

// goStart runs f on a new goroutine that Close waits for; false once Close began.
func (l *Listener) goStart(f func()) bool {
	if !l.enter() {
		return false
	}
	go func() {
		defer l.wg.Done()
		f()
	}()
	return true
}

// readUDP is the plain CoAP reader: one datagram at a time, handled on the
// unproven path (unproven.go) until its source proved its address, then on
// the proven one (fast.go), or by the go-coap connection of its source
// address while one lives (block-wise transfers). It never waits for a
// handler: requests are queued (maxInflight per source).
func (l *Listener) readUDP() error {
	buf := make([]byte, 1<<16)
	for {
		n, from, err := l.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if udpgw.IsClosed(err) || l.isClosed() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("coap: %s: read: %w", l.env.Name, err)
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		d := buf[:n]
		switch {
		case n > l.opts.MaxDatagram:
			l.ctr.tooLarge.Inc()
			continue
		case n > 0 && d[0]>>6 != 1:
			// RFC 7252 §3: messages with an unknown version number MUST be
			// silently ignored.
			l.ctr.badVersion.Inc()
			continue
		case n < 4:
			// Shorter than the fixed header: not CoAP at all.
			l.ctr.malformed.Inc()
			continue
		}
		if reply := badOptionReply(d); reply != nil {
			// Never larger than the request (RFC 7252 §11.3): no budget needed.
			l.ctr.badOption.Inc()
			_, _ = l.conn.WriteToUDPAddrPort(reply, from)
			continue
		}
		if p := l.livePeer(from); p != nil {
			if err := p.cc.Process(nil, d); err != nil {
				l.processError(p, from, false, d, err)
			}
			continue
		}
		if l.fromUnproven(d, from) {
			l.fromProven(d, from)
		}
	}
}

// processError handles a datagram go-coap could not take.
func (l *Listener) processError(p *peer, from netip.AddrPort, created bool, d []byte, err error) {
	var bad *udpclient.MalformedMessageError
	if !errors.As(err, &bad) {
		l.log.Debug("datagram not processed", zap.Stringer("from", from), zap.Error(err))
		return
	}
	l.ctr.malformed.Inc()
	if ce := l.log.Check(zap.DebugLevel, "malformed datagram"); ce != nil {
		ce.Write(zap.Stringer("from", from), zap.Int("bytes", len(d)), zap.Error(err))
	}
	// RFC 7252 §4.2: a Confirmable message that cannot be processed is rejected
	// with a Reset (4 octets: never larger than what it answers).
	if bad.HasHeader && bad.Type == message.Confirmable {
		rst := []byte{0x70, 0x00, d[2], d[3]}
		_, _ = l.conn.WriteToUDPAddrPort(rst, from)
	}
	if created {
		// Garbage must not leave a connection behind.
		l.peersMu.Lock()
		if l.peers[from] == p {
			delete(l.peers, from)
		}
		l.peersMu.Unlock()
		p.close()
	}
}

// livePeer returns from's connection while it is open, else nil.
func (l *Listener) livePeer(from netip.AddrPort) *peer {
	l.peersMu.Lock()
	defer l.peersMu.Unlock()
	if p := l.peers[from]; p != nil && p.cc.Context().Err() == nil {
		return p
	}
	return nil
}

// peer returns the connection for from, creating it; nil when MaxPeers is reached.
func (l *Listener) peer(from netip.AddrPort) (p *peer, created bool) {
	l.peersMu.Lock()
	defer l.peersMu.Unlock()
	if p := l.peers[from]; p != nil {
		if p.cc.Context().Err() == nil {
			return p, false
		}
		delete(l.peers, from)
		p.close()
	}
	if len(l.peers) >= l.opts.MaxPeers || l.ctx.Err() != nil {
		return nil, false
	}
	p = l.newPeer(from)
	l.peers[from] = p
	return p, true
}

// newPeer builds go-coap's connection for one remote address the way its
// udp/server does, with the gateway's handler, monitor and limits.
func (l *Listener) newPeer(from netip.AddrPort) *peer {
	loopCtx, stop := context.WithCancel(context.Background())
	raddr := net.UDPAddrFromAddrPort(from)
	sess := udpserver.NewSession(l.ctx, loopCtx, l.uconn, raddr, uint32(l.opts.MaxDatagram), mtu, false, l.coapError)
	cfg := l.connConfig()
	// go-coap's udp server closes a connection after 16 s without traffic; here it
	// lives ConnIdle (see Options), and never while a Confirmable is pending.
	monitor := udpclient.DeferInactivityWhileConfirmableMessagesPending(
		inactivity.New(l.opts.ConnIdle, func(cc *udpclient.Conn) { _ = cc.Close() }))
	cc := udpclient.NewConnWithOpts(sess, cfg,
		udpclient.WithInactivityMonitor(monitor),
		udpclient.WithRequestMonitor(l.monitor),
		udpclient.WithBlockWise(func(cc *udpclient.Conn) *blockwise.BlockWise[*udpclient.Conn] {
			bw := blockwise.New(cc, blockTransferTimeout, l.coapError, func(message.Token) (*pool.Message, bool) { return nil, false })
			// RFC 7959 §2.9.3: 4.13 with Size1 once a transfer would exceed it.
			bw.SetMaxReceiveBodySize(int64(l.opts.MaxPayload))
			// The timeout applies between blocks, not to the whole transfer:
			// a slow link needs minutes for 64 KiB.
			bw.SetRollingExpiration(true)
			bw.SetReceivingMessagesCacheMaxEntries(4)
			return bw
		}))
	cc.SetContextValue(stateKey{}, &connState{addr: from})
	return &peer{cc: cc, stop: stop}
}

// connConfig is the go-coap configuration of one connection, plain or DTLS.
func (l *Listener) connConfig() *udpclient.Config {
	cfg := udpclient.DefaultConfig
	cfg.Errors = l.coapError
	cfg.MessagePool = l.pool
	cfg.Handler = l.handle
	cfg.ProcessReceivedMessage = l.processReceived
	// Room for every admitted request (maxInflight), so that Process, called on
	// the reader goroutine, never waits for the connection's handler loop.
	cfg.ReceivedMessageQueueSize = 2 * maxInflight
	cfg.BlockwiseEnable = true
	cfg.BlockwiseSZX = blockwise.SZX1024
	cfg.BlockwiseTransferTimeout = blockTransferTimeout
	cfg.MaxMessageSize = uint32(l.opts.MaxDatagram)
	return &cfg
}

func (p *peer) close() {
	_ = p.cc.Close()
	p.stop()
}

// expirePeers is the one periodic driver of the per-source state: go-coap's
// connections (caches, block-wise transfers, the inactivity monitor that
// closes idle ones), the unproven sources, the proven path's peers, and the
// observations of addresses that never proved themselves.
func (l *Listener) expirePeers() {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case now := <-t.C:
			l.peersMu.Lock()
			peers := make([]*peer, 0, len(l.peers))
			for _, p := range l.peers {
				peers = append(peers, p)
			}
			l.peersMu.Unlock()
			for _, p := range peers {
				p.cc.CheckExpirations(now)
			}
			l.sources.Expire(l.env.Now())
			l.expireFast(l.env.Now())
			l.sweepObservers(l.env.Now())
			l.peersMu.Lock()
			for a, p := range l.peers {
				if p.cc.Context().Err() != nil {
					delete(l.peers, a)
					p.stop()
				}
			}
			l.peersMu.Unlock()
		}
	}
}

// processReceived wraps go-coap's processing of one queued request on the
// connection's loop goroutine: Close waits for it, and the request leaves the
// peer's in-flight set when it has been answered.
func (l *Listener) processReceived(req *pool.Message, cc *udpclient.Conn, h config.HandlerFunc[*udpclient.Conn]) {
	st := stateOf(cc)
	if st != nil && isRequest(req) {
		defer st.release(req.MessageID())
	}
	if !l.enter() {
		cc.ReleaseMessage(req)
		return
	}
	defer l.wg.Done()
	cc.ProcessReceivedMessageWithHandler(req, h)
}

// coapError receives go-coap's errors: they are per-datagram, so debug level.
func (l *Listener) coapError(err error) {
	if coapNet.IsCancelOrCloseError(err) {
		return
	}
	var bad *udpclient.MalformedMessageError
	if errors.As(err, &bad) && l.dtls != nil {
		l.ctr.malformed.Inc() // DTLS sessions read (and report) on their own
	}
	if ce := l.log.Check(zap.DebugLevel, "go-coap error"); ce != nil {
		ce.Write(zap.Error(err))
	}
}

// connState is the gateway's state of one go-coap connection, kept in its
// context: the peer's address, its DTLS PSK identity and its requests in
// flight; for a request served without a connection, its source address and
// whether that proved itself (fast.go).
type connState struct {
	addr     netip.AddrPort
	identity string // DTLS PSK identity; "" for plain CoAP
	proven   bool   // no connection, and the address proved itself

	mu       sync.Mutex // guards inflight
	inflight map[int32]time.Time

	// prior are the requests the source made before it proved its address,
	// answered on the unproven path: a late copy of one gets the same answer,
	// not a second processing (RFC 7252 §4.5), until priorUntil. Reader only.
	prior      []priorRequest
	priorUntil time.Time
}

// priorRequest is one request answered before its source proved its address.
type priorRequest struct {
	mid  uint16
	resp []byte // nil: the answer was not kept; the duplicate is dropped
}

type stateKey struct{}

func stateOf(cc *udpclient.Conn) *connState {
	st, _ := cc.Context().Value(stateKey{}).(*connState)
	return st
}

// connAddr is the remote address of a connection: where what it carries goes.
func connAddr(cc *udpclient.Conn) netip.AddrPort {
	if st := stateOf(cc); st != nil {
		return st.addr
	}
	return netip.AddrPort{}
}

// admit records a new request of the peer; it reports dup for a message id that
// is already queued or being handled (go-coap would drop it too: RFC 7252 §4.5)
// and !ok when the peer already has maxInflight requests in flight.
func (st *connState) admit(mid int32, now time.Time) (ok, dup bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.inflight == nil {
		st.inflight = make(map[int32]time.Time, maxInflight)
	}
	if _, in := st.inflight[mid]; in {
		return false, true
	}
	if len(st.inflight) >= maxInflight {
		// An entry go-coap dropped itself (a duplicate it saw after we released
		// the id) is never released: forget it after a bound.
		for m, t := range st.inflight {
			if now.Sub(t) > inflightStale {
				delete(st.inflight, m)
			}
		}
		if len(st.inflight) >= maxInflight {
			return false, false
		}
	}
	st.inflight[mid] = now
	return true, false
}

func (st *connState) release(mid int32) {
	st.mu.Lock()
	delete(st.inflight, mid)
	st.mu.Unlock()
}

func isRequest(r *pool.Message) bool {
	t := r.Type()
	return isRequestCode(r.Code()) && (t == message.Confirmable || t == message.NonConfirmable)
}
