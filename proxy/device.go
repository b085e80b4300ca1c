package proxy

// Transparent mode: one MQTT connection per device, made with the device's own
// client id, credentials, clean-session flag and will, so that the broker enforces
// its own ACLs, publishes the device's will natively when the connection dies, and
// holds a persistent device's subscriptions and queued QoS 1 messages while it is
// away.
//
// Goroutines: while a DeviceConn is connected, paho runs its connection goroutines
// (ten in paho v1.5.1: reader, writer, keepalive, router and plumbing). Between
// connections nothing runs: a reconnect waits on a timer, and one goroutine makes
// each reconnect attempt. Close stops the timer, waits for an attempt in progress
// and for paho's goroutines, then returns.
//
// Lock order: DeviceConn.mu, then link.mu. Neither is held across network I/O or a
// call into paho that may block.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/metrics"
)

// DeviceOptions is one device's own broker connection (transparent mode).
type DeviceOptions struct {
	// ClientID, Username and Password are the device's identity at the broker.
	ClientID, Username, Password string
	// CleanSession false asks the broker to keep the device's subscriptions and
	// queue its QoS 1 and 2 messages while it is away (MQTT 3.1.1 §3.1.2.4).
	CleanSession bool
	// Keepalive is the MQTT keep alive (default: the Proxy's). The broker closes the
	// connection, and publishes the will, after 1.5 keepalives of silence
	// (MQTT 3.1.1 §3.1.2.10), so it also bounds how long a dead gateway machine
	// goes unnoticed.
	Keepalive time.Duration
	// Will is published by the broker when the connection ends without DISCONNECT
	// (Close(false), a crash of the gateway, a network failure); nil: none.
	Will *Message
	// OnMessage receives the messages of this device's subscriptions, once per
	// PUBLISH, in the broker's order, on paho's delivery goroutine; it must not
	// block. A QoS 1 message is acknowledged to the broker after OnMessage returns.
	// With CleanSession false, messages the broker held may arrive before
	// DialDevice returns.
	OnMessage func(Message)
	// OnLost is told, on a goroutine of its own, that the connection dropped (not
	// by Close); err wraps ErrUnavailable and the DeviceConn reconnects by itself.
	// When the broker refuses a reconnect, OnLost is called once more with an error
	// wrapping ErrRefused and the DeviceConn gives up: the gateway should Close it
	// and end the device's session. OnLost may call Close. May be nil.
	OnLost func(err error)
}

// ConnackCode is a CONNACK return code (MQTT 3.1.1 §3.2.2.3); the refusals
// satisfy error.
type ConnackCode byte

// CONNACK return codes, MQTT 3.1.1 §3.2.2.3 Table 3.1.
const (
	ConnAccepted            ConnackCode = packets.Accepted
	ConnBadProtocolVersion  ConnackCode = packets.ErrRefusedBadProtocolVersion
	ConnIdentifierRejected  ConnackCode = packets.ErrRefusedIDRejected
	ConnServerUnavailable   ConnackCode = packets.ErrRefusedServerUnavailable
	ConnBadUsernamePassword ConnackCode = packets.ErrRefusedBadUsernameOrPassword
	ConnNotAuthorized       ConnackCode = packets.ErrRefusedNotAuthorised
)

func (c ConnackCode) String() string {
	switch c {
	case ConnAccepted:
		return "accepted"
	case ConnBadProtocolVersion:
		return "unacceptable protocol version"
	case ConnIdentifierRejected:
		return "identifier rejected"
	case ConnServerUnavailable:
		return "server unavailable"
	case ConnBadUsernamePassword:
		return "bad user name or password"
	case ConnNotAuthorized:
		return "not authorized"
	}
	return fmt.Sprintf("return code %d", byte(c))
}

func (c ConnackCode) Error() string { return c.String() }

// subackFailure is the SUBACK return code of a refused filter (MQTT 3.1.1 §3.9.3).
const subackFailure = 0x80

