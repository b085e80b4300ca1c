package mqttsn

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// Engine is one MQTT-SN listener: its socket and every client's protocol state.
// Each client's address, liveness and will are its session's, in env.Sessions.
type Engine struct {
	env     udpgw.Env
	o       Options
	log     *zap.Logger
	tr      transport      // the socket: plain UDP, or DTLS
	dtls    *dtlsTransport // tr when it is DTLS (mqttsns), else nil
	checker PublishChecker // env.Broker's, when it has one
	// connector is env.Broker's when the listener relays each device over its
	// own broker connection (transparent mode): a CONNECT is accepted only
	// once that connection is made.
	connector udpgw.Connector
	m         *engineMetrics
	predef    predefined
	advAddr   netip.AddrPort // valid when advertising
	badLog    limiter
	seed      maphash.Seed // of publish digests (duplicate detection)
	ps        *persister   // the store's side (persist.go); nil without Options.State
	fl        *loader      // the fleet's side (fleet.go); nil without Options.Owners
	// sources records every source address (plain UDP; nil over DTLS): its
	// proof that it receives, its budget and rate (unproven.go).
	sources *udpgw.Sources[srcState]
	um      *unprovenMetrics

	// opCtx bounds the broker operations; cancelled when the drain ends.
	opCtx    context.Context
	opCancel context.CancelFunc

	lifeMu  sync.Mutex // guards serving and closed
	serving bool
	closed  bool

	mu       sync.Mutex // guards everything below and every client's fields
	cond     *sync.Cond // on mu: workers wait for ready clients
	byID     map[string]*client
	pending  map[session.Peer]*pendingConnect
	retrying map[*client]struct{} // clients with a message in flight
	parked   map[*client]struct{} // stateDisconnected clients
	ready    []*client            // clients with operations, in turn
	anon     *client              // owner of connectionless (QoS -1) publishes
	stopping bool                 // Serve is ending: no new work, workers drain
	dropOps  bool                 // the drain timed out: workers discard what is left
	nextAdv  time.Time
	// The address checks (unproven.go): fresh clients, least recently heard
	// first; clients with a probe out; will exchanges from unproven
	// addresses, oldest first.
	unproven      list[client]
	unprovenBytes int // payloads buffered for fresh clients, as last counted
	probing       map[*client]struct{}
	pendUnproven  list[pendingConnect]
	nextExpire    time.Time // of e.sources
}

var (
	_ udpgw.Listener = (*Engine)(nil)
	_ udpgw.Ticker   = (*Engine)(nil)
	_ session.Owner  = (*Engine)(nil)
)

