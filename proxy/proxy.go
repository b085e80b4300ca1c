// Package proxy is the upstream side of the gateway: one MQTT connection to the
// broker (or to the embedded broker it starts), the gateway's retained status topic
// and last will, subscriptions that survive reconnects, and a bounded
// store-and-forward queue for publishes nobody waits on. It is the only importer of
// paho and of the embedded broker.
//
// With Options.Store the store-and-forward queue of QoS >= 1 publishes is durable
// (issue 10, durable.go): a device's publish is acknowledged once the broker or the
// store holds it, and what the store holds is replayed in order after every
// (re)connect and after a restart.
//
// Goroutines: Start starts paho's own, one sender and one acknowledger for the queue,
// and with a store one spooler that writes Enqueue's QoS >= 1 messages to it (plus,
// while it writes a batch, one short-lived goroutine per device or topic in the
// batch); Close stops them all and returns after they exit. Publish and Enqueue are
// safe for concurrent use; Enqueue never blocks, Publish never blocks on the network
// beyond its context and publish_timeout (with a store, plus one commit of the
// store). Subscription handlers run on paho's delivery goroutine, in order, and must
// not block.
//
// Locks: Proxy.mu is a leaf: never held across a paho call that can block, a call
// into the store, or a channel operation that can block.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/metrics"
	"github.com/mqttgw/mqttgw/store"
)

// Message is one MQTT publish, to or from the broker.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	// Listener and Device say whose uplink it is, when the caller knows: they
	// are kept with the message in the durable store, and Enqueue keeps the
	// order of one device's messages by them (else by topic). Optional; unused
	// for messages from the broker.
	Listener, Device string
}

// OrderKey is what a message keeps its order within: its device's messages
// (Listener and Device), or without a Device its topic's. Messages of one key
// are published one after the other; different keys may go in parallel.
func OrderKey(listener, device, topic string) string {
	if device != "" {
		return listener + "\x00\x00" + device
	}
	return "\x00" + topic
}

// Options configure a Proxy; zero durations take the defaults below.
type Options struct {
	// URL is tcp://, ssl:// (tls://, mqtts://), ws://, wss:// or "embedded".
	URL            string
	ClientID       string
	Username       string
	Password       string
	Keepalive      time.Duration
	ConnectTimeout time.Duration
	PublishTimeout time.Duration
	ReconnectMin   time.Duration
	ReconnectMax   time.Duration
	TLS            *tls.Config
	// StatusTopic gets retained "online" on every connect; its last will is
	// retained "offline", and Close publishes "offline" before disconnecting.
	StatusTopic string
	// EmbeddedListen is where the embedded broker listens when URL is "embedded".
	EmbeddedListen string
	// EmbeddedAuth decides which MQTT clients the embedded broker takes, from
	// their CONNECT's username and password (both "" for an anonymous client);
	// nil takes every client. It is called for each CONNECT, so it may read
	// files that change. The gateway's own connection is not asked: it proves
	// itself with a secret made at Start (Username, or "mqttgw", and the
	// secret as password; Password is not used with the embedded broker).
	EmbeddedAuth func(remote netip.Addr, user, password string) bool
	// EmbeddedACL decides what the embedded broker's clients may publish
	// (write) and subscribe to (read: topic is the filter, and every delivered
	// message's topic is asked again); nil allows all. The gateway's own
	// connection is not asked, and no other client may publish to StatusTopic
	// whatever it answers.
	EmbeddedACL func(clientID, user, topic string, write bool) bool
	// QueueSize (default 10000 messages) and QueueBytes (default 64 MiB of topics
	// and payloads) bound the store-and-forward queue; when either is reached the
	// oldest messages are dropped and counted. Bytes matter: 10000 datagrams of
	// 60 KB would otherwise hold 600 MB while the broker is away.
	QueueSize  int
	QueueBytes int
	// Window bounds queued publishes awaiting the broker's acknowledgement (default 256).
	Window int
	// MaxInflightQoS2 bounds the QoS 2 publishes in flight on the connection
	// (default DefaultMaxInflightQoS2): no more than the broker takes at once
	// (Mosquitto's max_inflight_messages), or it drops the excess while
	// acknowledging it (qos2Window).
	MaxInflightQoS2 int
	// Store, when set, is the durable store-and-forward queue (issue 10; the
	// gateway's [store]): QoS >= 1 publishes that Publish cannot hand to the
	// broker at once, and every QoS >= 1 message of Enqueue, are appended to it
	// and replayed from it in order, each removed once the broker acknowledged
	// it; what it holds at Start (left by a crash or a stop) is replayed too.
	// QueueSize and QueueBytes then bound only the QoS 0 messages and the
	// messages on their way into the store. The caller opens it before New and
	// closes it after Close. Nil: the queue lives in memory only.
	Store store.Queue
	// OnMessage receives every message of every subscription, once per PUBLISH the
	// broker sends, on paho's delivery goroutine, in order; it must not block. The
	// gateway fans messages out to devices itself (one MQTT subscription per filter,
	// however many devices share it).
	OnMessage func(Message)
	Logger    *zap.Logger
	Metrics   *metrics.Registry
}