// closeQuiesce bounds how long a graceful Close waits for DISCONNECT to be written.
const closeQuiesce = 250 * time.Millisecond

// DeviceConn is one device's connection to the broker. Its methods are safe for
// concurrent use; the device's engine normally calls them one at a time.
type DeviceConn struct {
	p              *Proxy
	o              DeviceOptions
	url            *url.URL
	m              *deviceMetrics
	sessionPresent bool // of the first CONNACK

	attempts sync.WaitGroup // the reconnect attempt in progress, if any

	mu       sync.Mutex      // guards the fields below
	cur      *link           // the connection when up, else nil
	trying   *link           // the reconnect attempt in progress, if any
	timer    *time.Timer     // the next reconnect attempt, if scheduled
	backoff  time.Duration   // the last reconnect delay's upper bound; 0 after a lasting connection
	subs     map[string]byte // filter → requested QoS, restored when the broker lost them
	closed   bool
	graceful bool // Close's argument, for an attempt that succeeds while closing
	refused  bool // the broker refused a reconnect: given up
}

// link is one network connection of a device, with a paho client that lives for
// exactly that connection: a reconnect makes a new one, so no paho state (message
// ids, tokens of a dead connection, its backoff) outlives the connection.
type link struct {
	client paho.Client
	upAt   time.Time // set before the link is shared

	lost     chan struct{} // closed when paho reported the connection lost
	lostOnce sync.Once
	q2       qos2Window    // QoS 2 publishes in flight on this connection
	stopped  chan struct{} // closed when paho's connection goroutines have stopped
	stopOnce sync.Once
	endOnce  sync.Once // counts the end of an accepted connection once

	mu         sync.Mutex         // guards the fields below
	raw        net.Conn           // the TCP (or WebSocket) connection beneath TLS
	dialCancel context.CancelFunc // while open dials
	aborted    bool
}

// DialDevice connects one device to the same broker (URL, TLS, timeouts) as p and
// returns once the broker accepted it (CONNACK 0), refused it (an error wrapping
// ErrRefused and the ConnackCode: bad user name or password, not authorized,
// identifier rejected, unacceptable protocol version), or did not answer within
// the connect timeout or ctx (an error wrapping ErrUnavailable; CONNACK 3, server
// unavailable, and a connection lost right after its CONNACK are ones too).
//
// The connection is the device's own and independent of p's: after a loss it
// reconnects with jittered exponential backoff (Options.ReconnectMin to
// ReconnectMax) until Close, and restores the subscriptions made through it when
// the broker no longer has them (always for a clean session; for a persistent one
// when the CONNACK says no session is present, e.g. after a broker restart without
// persistence). Publishes are never resent by the DeviceConn: the device
// retransmits what was not acknowledged. One DeviceConn per client id: a second
// connection with the same id makes the broker drop the first (MQTT 3.1.1
// §3.1.4), which then reconnects and drops the second, so Close the old one first.
// The gateway closes its DeviceConns before p.
func (p *Proxy) DialDevice(ctx context.Context, o DeviceOptions) (*DeviceConn, error) {
	p.mu.Lock()
	closing := p.closing
	p.mu.Unlock()
	if closing {
		return nil, ErrClosed
	}
	if o.Keepalive <= 0 {
		o.Keepalive = p.opts.Keepalive
	}
	u, err := p.deviceURL()
	if err != nil {
		return nil, fmt.Errorf("proxy: device %q: %w", o.ClientID, err)
	}
	d := &DeviceConn{p: p, o: o, url: u, m: p.deviceMetrics()}
	l := d.newLink()
	sp, err := d.connect(ctx, l)
	if err != nil {
		return nil, err
	}
	d.sessionPresent = sp
	d.mu.Lock()
	_, lost := d.installLocked(l, sp) // no subscriptions to restore yet
	d.mu.Unlock()
	if lost { // paho's goroutines have stopped and the end is counted
		return nil, fmt.Errorf("proxy: device %q: connection lost after CONNACK: %w", o.ClientID, ErrUnavailable)
	}
	return d, nil
}