// New binds the engine's socket (o.Bind): a UDP socket, or with o.DTLS a DTLS
// listener; nothing is read until Serve, and nothing timed happens but in Tick.
func New(env udpgw.Env, o Options) (*Engine, error) {
	env = env.WithDefaults()
	switch {
	case env.Name == "":
		return nil, fmt.Errorf("mqttsn: env: no Name")
	case env.Broker == nil:
		return nil, fmt.Errorf("mqttsn: %s: env: no Broker", env.Name)
	}
	if err := o.defaults(env.Name); err != nil {
		return nil, err
	}
	var advAddr netip.AddrPort
	if o.AdvertiseInterval > 0 {
		ua, err := net.ResolveUDPAddr("udp", o.AdvertiseAddr)
		if err != nil {
			return nil, fmt.Errorf("mqttsn: %s: advertise_addr %q: %w", env.Name, o.AdvertiseAddr, err)
		}
		advAddr = ua.AddrPort()
	}
	e := &Engine{
		env:      env,
		o:        o,
		log:      env.Logger,
		m:        newMetrics(env.Metrics, env.Name),
		predef:   newPredefined(o.Predefined),
		advAddr:  advAddr,
		badLog:   limiter{perSecond: 10},
		seed:     maphash.MakeSeed(),
		byID:     map[string]*client{},
		pending:  map[session.Peer]*pendingConnect{},
		retrying: map[*client]struct{}{},
		parked:   map[*client]struct{}{},
		anon:     &client{id: "\x00anonymous"},
		probing:  map[*client]struct{}{},
		um:       newUnprovenMetrics(env.Metrics, env.Name),
	}
	e.unproven.at = func(c *client) *links[client] { return &c.chk.links }
	e.pendUnproven.at = func(pc *pendingConnect) *links[pendingConnect] { return &pc.links }
	e.checker, _ = env.Broker.(PublishChecker)
	e.connector, _ = env.Broker.(udpgw.Connector)
	switch {
	case o.State != nil && e.connector == nil:
		e.ps = newPersister(o.State, env)
		if o.Owners != nil {
			e.fl = newLoader(e)
		}
	case o.State != nil:
		e.log.Info("transparent mode: the persistent sessions are each device's own at the broker, not kept in the store")
	}
	if o.DTLS != nil {
		d, err := newDTLSTransport(e, *o.DTLS)
		if err != nil {
			return nil, err
		}
		e.tr, e.dtls = d, d
	} else {
		conn, err := udpgw.ListenUDP(o.Bind)
		if err != nil {
			return nil, fmt.Errorf("mqttsn: %s: %w", env.Name, err)
		}
		udpgw.TuneSocket(env, conn, o.ReadBuffer)
		e.tr = &udpTransport{conn: conn}
		e.sources = newSources(env, o)
		if o.AdvertiseInterval > 0 {
			if err := allowBroadcast(conn); err != nil {
				e.log.Warn("cannot enable broadcast on the socket: ADVERTISE to a broadcast address may fail", zap.Error(err))
			}
		}
	}
	e.cond = sync.NewCond(&e.mu)
	e.opCtx, e.opCancel = context.WithCancel(context.Background())
	const help = "MQTT-SN clients, by state."
	env.Metrics.GaugeFunc("mqttgw_mqttsn_clients", help, func() float64 { return float64(e.count(stateActive) + e.count(stateAwake)) }, "listener", env.Name, "state", "active")
	env.Metrics.GaugeFunc("mqttgw_mqttsn_clients", help, func() float64 { return float64(e.count(stateAsleep)) }, "listener", env.Name, "state", "asleep")
	env.Metrics.GaugeFunc("mqttgw_mqttsn_clients", help, func() float64 { return float64(e.count(stateDisconnected)) }, "listener", env.Name, "state", "disconnected")
	if e.sources != nil {
		env.Metrics.GaugeFunc("mqttgw_mqttsn_unproven_clients", "MQTT-SN clients connected from an address that has not proven it receives (evicted first, ended after unproven_ttl of silence).",
			func() float64 { return float64(e.unprovenClients()) }, "listener", env.Name)
	}
	if e.ps != nil {
		env.Metrics.GaugeFunc("mqttgw_mqttsn_session_writes_pending", "MQTT-SN persistent session records changed and not yet committed to the store.",
			func() float64 { return float64(e.pendingWrites()) }, "listener", env.Name)
	}
	env.Metrics.GaugeFunc("mqttgw_mqttsn_buffered_messages", "Messages waiting for MQTT-SN clients (asleep, disconnected with a persistent session, or behind one in flight).",
		func() float64 { return float64(e.buffered()) }, "listener", env.Name)
	return e, nil
}

func (e *Engine) count(s state) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, c := range e.byID {
		if c.state == s {
			n++
		}
	}
	return n
}

// Name implements udpgw.Listener.
func (e *Engine) Name() string { return e.env.Name }

// Addr implements udpgw.Listener.
func (e *Engine) Addr() net.Addr { return e.tr.LocalAddr() }

// Close implements udpgw.Listener: the reader stops at once; Serve drains and
// releases the socket. Without Serve the socket is closed here.
func (e *Engine) Close() error {
	e.lifeMu.Lock()
	defer e.lifeMu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	if !e.serving {
		e.opCancel()
		return e.tr.close()
	}
	// Stop the reader(s); Serve keeps the socket open while the workers drain
	// so that devices still get their PUBACKs.
	return e.tr.stop()
}

func (e *Engine) isClosed() bool {
	e.lifeMu.Lock()
	defer e.lifeMu.Unlock()
	return e.closed
}