// Proxy is the gateway's connection to the broker.
type Proxy struct {
	opts     Options
	log      *zap.Logger
	client   paho.Client
	embedded *embedded
	url      string // the broker's, as paho dials it; set by Start

	connectDone chan struct{} // closed when connectLoop has returned
	retryNow    chan struct{} // Close: make the next connect attempt at once

	q store.Queue // Options.Store; nil without one

	mu        sync.Mutex      // guards the fields below
	subs      map[string]byte // filter → QoS, restored on reconnect
	connected chan struct{}   // closed while connected; replaced on loss
	lost      chan struct{}   // closed when the current connection is lost; replaced on connect
	q2        qos2Window      // the current connection's QoS 2 window; replaced on connect
	queue     deque
	queueWake chan struct{} // signalled (non-blocking) when the queue or connection changes
	unacked   int           // popped from the queue, not yet acknowledged or put back
	closing   bool
	state     connState
	// With a store (durable.go):
	spool     deque         // Enqueue's QoS >= 1 messages on their way into the store
	spooling  int           // taken from spool by the spooler, being appended
	spoolWake chan struct{} // signalled (non-blocking) when spool grows
	sent      int           // store messages published and not settled by acker (acknowledged and removed, or failed)
	rewind    bool          // a store message failed: replay from the start once sent is 0

	syncInflight sync.WaitGroup // Publish calls awaiting an acknowledgement
	inflight     chan pending   // queued publishes sent, awaiting acknowledgement
	done         chan struct{}  // closed when sender and acker have exited
	spoolDone    chan struct{}  // closed when the spooler has exited (or was never started)
	stop         chan struct{}  // closed by Close to end the sender

	m struct {
		published, failed, unavailable, dropped, requeued *metrics.Counter
		connectFailures                                   *metrics.Counter
		stored                                            *metrics.Counter
		packetsWritten, socketWrites                      *metrics.Counter // batchConn
		up                                                *metrics.Gauge
	}
	warned warnLimiter // store problems, logged at most every storeWarnEvery
}

// pending is a queued publish sent to the broker. seq is its place in the
// store (0: from the memory queue, msg then holds it); lost is the connection's
// lost channel at the time it was sent.
type pending struct {
	msg  Message
	tok  paho.Token
	seq  uint64
	lost chan struct{}
}