// deviceURL is the broker URL devices connect to: p's, or its embedded broker's.
func (p *Proxy) deviceURL() (*url.URL, error) {
	s := p.opts.URL
	if s == "embedded" {
		addr := p.EmbeddedAddr()
		if addr == "" {
			return nil, fmt.Errorf("embedded broker not started: %w", ErrUnavailable)
		}
		s = "tcp://" + addr
	}
	return url.Parse(normalizeScheme(s))
}

// deviceMetrics are the series shared by every DeviceConn of a registry.
type deviceMetrics struct {
	accepted, refused, unavailable, ended *metrics.Counter
}

func (p *Proxy) deviceMetrics() *deviceMetrics {
	r := p.opts.Metrics
	const connects = "mqttgw_upstream_device_connects_total"
	const help = "Connection attempts of transparent devices (reconnects included), by outcome."
	m := &deviceMetrics{
		accepted:    r.Counter(connects, help, "outcome", "accepted"),
		refused:     r.Counter(connects, help, "outcome", "refused"),
		unavailable: r.Counter(connects, help, "outcome", "unavailable"),
		ended:       r.Counter("mqttgw_upstream_device_disconnects_total", "Accepted transparent device connections that ended (lost or closed)."),
	}
	// Registered once per registry: the first DeviceConn's counters are every
	// DeviceConn's, as the registry returns one series per name and labels.
	r.GaugeFunc("mqttgw_upstream_device_connections", "Transparent device connections to the broker now up.", func() float64 {
		// A loss may be counted just before its acceptance: never below zero.
		ended := m.ended.Value()
		return float64(m.accepted.Value() - min(ended, m.accepted.Value()))
	})
	return m
}

func (d *DeviceConn) newLink() *link {
	return &link{lost: make(chan struct{}), stopped: make(chan struct{}), q2: make(qos2Window, d.p.opts.MaxInflightQoS2)}
}

// connect makes l's MQTT connection and waits for the CONNACK, the connect
// timeout (paho bounds the dial and the handshake with it) or ctx. It counts the
// outcome and returns the CONNACK's session-present flag.
func (d *DeviceConn) connect(ctx context.Context, l *link) (sessionPresent bool, err error) {
	p := d.p
	o := paho.NewClientOptions()
	o.Servers = []*url.URL{d.url}
	o.SetClientID(d.o.ClientID).
		SetUsername(d.o.Username).
		SetPassword(d.o.Password).
		SetCleanSession(d.o.CleanSession).
		SetProtocolVersion(4). // MQTT 3.1.1 only: no second CONNECT as 3.1 after a refusal
		SetKeepAlive(d.o.Keepalive).
		SetConnectTimeout(p.opts.ConnectTimeout).
		SetWriteTimeout(p.opts.PublishTimeout).
		SetAutoReconnect(false). // the DeviceConn reconnects, with a fresh client
		SetConnectRetry(false).
		SetStore(linkStore{l}).
		SetOrderMatters(true). // OnMessage in broker order
		SetConnectionLostHandler(func(_ paho.Client, err error) { d.onLost(l, err) }).
		SetCustomOpenConnectionFn(l.open)
	// Defaults that open does not use, kept by every client otherwise.
	o.HTTPHeaders, o.WebsocketOptions, o.Dialer = nil, nil, nil
	if p.opts.TLS != nil {
		o.SetTLSConfig(p.opts.TLS)
	}
	if w := d.o.Will; w != nil {
		o.SetBinaryWill(w.Topic, w.Payload, w.QoS, w.Retain)
	}
	if on := d.o.OnMessage; on != nil {
		o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			on(Message{Topic: m.Topic(), Payload: m.Payload(), QoS: m.Qos(), Retain: m.Retained()})
		})
	}
	l.client = paho.NewClient(o)
	tok := l.client.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		l.abort()
		<-tok.Done() // soon: the connection is closed
	}
	if err := tok.Error(); err != nil {
		rc := ConnackCode(tok.(*paho.ConnectToken).ReturnCode())
		switch rc {
		case ConnBadProtocolVersion, ConnIdentifierRejected, ConnBadUsernamePassword, ConnNotAuthorized:
			d.m.refused.Inc()
			return false, fmt.Errorf("proxy: device %q: %w: %w", d.o.ClientID, ErrRefused, rc)
		case ConnServerUnavailable:
			d.m.unavailable.Inc()
			return false, fmt.Errorf("proxy: device %q: %w: %w", d.o.ClientID, ErrUnavailable, rc)
		}
		d.m.unavailable.Inc()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return false, fmt.Errorf("proxy: device %q: connect: %w: %w", d.o.ClientID, ErrUnavailable, err)
	}
	d.m.accepted.Inc()
	l.upAt = time.Now()
	if ctx.Err() != nil { // accepted as ctx ended: nobody will use it
		l.close(true)
		l.end(d.m)
		return false, fmt.Errorf("proxy: device %q: connect: %w: %w", d.o.ClientID, ErrUnavailable, ctx.Err())
	}
	return tok.(*paho.ConnectToken).SessionPresent(), nil
}