// Serve implements udpgw.Listener.
func (e *Engine) Serve(ctx context.Context) error {
	e.lifeMu.Lock()
	if e.serving {
		e.lifeMu.Unlock()
		return fmt.Errorf("mqttsn: %s: %w", e.env.Name, ErrServing)
	}
	if e.closed {
		e.lifeMu.Unlock()
		return nil
	}
	e.serving = true
	e.lifeMu.Unlock()
	stop := context.AfterFunc(ctx, func() { _ = e.Close() })
	defer stop()

	// Persistent sessions come back before the first datagram is read; the
	// writers commit their changes until the drain below is over.
	var (
		writer     sync.WaitGroup
		stopWriter = make(chan struct{})
	)
	if e.ps != nil {
		if e.fl == nil { // a fleet's sessions are loaded on CONNECT (fleet.go)
			if err := e.restore(); err != nil {
				_ = e.tr.close()
				return fmt.Errorf("mqttsn: %s: restore persistent sessions: %w", e.env.Name, err)
			}
		} else if err := e.watchOwners(); err != nil {
			_ = e.tr.close()
			return fmt.Errorf("mqttsn: %s: watch the fleet's owner keys: %w", e.env.Name, err)
		} else {
			e.startAdopter() // dead instances' clients (adopt.go)
		}
		for range writers {
			writer.Add(1)
			go func() {
				defer writer.Done()
				e.writer(stopWriter)
			}()
		}
	}

	var workers sync.WaitGroup
	for range e.o.Workers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			e.worker()
		}()
	}

	err := e.tr.serve(e)

	// Drain: no new work; workers finish what is queued, for DrainTimeout.
	e.mu.Lock()
	e.stopping = true
	e.cond.Broadcast()
	e.mu.Unlock()
	drained := make(chan struct{})
	go func() { workers.Wait(); close(drained) }()
	t := time.NewTimer(e.o.DrainTimeout)
	select {
	case <-drained:
	case <-t.C:
		e.mu.Lock()
		e.dropOps = true
		e.cond.Broadcast()
		e.mu.Unlock()
		e.opCancel()
		<-drained
	}
	t.Stop()
	// Loads under way see stopping and handle nothing more.
	e.waitLoads()
	// The last answers of the drain may wait for a commit: the final write
	// sends them, before the socket closes.
	close(stopWriter)
	writer.Wait()
	if e.ps != nil {
		e.finalWrite()
	}
	e.opCancel()
	if cerr := e.tr.close(); err == nil && cerr != nil && !udpgw.IsClosed(cerr) {
		err = cerr
	}
	return err
}

// receive takes one datagram from the transport's reader: from is the peer's
// name (the source address; on DTLS the connection's, see transport), b is
// valid only during the call and may be one octet over MaxPacket, which tells
// an oversize datagram. rd is the reader's own state: its Decoder and its
// cache of proven sources (reader.go; nil: none).
func (e *Engine) receive(from netip.AddrPort, b []byte, rd *reader) {
	now := e.env.Now()
	if len(b) > e.o.MaxPacket {
		e.m.tooLarge.Inc()
		e.m.drop(dropTooLarge)
		e.debugBad(now, "datagram larger than max_packet dropped", from, nil, zap.Int("bytes", len(b)), zap.Int("max_packet", e.o.MaxPacket))
		return
	}
	e.handleFrom(from, b, now, rd)
}

// debugBad logs a bad datagram at debug level, at most a few per second.
func (e *Engine) debugBad(now time.Time, msg string, from netip.AddrPort, err error, fields ...zap.Field) {
	if !e.log.Core().Enabled(zap.DebugLevel) {
		return
	}
	ok, suppressed := e.badLog.allow(now)
	if !ok {
		return
	}
	fields = append(fields, zap.Stringer("from", from))
	if err != nil {
		fields = append(fields, zap.Error(err))
	}
	if suppressed > 0 {
		fields = append(fields, zap.Int("suppressed_before", suppressed))
	}
	e.log.Debug(msg, fields...)
}

// clog is the logger narrowed to one client; built only when something is logged.
func (e *Engine) clog(c *client) *zap.Logger {
	return e.log.With(zap.String("client", c.id))
}

// handle decodes one datagram and acts on it.
func (e *Engine) handle(from netip.AddrPort, b []byte, now time.Time) {
	e.handleFrom(from, b, now, nil)
}