// New checks the options; nothing connects until Start.
func New(o Options) (*Proxy, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New()
	}
	setDefault(&o.Keepalive, 30*time.Second)
	setDefault(&o.ConnectTimeout, 10*time.Second)
	setDefault(&o.PublishTimeout, 10*time.Second)
	setDefault(&o.ReconnectMin, 500*time.Millisecond)
	setDefault(&o.ReconnectMax, 30*time.Second)
	if o.QueueSize <= 0 {
		o.QueueSize = 10000
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = 64 << 20
	}
	if o.MaxInflightQoS2 <= 0 {
		o.MaxInflightQoS2 = DefaultMaxInflightQoS2
	}
	if o.Window <= 0 {
		o.Window = 256
	}
	if o.URL != "embedded" {
		if _, err := url.Parse(o.URL); err != nil {
			return nil, fmt.Errorf("proxy: url %q: %w", o.URL, err)
		}
	}
	p := &Proxy{
		opts:      o,
		log:       o.Logger,
		q:         o.Store,
		subs:      map[string]byte{},
		connected: make(chan struct{}),
		lost:      make(chan struct{}),
		queueWake: make(chan struct{}, 1),
		spoolWake: make(chan struct{}, 1),
		inflight:  make(chan pending, o.Window),
		done:      make(chan struct{}),
		spoolDone: make(chan struct{}),
		stop:      make(chan struct{}),

		connectDone: make(chan struct{}),
		retryNow:    make(chan struct{}, 1),
	}
	r := o.Metrics
	p.m.published = r.Counter("mqttgw_upstream_published_total", "Publishes the broker acknowledged (QoS 0: written).")
	p.m.failed = r.Counter("mqttgw_upstream_publish_errors_total", "Publishes that failed or timed out.")
	p.m.unavailable = r.Counter("mqttgw_upstream_unavailable_total", "Publishes refused because the broker was not connected.")
	p.m.packetsWritten = r.Counter("mqttgw_upstream_packets_written_total", "MQTT packets written to the broker connection.")
	p.m.socketWrites = r.Counter("mqttgw_upstream_socket_writes_total", "Writes (system calls) that carried them: packets written while one is under way share the next.")
	p.m.dropped = r.Counter("mqttgw_upstream_queue_dropped_total", "Queued publishes dropped because the queue was full (oldest first).")
	p.m.requeued = r.Counter("mqttgw_upstream_queue_retried_total", "Queued publishes sent again after a failure.")
	p.m.connectFailures = r.Counter("mqttgw_upstream_connect_failures_total", "Connection attempts to the broker that failed.")
	p.m.up = r.Gauge("mqttgw_upstream_connected", "1 while connected to the broker.")
	p.m.stored = r.Counter("mqttgw_upstream_stored_total", "QoS >= 1 publishes written to the durable store, to be replayed to the broker.")
	r.GaugeFunc("mqttgw_upstream_queue_length", "Publishes waiting in the store-and-forward queue (with a durable store: in it, or on their way into it).", func() float64 {
		n, _ := p.queueLen()
		return float64(n)
	})
	r.GaugeFunc("mqttgw_upstream_queue_bytes", "Bytes of topics and payloads waiting in the store-and-forward queue (with a durable store: its record sizes).", func() float64 {
		_, b := p.queueLen()
		return float64(b)
	})
	return p, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

// Start starts the embedded broker when configured, then begins connecting in the
// background: it does not wait for the broker, which may come later.
func (p *Proxy) Start() error {
	brokerURL := p.opts.URL
	if brokerURL == "embedded" {
		e, err := startEmbedded(embeddedOptions{
			listen:      p.opts.EmbeddedListen,
			auth:        p.opts.EmbeddedAuth,
			acl:         p.opts.EmbeddedACL,
			statusTopic: p.opts.StatusTopic,
			clientID:    p.opts.ClientID,
			user:        p.opts.Username,
			log:         p.log.Named("embedded"),
		})
		if err != nil {
			return err
		}
		p.embedded = e
		brokerURL = "tcp://" + e.addr
		p.log.Info("embedded broker listening", zap.String("addr", e.addr), zap.Bool("password_check", p.opts.EmbeddedAuth != nil))
	}
	brokerURL = normalizeScheme(brokerURL)
	user, password := p.opts.Username, p.opts.Password
	if p.embedded != nil {
		user, password = p.embedded.user, p.embedded.secret
	}
	o := paho.NewClientOptions().
		AddBroker(brokerURL).
		SetClientID(p.opts.ClientID).
		SetUsername(user).
		SetPassword(password).
		SetKeepAlive(p.opts.Keepalive).
		SetConnectTimeout(p.opts.ConnectTimeout).
		SetWriteTimeout(p.opts.PublishTimeout).
		SetCleanSession(true). // the gateway's own queue redelivers, not paho's store
		SetStore(noStore{}).
		SetOrderMatters(true). // downlink messages reach devices in broker order
		SetAutoReconnect(true).
		SetConnectRetry(false). // connectLoop retries the first connection, with backoff
		SetMaxReconnectInterval(p.opts.ReconnectMax).
		SetOnConnectHandler(p.onConnect).
		SetConnectionLostHandler(p.onLost).
		SetConnectionNotificationHandler(p.onNotification)
	if batchWrites {
		o.SetCustomOpenConnectionFn(dialBatched(p.m.packetsWritten, p.m.socketWrites))
	}
	if p.opts.TLS != nil {
		o.SetTLSConfig(p.opts.TLS)
	}
	if p.opts.OnMessage != nil {
		// Subscriptions carry no per-filter handler, so paho calls this once per
		// message even when several filters match it.
		on := p.opts.OnMessage
		o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			on(Message{Topic: m.Topic(), Payload: m.Payload(), QoS: m.Qos(), Retain: m.Retained()})
		})
	}
	if p.opts.StatusTopic != "" {
		o.SetBinaryWill(p.opts.StatusTopic, []byte("offline"), 1, true)
	}
	p.url = brokerURL
	p.log.Info("connecting to broker", zap.String("url", redact(brokerURL)))
	p.setClient(paho.NewClient(o))
	if p.q != nil {
		if n, b := p.q.Len(); n > 0 {
			p.log.Info("durable store holds messages from before: replaying them once connected", zap.Int("messages", n), zap.Int64("bytes", b))
		}
		go p.spooler()
	} else {
		close(p.spoolDone)
	}
	go p.connectLoop(o)
	go p.sender()
	return nil
}