// installLocked makes an accepted link the current connection and returns the
// subscriptions to restore: all of them for a clean session, none when the
// broker kept the session. It reports a link that paho lost already (onLost
// found it not current and left it to the caller).
func (d *DeviceConn) installLocked(l *link, sessionPresent bool) (restore map[string]byte, lost bool) {
	select {
	case <-l.lost:
		return nil, true
	default:
	}
	d.cur = l
	if (d.o.CleanSession || !sessionPresent) && len(d.subs) > 0 {
		restore = make(map[string]byte, len(d.subs))
		for f, q := range d.subs {
			restore[f] = q
		}
	}
	return restore, false
}

// onLost runs on paho's goroutine for a lost connection, after paho stopped its
// connection goroutines.
func (d *DeviceConn) onLost(l *link, err error) {
	l.lostOnce.Do(func() { close(l.lost) })
	l.markStopped()
	l.end(d.m)
	d.mu.Lock()
	if d.cur != l || d.closed {
		d.mu.Unlock()
		return // closing, or install will see l.lost
	}
	d.cur = nil
	if time.Since(l.upAt) >= d.p.opts.ReconnectMax {
		d.backoff = 0 // it lasted: start again from ReconnectMin
	}
	d.scheduleLocked()
	cb := d.o.OnLost
	d.mu.Unlock()
	d.p.log.Debug("device connection lost; reconnecting", zap.String("device", d.o.ClientID), zap.Error(err))
	if cb != nil {
		cb(fmt.Errorf("proxy: device %q: connection lost: %w: %w", d.o.ClientID, ErrUnavailable, err))
	}
}

// scheduleLocked arms the next reconnect attempt: a delay drawn from the upper
// half of a bound that doubles from ReconnectMin to ReconnectMax, so that
// devices dropped together by a broker restart do not come back together.
func (d *DeviceConn) scheduleLocked() {
	if d.closed || d.refused {
		return
	}
	d.backoff = min(max(2*d.backoff, d.p.opts.ReconnectMin), d.p.opts.ReconnectMax)
	half := d.backoff / 2
	d.timer = time.AfterFunc(half+rand.N(half+1), d.reconnect)
}

// reconnect makes one attempt on the timer's goroutine.
func (d *DeviceConn) reconnect() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.timer = nil
	d.attempts.Add(1) // under mu, before Close (which sets closed under mu) waits
	l := d.newLink()
	d.trying = l
	d.mu.Unlock()

	cb, err := d.attempt(l)
	d.attempts.Done()
	if cb != nil {
		cb(err) // after Done: OnLost may call Close
	}
}