func (e *Engine) handleFrom(from netip.AddrPort, b []byte, now time.Time, rd *reader) {
	seen := rd.proven()
	if !e.sourceAllowed(from.Addr()) {
		// allowed_sources: nothing from elsewhere is decoded, answered or kept.
		e.m.drop(dropSource)
		e.debugBad(now, "datagram from outside allowed_sources dropped", from, nil)
		return
	}
	if e.sources != nil && !seen.hit(from, now) {
		switch e.sources.Received(from, len(b), now, nil) {
		case udpgw.Proven:
			seen.put(from, now)
		case udpgw.RateLimited:
			if isAnswer(b) {
				break // how it proves itself: never limited
			}
			// An unproven source above unproven_rate, before anything is
			// decoded or kept (counted by e.sources too).
			e.m.drop(dropRateLimited)
			e.debugBad(now, "datagram from an unproven source above its rate dropped", from, nil)
			return
		}
	}
	m, err := rd.decode(b) // a PUBLISH, PUBACK ... is rd's, valid until its next datagram (reader.go)
	if err != nil {
		// MQTT-SN 1.2 has no answer to a message that does not parse: drop it.
		e.m.drop(dropDecode)
		e.debugBad(now, "undecodable datagram dropped", from, err, zap.Int("bytes", len(b)))
		return
	}
	p := session.Peer{Addr: from}
	if enc, ok := m.(*mqttsn.Encapsulated); ok {
		// MQTT-SN 1.2 §5.5: a forwarder relays the message of a wireless node;
		// answers go back encapsulated with the same WirelessNodeId.
		e.m.countIn(mqttsn.MsgEncapsulated)
		if e.dtls != nil {
			// A DTLS PSK identity names one client (mqttsns: the identity is
			// the client id); a forwarder cannot prove its nodes' ids.
			e.m.drop(dropUnexpected)
			e.debugBad(now, "encapsulated message over DTLS dropped: a forwarder cannot prove its nodes' client ids", from, nil)
			return
		}
		p.Node = string(enc.WirelessNodeID)
		if p.Node == "" {
			p.Node = "\x00" // an empty node id is still a forwarded client
		}
		m = enc.Inner
	}
	e.m.countIn(m.Type())
	ob := getOutbox()
	e.mu.Lock()
	if !e.stopping {
		e.dispatch(ob, p, m, now)
	}
	e.mu.Unlock()
	e.publishDirect(ob)
	e.flush(ob)
}