// normalizeScheme maps the URL schemes users know from Mosquitto tools onto paho's.
func normalizeScheme(u string) string {
	for _, s := range []string{"mqtts://", "tls://"} {
		if strings.HasPrefix(u, s) {
			return "ssl://" + strings.TrimPrefix(u, s)
		}
	}
	if strings.HasPrefix(u, "mqtt://") {
		return "tcp://" + strings.TrimPrefix(u, "mqtt://")
	}
	return u
}

func redact(u string) string {
	pu, err := url.Parse(u)
	if err != nil || pu.User == nil {
		return u
	}
	return pu.Redacted()
}

// EmbeddedAddr is the embedded broker's address, or "" when there is none.
func (p *Proxy) EmbeddedAddr() string {
	if p.embedded == nil {
		return ""
	}
	return p.embedded.addr
}

func (p *Proxy) onConnect(c paho.Client) {
	p.mu.Lock()
	subs := make(map[string]byte, len(p.subs))
	for f, q := range p.subs {
		subs[f] = q
	}
	p.mu.Unlock()
	// Say online and restore subscriptions before the queue may flush, so that a
	// watcher sees the gateway come back before the messages it held.
	if p.opts.StatusTopic != "" {
		c.Publish(p.opts.StatusTopic, 1, true, []byte("online"))
	}
	// A clean session forgets subscriptions: restore them (MQTT 3.1.1 §3.1.2.4).
	if len(subs) > 0 {
		c.SubscribeMultiple(subs, nil)
	}
	p.mu.Lock()
	select {
	case <-p.connected:
	default:
		p.lost = make(chan struct{})
		p.q2 = make(qos2Window, p.opts.MaxInflightQoS2)
		close(p.connected)
	}
	p.mu.Unlock()
	p.m.up.Set(1)
	p.markConnected(time.Now())
	p.log.Info("connected to broker")
	p.wake()
}

func (p *Proxy) onLost(_ paho.Client, err error) {
	p.mu.Lock()
	select {
	case <-p.connected:
		p.connected = make(chan struct{})
		close(p.lost)
	default:
	}
	p.mu.Unlock()
	p.m.up.Set(0)
	p.markLost(time.Now(), err)
}

// Connected reports whether the broker connection is up.
func (p *Proxy) Connected() bool {
	p.mu.Lock()
	c := p.client
	p.mu.Unlock()
	return c != nil && c.IsConnectionOpen()
}