func (d *DeviceConn) attempt(l *link) (onLost func(error), err error) {
	sp, err := d.connect(context.Background(), l)
	d.mu.Lock()
	d.trying = nil
	switch {
	case d.closed:
		graceful := d.graceful
		d.mu.Unlock()
		if err == nil {
			l.close(graceful)
			l.end(d.m)
		}
		return nil, nil
	case errors.Is(err, ErrRefused):
		d.refused = true
		d.mu.Unlock()
		return d.o.OnLost, err
	case err != nil:
		d.scheduleLocked()
		d.mu.Unlock()
		return nil, nil
	}
	restore, lost := d.installLocked(l, sp) // under the lock that saw closed false: Close will find it
	if lost {
		d.scheduleLocked()
		d.mu.Unlock()
		return d.o.OnLost, fmt.Errorf("proxy: device %q: connection lost after CONNACK: %w", d.o.ClientID, ErrUnavailable)
	}
	d.mu.Unlock()
	d.p.log.Debug("device reconnected", zap.String("device", d.o.ClientID), zap.Bool("session_present", sp))
	if len(restore) > 0 {
		d.restore(l, restore)
	}
	return nil, nil
}

// restore subscribes again, in one SUBSCRIBE, to filters the broker forgot; a
// filter it now refuses is forgotten.
func (d *DeviceConn) restore(l *link, subs map[string]byte) {
	tok := l.client.SubscribeMultiple(subs, nil)
	if err := d.wait(context.Background(), l, tok); err != nil {
		d.mu.Lock()
		closed := d.closed
		d.mu.Unlock()
		if closed {
			return
		}
		d.p.log.Warn("device subscriptions not restored; the device must subscribe again", zap.String("device", d.o.ClientID), zap.Error(err))
		return
	}
	for f, code := range tok.(*paho.SubscribeToken).Result() {
		if code != subackFailure {
			continue
		}
		d.mu.Lock()
		delete(d.subs, f)
		d.mu.Unlock()
		d.p.log.Warn("broker refused a restored device subscription", zap.String("device", d.o.ClientID), zap.String("filter", f))
	}
}

// current returns the connection when it is up.
func (d *DeviceConn) current() (*link, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.closed:
		return nil, ErrClosed
	case d.cur == nil:
		return nil, ErrUnavailable
	}
	return d.cur, nil
}

// Connected reports whether the device's connection is up.
func (d *DeviceConn) Connected() bool {
	_, err := d.current()
	return err == nil
}

// SessionPresent is the first CONNACK's session-present flag: false when a
// persistent device's session was not found (MQTT 3.1.1 §3.2.2.2), so its
// subscriptions are gone.
func (d *DeviceConn) SessionPresent() bool { return d.sessionPresent }

// Publish sends m with the device's identity. For QoS >= 1 it returns after the
// broker's acknowledgement (an ACL-denied topic is acknowledged and dropped by
// MQTT 3.1.1 brokers: a device cannot tell); it fails with an error wrapping
// ErrUnavailable when the connection is down, drops before the acknowledgement, or
// none arrives within publish_timeout (then it also wraps ErrTimeout), and with
// ErrClosed after Close. It does not resend: the device does.
func (d *DeviceConn) Publish(ctx context.Context, m Message) error {
	l, err := d.current()
	if err != nil {
		return fmt.Errorf("proxy: device %q: publish %q: %w", d.o.ClientID, m.Topic, err)
	}
	if m.QoS == 2 {
		ok, err := l.q2.take(ctx, l.lost, nil)
		if !ok && err == nil {
			err = fmt.Errorf("%w: connection lost", ErrUnavailable)
		}
		if err != nil {
			return fmt.Errorf("proxy: device %q: publish %q: %w", d.o.ClientID, m.Topic, err)
		}
	}
	tok := l.client.Publish(m.Topic, m.QoS, m.Retain, m.Payload)
	if m.QoS == 0 {
		return nil
	}
	if m.QoS == 2 {
		l.q2.freeWhenDone(tok, l.lost)
	}
	if err := d.wait(ctx, l, tok); err != nil {
		return fmt.Errorf("proxy: device %q: publish %q: %w", d.o.ClientID, m.Topic, err)
	}
	return nil
}