// sourceAllowed applies Options.AllowedSources.
func (e *Engine) sourceAllowed(a netip.Addr) bool {
	if len(e.o.AllowedSources) == 0 {
		return true
	}
	for _, p := range e.o.AllowedSources {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// --- outbox: datagrams composed under e.mu, written after it ---

type outItem struct {
	to         netip.AddrPort
	start, end int
}

type outbox struct {
	buf   []byte
	items []outItem
	// direct are QoS 0 and -1 publishes for the reader to hand to the
	// Broker itself once the lock is released (publish.go, publishDirect).
	direct []op
}

var outboxes = sync.Pool{New: func() any { return &outbox{buf: make([]byte, 0, 512)} }}

func getOutbox() *outbox { return outboxes.Get().(*outbox) }

// send encodes m for p into the outbox, within p's budget; e.mu is held. It
// reports whether m goes (see put).
func (e *Engine) send(ob *outbox, p session.Peer, m mqttsn.Message) bool {
	return e.put(ob, p, m, true) == nil
}

// sendc is send to client c, at its session's address; putc is put. A client
// whose address proved it receives (c.okAddr) costs no budget lookup.
func (e *Engine) sendc(ob *outbox, c *client, m mqttsn.Message) bool {
	return e.putc(ob, c, m) == nil
}

func (e *Engine) putc(ob *outbox, c *client, m mqttsn.Message) error {
	p := c.peer()
	return e.put(ob, p, m, p.Addr != c.okAddr)
}

// put encodes m for p into the outbox; e.mu is held. With budget, a datagram
// to an address that has not proven it receives goes only within that
// address's budget (unproven.go): udpgw.ErrHeld otherwise, counted as held.
// errTooLarge: longer than MaxPacket.
func (e *Engine) put(ob *outbox, p session.Peer, m mqttsn.Message, budget bool) error {
	if !p.Addr.IsValid() {
		return errNoAddress
	}
	start := len(ob.buf)
	var msg mqttsn.Message = m
	if p.Node != "" {
		node := []byte(p.Node)
		if p.Node == "\x00" {
			node = nil
		}
		msg = &mqttsn.Encapsulated{WirelessNodeID: node, Inner: m}
	}
	// TypeOf, not m.Type(): a call through the interface would move every
	// answer (built on the handler's stack) to the heap.
	t, _ := mqttsn.TypeOf(m)
	buf, err := mqttsn.Append(ob.buf, msg)
	if err != nil {
		e.log.Error("mqttsn: encode", zap.Stringer("type", t), zap.Error(err))
		return err
	}
	if len(buf)-start > e.o.MaxPacket {
		ob.buf = buf[:start]
		return errTooLarge
	}
	if budget && e.sources != nil && !e.sources.Spend(p.Addr, len(buf)-start, e.env.Now()) {
		ob.buf = buf[:start]
		return udpgw.ErrHeld
	}
	ob.buf = buf
	ob.items = append(ob.items, outItem{to: p.Addr, start: start, end: len(buf)})
	e.m.countOut(t)
	return nil
}

// flush writes the outbox's datagrams, in order, and recycles it. A failed
// write is like a lost datagram: retransmission or the client recovers. On
// plain UDP they leave together, with the outboxes flushed at the same time
// (udpTransport.writeOut); over DTLS one by one.
func (e *Engine) flush(ob *outbox) {
	if u, ok := e.tr.(*udpTransport); ok {
		u.writeOut(e, ob.buf, ob.items)
		ob.items = ob.items[:0]
	}
	for _, it := range ob.items {
		if err := e.tr.writeTo(ob.buf[it.start:it.end], it.to); err != nil && !udpgw.IsClosed(err) {
			if ce := e.log.Check(zap.DebugLevel, "write failed"); ce != nil {
				ce.Write(zap.Stringer("to", it.to), zap.Error(err))
			}
		}
	}
	if cap(ob.buf) > 64<<10 {
		return // do not keep a huge buffer in the pool
	}
	ob.buf = ob.buf[:0]
	ob.items = ob.items[:0]
	outboxes.Put(ob)
}

// --- predefined topics (MQTT-SN 1.2 §3, §6.7) ---

type predefTable struct {
	byID   map[uint16]string
	byName map[string]uint16
}

type predefined struct {
	global    predefTable
	perClient map[string]*predefTable
}

func newPredefined(list []Predefined) predefined {
	p := predefined{global: predefTable{byID: map[uint16]string{}, byName: map[string]uint16{}}, perClient: map[string]*predefTable{}}
	for _, d := range list {
		t := &p.global
		if d.ClientID != "" {
			if p.perClient[d.ClientID] == nil {
				p.perClient[d.ClientID] = &predefTable{byID: map[uint16]string{}, byName: map[string]uint16{}}
			}
			t = p.perClient[d.ClientID]
		}
		t.byID[d.ID] = d.Topic
		if _, dup := t.byName[d.Topic]; !dup {
			t.byName[d.Topic] = d.ID
		}
	}
	return p
}

// topic returns the topic name of a predefined id for a client ("" for a client
// not connected): its own first, then the global ones.
func (p *predefined) topic(clientID string, id uint16) (string, bool) {
	if t := p.perClient[clientID]; t != nil {
		if name, ok := t.byID[id]; ok {
			return name, true
		}
	}
	name, ok := p.global.byID[id]
	return name, ok
}

// id returns the predefined id of a topic name for a client.
func (p *predefined) id(clientID, name string) (uint16, bool) {
	if t := p.perClient[clientID]; t != nil {
		if id, ok := t.byName[name]; ok {
			return id, true
		}
	}
	id, ok := p.global.byName[name]
	return id, ok
}

// --- names ---

// checkTopicName reports why s cannot be a topic to publish to (MQTT 3.1.1 §4.7).
func checkTopicName(s string) error {
	switch {
	case s == "":
		return errors.New("empty topic name")
	case strings.ContainsAny(s, "+#"):
		return fmt.Errorf("topic name %q contains a wildcard", s)
	case strings.ContainsRune(s, 0) || !utf8.ValidString(s):
		return fmt.Errorf("topic name %q contains NUL or is not UTF-8", s)
	}
	return nil
}

func isWildcard(filter string) bool { return strings.ContainsAny(filter, "+#") }

// checkClientID applies MQTT-SN 1.2 §5.3.1: 1 to 23 octets; and UTF-8 without
// NUL, since the id names the device in logs, topics and ACLs.
func checkClientID(id string) error {
	switch {
	case id == "":
		return errors.New("empty client id")
	case len(id) > mqttsn.ClientIDMaxLen:
		return fmt.Errorf("client id of %d octets: at most %d", len(id), mqttsn.ClientIDMaxLen)
	case strings.ContainsRune(id, 0) || !utf8.ValidString(id):
		return errors.New("client id contains NUL or is not UTF-8")
	}
	return nil
}

// qosByte maps an MQTT-SN QoS to MQTT's: -1 is published at 0.
func qosByte(q mqttsn.QoS) byte {
	if q <= 0 {
		return 0
	}
	return byte(q)
}