// Publish sends m and, for QoS >= 1, waits for the broker's acknowledgement, so the
// caller can acknowledge its device only then. It fails fast with ErrUnavailable
// when the broker is not connected.
//
// With a store, a QoS >= 1 message goes to the broker at once only while it is
// connected and the store is empty; else (the broker away, or older messages
// still being replayed, which a device's newer message must not overtake), or
// when the broker does not acknowledge it, Publish returns nil once the store
// holds it durably. A full store (or a store error) is an error wrapping
// ErrUnavailable and the store's error (store.ErrFull, store.ErrTooLarge), and
// is counted.
func (p *Proxy) Publish(ctx context.Context, m Message) error {
	p.mu.Lock()
	closing := p.closing
	if !closing {
		p.syncInflight.Add(1)
	}
	p.mu.Unlock()
	if closing {
		return ErrClosed
	}
	defer p.syncInflight.Done()
	if p.q != nil && m.QoS > 0 {
		return p.publishDurable(ctx, m)
	}
	if !p.Connected() {
		p.m.unavailable.Inc()
		return ErrUnavailable
	}
	tok, err := p.publishPaho(ctx, m, false)
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			p.m.unavailable.Inc()
		}
		return fmt.Errorf("proxy: publish %q: %w", m.Topic, err)
	}
	if m.QoS == 0 {
		p.m.published.Inc()
		return nil
	}
	t := time.NewTimer(p.opts.PublishTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			p.m.failed.Inc()
			return fmt.Errorf("proxy: publish %q: %w", m.Topic, err)
		}
		p.m.published.Inc()
		return nil
	case <-t.C:
		p.m.failed.Inc()
		return fmt.Errorf("proxy: publish %q: %w", m.Topic, ErrTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Enqueue hands m to the store-and-forward queue for sources that nobody waits on
// (plain datagrams). QoS >= 1 messages stay queued until the broker acknowledges
// them, across reconnects; when the queue is full the oldest message is dropped and
// counted. It never blocks.
//
// With a store, QoS >= 1 messages go to the store, written in the background
// in order per device (per topic when m has no Device): one that the store
// refuses (full, too large) is dropped and counted by reason, as is one that
// finds QueueSize or QueueBytes of messages still waiting to be written (then
// Enqueue returns an error wrapping ErrUnavailable).
func (p *Proxy) Enqueue(m Message) error {
	if p.q != nil && m.QoS > 0 {
		return p.spoolMessage(m)
	}
	if m.QoS == 0 && p.publishQoS0(m) {
		return nil
	}
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return ErrClosed
	}
	dropped := 0
	for p.queue.len() > 0 && (p.queue.len() >= p.opts.QueueSize || p.queue.bytes+msgBytes(m) > p.opts.QueueBytes) {
		p.queue.popFront()
		dropped++
	}
	p.queue.pushBack(m)
	p.mu.Unlock()
	if dropped > 0 {
		p.m.dropped.Add(uint64(dropped))
	}
	p.wake()
	return nil
}

// publishQoS0 hands a QoS 0 message of Enqueue straight to the connection,
// and reports whether it did: while the broker is connected and nothing waits
// in the memory queue (whose messages go first), a QoS 0 message never sits
// behind QoS 1 messages awaiting acknowledgement in the drop-oldest queue,
// where a burst would push out most of itself (issue 11). When paho's
// writer falls behind, Publish blocks its caller (a listener's reader) up to
// the write timeout, so a burst the connection cannot carry is dropped at
// the socket, counted by the kernel (mqttgw_udp_kernel_drops_total), instead
// of in the queue.
func (p *Proxy) publishQoS0(m Message) bool {
	p.mu.Lock()
	connected := p.connected
	ok := !p.closing && p.queue.len() == 0
	p.mu.Unlock()
	if !ok {
		return false
	}
	select {
	case <-connected:
	default:
		return false
	}
	p.paho().Publish(m.Topic, 0, m.Retain, m.Payload)
	p.m.published.Inc()
	return true
}

func (p *Proxy) wake() {
	select {
	case p.queueWake <- struct{}{}:
	default:
	}
}

// sender publishes queued messages in order while connected, leaving the wait for
// acknowledgements to acker so that up to Window publishes are in flight at once.
// The memory queue goes first; with a store, the store's messages follow in
// sequence order (replay, durable.go).
func (p *Proxy) sender() {
	ackDone := make(chan struct{})
	go p.acker(ackDone)
	defer func() {
		close(p.inflight)
		<-ackDone
		close(p.done)
	}()
	var r replay
	for {
		p.mu.Lock()
		connected := p.connected
		p.mu.Unlock()
		select {
		case <-connected:
		case <-p.stop:
			return
		}
		// Pop under the same lock as the check: acker may push a retry to the front.
		// The lost channel is read now, after the wait: during an outage
		// p.lost is the old connection's, already closed, and a replay handed
		// it would take every message for failed and send them all again.
		p.mu.Lock()
		lost := p.lost
		m, ok := p.queue.front()
		if ok {
			p.queue.popFront()
			p.unacked++
		}
		replaying := !ok && p.q != nil && r.ready(p)
		p.mu.Unlock()
		if !ok {
			if replaying && p.replayBatch(&r, lost) {
				continue
			}
			select {
			case <-p.queueWake:
				continue
			case <-p.stop:
				return
			}
		}
		tok, err := p.publishPaho(context.Background(), m, true)
		if err != nil { // Close gave up: the message stays queued, as the rest
			p.mu.Lock()
			p.queue.pushFront(m)
			p.unacked--
			p.mu.Unlock()
			return
		}
		if m.QoS == 0 {
			p.m.published.Inc()
			p.mu.Lock()
			p.unacked--
			p.mu.Unlock()
			continue
		}
		p.inflight <- pending{msg: m, tok: tok}
	}
}