// wait waits for tok, publish_timeout, the loss of l, or ctx.
func (d *DeviceConn) wait(ctx context.Context, l *link, tok paho.Token) error {
	t := time.NewTimer(d.p.opts.PublishTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return nil
	case <-l.lost:
		return fmt.Errorf("%w: connection lost", ErrUnavailable)
	case <-t.C:
		return fmt.Errorf("%w: %w", ErrUnavailable, ErrTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Subscribe subscribes the device to filter and returns the QoS the broker
// granted. A refusal (SUBACK 0x80: Mosquitto answers it for a filter the ACL
// denies) is an error wrapping ErrForbidden; a connection that is down, or drops,
// or no SUBACK within publish_timeout, an error wrapping ErrUnavailable. The
// filter is restored after a reconnect when the broker has forgotten it (also
// when its SUBSCRIBE failed for unavailability: the device's retry is harmless).
func (d *DeviceConn) Subscribe(ctx context.Context, filter string, qos byte) (granted byte, err error) {
	l, err := d.current()
	if err != nil {
		return 0, fmt.Errorf("proxy: device %q: subscribe %q: %w", d.o.ClientID, filter, err)
	}
	// Recorded first, so that a reconnect between the SUBSCRIBE and its SUBACK
	// restores it; a refusal removes it.
	d.mu.Lock()
	if d.subs == nil {
		d.subs = map[string]byte{}
	}
	d.subs[filter] = qos
	d.mu.Unlock()
	tok := l.client.Subscribe(filter, qos, nil)
	if err := d.wait(ctx, l, tok); err != nil {
		return 0, fmt.Errorf("proxy: device %q: subscribe %q: %w", d.o.ClientID, filter, err)
	}
	// One filter, one return code; paho keys it by the filter without a $share/ prefix.
	granted = subackFailure
	for _, code := range tok.(*paho.SubscribeToken).Result() {
		granted = code
	}
	if granted == subackFailure {
		d.mu.Lock()
		if d.subs[filter] == qos {
			delete(d.subs, filter)
		}
		d.mu.Unlock()
		return granted, fmt.Errorf("proxy: device %q: subscribe %q: %w", d.o.ClientID, filter, ErrForbidden)
	}
	return granted, nil
}

// Unsubscribe unsubscribes the device from filter. While the connection is down
// it forgets the filter and, for a persistent session (which the broker still
// holds), fails with an error wrapping ErrUnavailable so that the device retries.
func (d *DeviceConn) Unsubscribe(ctx context.Context, filter string) error {
	d.mu.Lock()
	delete(d.subs, filter)
	d.mu.Unlock()
	l, err := d.current()
	if errors.Is(err, ErrUnavailable) && d.o.CleanSession {
		return nil // the broker forgot the session; a reconnect will not restore filter
	}
	if err != nil {
		return fmt.Errorf("proxy: device %q: unsubscribe %q: %w", d.o.ClientID, filter, err)
	}
	if err := d.wait(ctx, l, l.client.Unsubscribe(filter)); err != nil {
		return fmt.Errorf("proxy: device %q: unsubscribe %q: %w", d.o.ClientID, filter, err)
	}
	return nil
}

// Close ends the device's connection and its reconnects, and returns after its
// goroutines have exited. graceful sends DISCONNECT, so the broker discards the
// will (MQTT 3.1.1 §3.14.4): the device left. Otherwise the TCP connection is
// dropped without DISCONNECT, so the broker publishes the will (§3.1.2.5): the
// device's session was lost. A persistent session stays on the broker either way.
// Close is idempotent.
func (d *DeviceConn) Close(graceful bool) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed, d.graceful = true, graceful
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	l, trying := d.cur, d.trying
	d.cur = nil
	d.mu.Unlock()
	if trying != nil {
		trying.abort() // the attempt closes its link if it was accepted all the same
	}
	if l != nil {
		l.close(graceful) // first: an attempt may be restoring subscriptions on it
		l.end(d.m)
	}
	d.attempts.Wait()
}

// close ends an accepted connection and waits for paho's goroutines.
func (l *link) close(graceful bool) {
	if !graceful {
		l.abort() // no DISCONNECT can reach the broker now
	}
	l.client.Disconnect(uint(closeQuiesce / time.Millisecond))
	t := time.NewTimer(closeQuiesce + time.Second)
	defer t.Stop()
	select {
	case <-l.stopped:
	case <-t.C: // paho still stopping; its goroutines end on the closed connection
	}
}

// end counts the end of an accepted connection, once.
func (l *link) end(m *deviceMetrics) { l.endOnce.Do(m.ended.Inc) }

func (l *link) markStopped() { l.stopOnce.Do(func() { close(l.stopped) }) }

// abort cancels the dial and closes the network connection beneath paho (and
// beneath TLS: no close_notify), without DISCONNECT.
func (l *link) abort() {
	l.mu.Lock()
	l.aborted = true
	raw, cancel := l.raw, l.dialCancel
	l.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if raw != nil {
		_ = raw.Close()
	}
}

// open is paho's connection function: it dials like paho (tcp, ssl, ws, wss)
// but keeps the connection beneath TLS so that abort can drop it.
func (l *link) open(u *url.URL, o paho.ClientOptions) (net.Conn, error) {
	// A context for the dial only: a link keeps none (a done channel and a
	// children map would stay allocated for every device).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l.mu.Lock()
	if l.aborted {
		l.mu.Unlock()
		return nil, net.ErrClosed
	}
	l.dialCancel = cancel
	l.mu.Unlock()

	dialer := &net.Dialer{Timeout: o.ConnectTimeout}
	var conn, raw net.Conn
	var err error
	switch u.Scheme {
	case "tcp", "mqtt":
		raw, err = dialer.DialContext(ctx, "tcp", u.Host)
		conn = raw
	case "ssl", "tls", "mqtts", "mqtt+ssl", "tcps":
		raw, err = dialer.DialContext(ctx, "tcp", u.Host)
		if err == nil {
			cfg := &tls.Config{}
			if o.TLSConfig != nil {
				cfg = o.TLSConfig.Clone()
			}
			if cfg.ServerName == "" {
				cfg.ServerName = u.Hostname()
			}
			tc := tls.Client(raw, cfg)
			hctx, hcancel := context.WithTimeout(ctx, o.ConnectTimeout)
			err = tc.HandshakeContext(hctx)
			hcancel()
			if err != nil {
				raw.Close()
			}
			conn = tc
		}
	case "ws", "wss":
		ws := *u
		ws.User = nil
		var tlsc *tls.Config
		if u.Scheme == "wss" {
			tlsc = o.TLSConfig
		}
		conn, err = paho.NewWebsocket(ws.String(), tlsc, o.ConnectTimeout, o.HTTPHeaders, o.WebsocketOptions)
		raw = conn
	default:
		err = fmt.Errorf("unsupported scheme %q", u.Scheme)
	}
	l.mu.Lock()
	l.dialCancel = nil
	aborted := l.aborted
	if err == nil && !aborted {
		l.raw = raw
	}
	l.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if aborted {
		raw.Close()
		return nil, net.ErrClosed
	}
	return conn, nil
}

// linkStore is a paho Store that keeps nothing (see noStore: the device
// retransmits, not paho) and tells its link when paho has stopped: paho closes
// its store once its connection goroutines have exited after Disconnect, or when
// a connection attempt failed.
type linkStore struct{ l *link }

func (linkStore) Open()                             {}
func (linkStore) Put(string, packets.ControlPacket) {}
func (linkStore) Get(string) packets.ControlPacket  { return nil }
func (linkStore) All() []string                     { return nil }
func (linkStore) Del(string)                        {}
func (s linkStore) Close()                          { s.l.markStopped() }
func (linkStore) Reset()                            {}