// acker waits for acknowledgements in send order; a failed publish goes back to the
// front of the queue (at least once: the broker may see it twice). A store
// message is removed from the store once acknowledged (in batches: the removals
// of the acknowledgements already there share one commit); a failed one makes
// the sender replay the store from its start (durable.go).
func (p *Proxy) acker(done chan struct{}) {
	defer close(done)
	var acked []uint64 // store messages the broker acknowledged, not yet removed
	for {
		var it pending
		var ok bool
		select {
		case it, ok = <-p.inflight:
		default:
			p.removeAcked(&acked) // before waiting: nothing else to batch with
			it, ok = <-p.inflight
		}
		if !ok {
			p.removeAcked(&acked)
			return
		}
		if it.seq != 0 {
			if !isDone(it.tok) {
				p.removeAcked(&acked)
			}
			if p.waitStored(it) {
				p.m.published.Inc()
				if acked = append(acked, it.seq); len(acked) >= p.opts.Window {
					p.removeAcked(&acked)
				}
				continue
			}
			p.m.failed.Inc()
			p.m.requeued.Inc()
			p.mu.Lock()
			p.sent--
			p.rewind = true
			p.mu.Unlock()
			p.wake()
			continue
		}
		if p.waitAck(it.tok) {
			p.m.published.Inc()
			p.mu.Lock()
			p.unacked--
			p.mu.Unlock()
			continue
		}
		p.m.failed.Inc()
		p.m.requeued.Inc()
		p.mu.Lock()
		p.queue.pushFront(it.msg)
		p.unacked--
		p.mu.Unlock()
		p.wake()
	}
}

// waitAck waits for one acknowledgement, for publish_timeout at most, and not at all
// once Close has given up draining.
func (p *Proxy) waitAck(tok paho.Token) bool {
	t := time.NewTimer(p.opts.PublishTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
	case <-t.C:
		return false
	case <-p.stop:
		select {
		case <-tok.Done():
		default:
			return false
		}
	}
	return tok.Error() == nil
}

// Subscribe subscribes to filter now when connected and again after every reconnect;
// its messages reach Options.OnMessage.
func (p *Proxy) Subscribe(ctx context.Context, filter string, qos byte) error {
	p.mu.Lock()
	p.subs[filter] = qos
	p.mu.Unlock()
	if !p.Connected() {
		return nil // onConnect subscribes
	}
	tok := p.paho().Subscribe(filter, qos, nil)
	return waitToken(ctx, tok, p.opts.PublishTimeout, "subscribe "+filter)
}

// Unsubscribe forgets filter and unsubscribes from the broker.
func (p *Proxy) Unsubscribe(ctx context.Context, filter string) error {
	p.mu.Lock()
	delete(p.subs, filter)
	p.mu.Unlock()
	if !p.Connected() {
		return nil
	}
	return waitToken(ctx, p.paho().Unsubscribe(filter), p.opts.PublishTimeout, "unsubscribe "+filter)
}

func waitToken(ctx context.Context, tok paho.Token, timeout time.Duration, what string) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return fmt.Errorf("proxy: %s: %w", what, err)
		}
		return nil
	case <-t.C:
		return fmt.Errorf("proxy: %s: %w", what, ErrTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close drains: it takes no new messages, waits until the queue is empty and every
// QoS >= 1 publish is acknowledged or ctx ends, publishes retained "offline", and
// disconnects. What could not be delivered by then is counted as dropped and logged.
//
// With a store, the messages in it are not dropped: Close writes the ones on
// their way into it, waits for the replay to empty it only while the broker is
// connected (and ctx lasts), and leaves the rest there for the next Start,
// logging how many. The caller closes the store after Close.
func (p *Proxy) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return nil
	}
	p.closing = true
	p.mu.Unlock()
	if p.paho() == nil {
		if p.embedded != nil {
			p.embedded.close()
		}
		return nil
	}
	syncDone := make(chan struct{})
	go func() { p.syncInflight.Wait(); close(syncDone) }()
	// A broker that never answered: try once more now rather than after the
	// backoff, and stop waiting when that attempt fails too, instead of
	// waiting out drain_timeout for a queue that cannot drain.
	failuresBefore := p.m.connectFailures.Value()
	if p.neverConnected() {
		select {
		case p.retryNow <- struct{}{}:
		default:
		}
	}
	for drained := false; !drained; {
		if p.neverConnected() && p.m.connectFailures.Value() > failuresBefore {
			break
		}
		if p.idle() {
			select {
			case <-syncDone:
				drained = true
				continue
			default:
			}
		}
		select {
		case <-ctx.Done():
			drained = true
		case <-time.After(10 * time.Millisecond):
		}
	}
	close(p.stop)
	<-p.done
	<-p.spoolDone
	p.mu.Lock()
	left := p.queue.len()
	p.queue = deque{}
	p.mu.Unlock()
	if left > 0 {
		p.m.dropped.Add(uint64(left))
		p.log.Error("shutdown: broker did not take all queued messages; dropped", zap.Int("messages", left))
	}
	if p.q != nil {
		if n, b := p.q.Len(); n > 0 {
			p.log.Info("shutdown: messages the broker has not acknowledged stay in the durable store for the next start", zap.Int("messages", n), zap.Int64("bytes", b))
		}
	}
	if p.opts.StatusTopic != "" && p.Connected() {
		// A clean DISCONNECT suppresses the will (MQTT 3.1.1 §3.14.4): say offline ourselves.
		p.paho().Publish(p.opts.StatusTopic, 1, true, []byte("offline")).WaitTimeout(p.opts.PublishTimeout)
	}
	p.paho().Disconnect(250)
	p.m.up.Set(0)
	if p.embedded != nil {
		p.embedded.close()
	}
	p.log.Info("disconnected from broker")
	return nil
}

// idle reports whether Close has nothing left to wait for (but the Publish
// calls under way): the memory queue is empty and acknowledged, and, with a
// store, everything Enqueue took is in the store, no store message is in
// flight, and the store is empty or the broker away (the store keeps them).
func (p *Proxy) idle() bool {
	p.mu.Lock()
	busy := p.queue.len() + p.unacked + p.spool.len() + p.spooling + p.sent
	p.mu.Unlock()
	if busy > 0 {
		return false
	}
	if p.q == nil {
		return true
	}
	n, _ := p.q.Len()
	return n == 0 || !p.Connected()
}

// deque is a growable ring buffer of messages; the proxy's mutex guards it.
type deque struct {
	buf        []Message
	head, size int
	bytes      int // topics and payloads held
}

// msgBytes is what a queued message costs, for the queue's byte bound.
func msgBytes(m Message) int { return len(m.Topic) + len(m.Payload) }

func (d *deque) len() int { return d.size }

func (d *deque) grow() {
	n := max(16, 2*len(d.buf))
	buf := make([]Message, n)
	for i := 0; i < d.size; i++ {
		buf[i] = d.buf[(d.head+i)%len(d.buf)]
	}
	d.buf, d.head = buf, 0
}

func (d *deque) pushBack(m Message) {
	if d.size == len(d.buf) {
		d.grow()
	}
	d.buf[(d.head+d.size)%len(d.buf)] = m
	d.size++
	d.bytes += msgBytes(m)
}

func (d *deque) pushFront(m Message) {
	if d.size == len(d.buf) {
		d.grow()
	}
	d.head = (d.head - 1 + len(d.buf)) % len(d.buf)
	d.buf[d.head] = m
	d.size++
	d.bytes += msgBytes(m)
}

func (d *deque) front() (Message, bool) {
	if d.size == 0 {
		return Message{}, false
	}
	return d.buf[d.head], true
}

func (d *deque) popFront() {
	if d.size == 0 {
		return
	}
	d.bytes -= msgBytes(d.buf[d.head])
	d.buf[d.head] = Message{}
	d.head = (d.head + 1) % len(d.buf)
	d.size--
}
