package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/auth"
	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/metrics"
	"github.com/mqttgw/mqttgw/proxy"
	"github.com/mqttgw/mqttgw/udpgw"
)

// transparentBroker is the udpgw.Broker of a listener in transparent mode: each
// connected device has its own MQTT connection (proxy.DeviceConn) made with its
// client id (client_id_prefix + device id), its credentials, its clean-session
// flag and its will, so the broker enforces its own ACLs, publishes the will
// itself when the gateway dies, and keeps a persistent device's subscriptions
// and queued messages while it is away. The topic rules, mountpoint and the
// gateway's own acl_file still apply, as in aggregate mode. A CoAP device's
// connection lives as long as its session, clean and without a will (CoAP has
// neither: a class's will stays the gateway's to publish).
//
// A device without a connection (an MQTT-SN QoS -1 publisher that never
// connected) publishes over the gateway's own connection, as in aggregate mode,
// except on a listener where every device has one (CoAP: see everyDevice).
type transparentBroker struct {
	*listenerBroker
	lc       config.Listener
	log      *zap.Logger
	dropped  *metrics.Counter
	refusals *metrics.Counter
	// everyDevice is set for a listener whose engine gives every device a
	// connection before anything else (CoAP, at its session's first request):
	// a device without one (the broker refused its reconnect) then gets
	// ErrUnavailable rather than the gateway's account, and broker messages no
	// subscription claims are dropped, not held (a clean session has no queued
	// messages for a later subscription). Set before the engine starts.
	everyDevice bool

	mu      sync.Mutex
	devices map[string]*deviceLink
}

// deviceLink is one device's connection and its subscriptions' deliveries.
type deviceLink struct {
	conn *proxy.DeviceConn

	// subOp serializes the link's SUBSCRIBE and UNSUBSCRIBE exchanges, so that
	// Retained's short-lived subscription never unsubscribes a filter that a
	// subscription made meanwhile. Held across the broker's answers (and
	// Retained's wait); taken before mu, never on the delivery path.
	subOp sync.Mutex

	mu    sync.Mutex
	subs  map[string]linkSub // device-side filter → its subscription
	reads []retainedRead     // Retained calls waiting for their message
	// held are broker messages that no subscription claims yet: a persistent
	// device's queued messages arrive right after CONNACK, before the device has
	// subscribed again (MQTT-SN has no session-present flag, so it does).
	held []udpgw.Message
}

// linkSub is one subscription of a device: the QoS asked and the engine's
// delivery.
type linkSub struct {
	qos     byte
	deliver func(udpgw.Message)
}

// retainedRead is a Retained call waiting for the retained message of topic
// (device-side), which the broker sends right after its SUBACK.
type retainedRead struct {
	topic string
	got   chan udpgw.Message // buffered: 1
}

// maxHeld bounds the messages held for a device until it subscribes.
const maxHeld = 100

// retainedWait is how long Retained waits for a retained message after the
// SUBACK: the broker sends one right after it (MQTT 3.1.1 §3.8.4), so silence
// for a moment means there is none. As listenerBroker.Retained.
const retainedWait = 300 * time.Millisecond

// errNoConnection: on a listener where every device has its own broker
// connection, this one has none now (the broker refused its reconnect).
var errNoConnection = fmt.Errorf("%w: the device has no broker connection of its own", udpgw.ErrUnavailable)

var (
	_ udpgw.Broker    = (*transparentBroker)(nil)
	_ udpgw.Connector = (*transparentBroker)(nil)
)

func newTransparentBroker(g *Gateway, lc config.Listener) *transparentBroker {
	return &transparentBroker{
		listenerBroker: g.broker(lc),
		lc:             lc,
		log:            g.log.Named("transparent").With(zapListener(lc.Name)),
		dropped:        g.metrics.Counter("mqttgw_transparent_held_dropped_total", "Broker messages for a transparent device dropped: held beyond 100 before it subscribed.", "listener", lc.Name),
		refusals:       g.metrics.Counter("mqttgw_transparent_refused_total", "Transparent device connections refused: by the broker or max_connections.", "listener", lc.Name),
		devices:        map[string]*deviceLink{},
	}
}

// Connect opens device's own broker connection, replacing one it had (a new
// CONNECT is a take-over; the old connection's will is not published).
func (b *transparentBroker) Connect(ctx context.Context, device string, c udpgw.Connection) error {
	o := proxy.DeviceOptions{
		ClientID:     b.lc.ClientIDPrefix + device,
		Username:     c.Username,
		Password:     c.Password,
		CleanSession: c.CleanSession,
		Keepalive:    c.Keepalive,
	}
	switch {
	case o.Username == "":
		o.Username, o.Password = b.lc.Transparent.Username, b.lc.Transparent.Password
	case o.Password == "":
		// An mqttsns device's PSK identity is its user name; the protocol
		// carries no password, so the listener's is used.
		o.Password = b.lc.Transparent.Password
	}
	if w := c.Will; w != nil {
		topic, err := b.BrokerTopic(device, w.Topic)
		if err != nil {
			return err
		}
		if !b.g.acl.allowed(b.listener, device, topic, auth.Write) {
			return forbidden(topic)
		}
		o.Will = &proxy.Message{Topic: topic, Payload: w.Payload, QoS: w.QoS, Retain: w.Retain}
	}
	link := &deviceLink{subs: map[string]linkSub{}}
	o.OnMessage = func(m proxy.Message) { b.deliver(link, m) }
	o.OnLost = func(err error) {
		if errors.Is(err, proxy.ErrRefused) {
			b.log.Warn("broker refused a device's reconnect: closing its connection", zap.String("device", device), zap.Error(err))
			b.drop(device, link, false)
		}
	}

	b.mu.Lock()
	old := b.devices[device]
	delete(b.devices, device)
	full := len(b.devices) >= b.lc.Transparent.MaxConnections
	b.mu.Unlock()
	if old != nil {
		old.conn.Close(true)
	}
	if full {
		b.refusals.Inc()
		return fmt.Errorf("%w: %d transparent connections (max_connections)", udpgw.ErrUnavailable, b.lc.Transparent.MaxConnections)
	}
	conn, err := b.g.proxy.DialDevice(ctx, o)
	if err != nil {
		b.refusals.Inc()
		if errors.Is(err, proxy.ErrRefused) {
			return fmt.Errorf("%w: %v", udpgw.ErrForbidden, err)
		}
		return fmt.Errorf("%w: %v", udpgw.ErrUnavailable, err)
	}
	link.conn = conn
	b.mu.Lock()
	b.devices[device] = link
	b.mu.Unlock()
	return nil
}

// Disconnect closes device's connection: graceful discards its will at the
// broker, otherwise the broker publishes it.
func (b *transparentBroker) Disconnect(device string, graceful bool) {
	b.mu.Lock()
	link := b.devices[device]
	b.mu.Unlock()
	if link != nil {
		b.drop(device, link, graceful)
	}
}

// drop closes link if it is still device's.
func (b *transparentBroker) drop(device string, link *deviceLink, graceful bool) {
	b.mu.Lock()
	if b.devices[device] == link {
		delete(b.devices, device)
	}
	b.mu.Unlock()
	link.conn.Close(graceful)
}

func (b *transparentBroker) link(device string) *deviceLink {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.devices[device]
}

// Connected reports whether device has its own broker connection: made by
// Connect, and not dropped since (a refused reconnect drops it). It implements
// coap.ConnectionChecker.
func (b *transparentBroker) Connected(device string) bool {
	return b.link(device) != nil
}

// closeAll ends every device connection at shutdown with DISCONNECT: as in
// aggregate mode, a clean shutdown publishes no device wills (the devices did
// not go silent), and a persistent device finds its session at the broker
// when it reconnects through the restarted gateway. A crash drops the
// connections instead, and the broker publishes the wills.
func (b *transparentBroker) closeAll() {
	b.mu.Lock()
	links := b.devices
	b.devices = map[string]*deviceLink{}
	b.mu.Unlock()
	for _, l := range links {
		l.conn.Close(true)
	}
}

// isTransparent reports whether listener relays each device over its own
// broker connection.
func (g *Gateway) isTransparent(listener string) bool {
	for _, tb := range g.transparent {
		if tb.listener == listener {
			return true
		}
	}
	return false
}

func (b *transparentBroker) Publish(ctx context.Context, device string, m udpgw.Message) error {
	link := b.link(device)
	if link == nil {
		if b.everyDevice {
			return errNoConnection
		}
		return b.listenerBroker.Publish(ctx, device, m)
	}
	topic, err := b.BrokerTopic(device, m.Topic)
	if err != nil {
		return err
	}
	if !b.g.acl.allowed(b.listener, device, topic, auth.Write) {
		return forbidden(topic)
	}
	if err := link.conn.Publish(ctx, proxy.Message{Topic: topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain}); err != nil {
		return fmt.Errorf("%w: %v", udpgw.ErrUnavailable, err)
	}
	b.uplinks.Add(1)
	return nil
}

func (b *transparentBroker) Subscribe(ctx context.Context, device, filter string, qos byte, deliver func(udpgw.Message)) (byte, error) {
	link := b.link(device)
	if link == nil {
		if b.everyDevice {
			return 0, errNoConnection
		}
		return b.listenerBroker.Subscribe(ctx, device, filter, qos, deliver)
	}
	if err := udpgw.CheckFilter(filter); err != nil {
		return 0, fmt.Errorf("%w: %v", udpgw.ErrBadTopic, err)
	}
	full := b.mountpoint + filter
	if !b.g.acl.allowed(b.listener, device, full, auth.Read) {
		return 0, forbidden(full)
	}
	link.subOp.Lock()
	defer link.subOp.Unlock()
	granted, err := link.conn.Subscribe(ctx, full, min(qos, 2))
	if err != nil {
		if errors.Is(err, proxy.ErrForbidden) {
			return 0, forbidden(full)
		}
		return 0, fmt.Errorf("%w: %v", udpgw.ErrUnavailable, err)
	}
	// Until now the subscription's messages were held (deliver): hand them
	// over in the broker's order, then deliver directly. Under link.mu, so a
	// message arriving meanwhile waits behind them (lock order: link.mu, then
	// the engine's).
	link.mu.Lock()
	defer link.mu.Unlock()
	link.subs[filter] = linkSub{qos: min(qos, 2), deliver: deliver}
	kept := link.held[:0]
	for _, m := range link.held {
		if udpgw.MatchTopic(filter, m.Topic) {
			b.downlinks.Add(1)
			deliver(m)
		} else {
			kept = append(kept, m)
		}
	}
	link.held = kept
	return granted, nil
}

func (b *transparentBroker) Unsubscribe(ctx context.Context, device, filter string) error {
	link := b.link(device)
	if link == nil {
		return b.listenerBroker.Unsubscribe(ctx, device, filter)
	}
	link.subOp.Lock()
	defer link.subOp.Unlock()
	link.mu.Lock()
	delete(link.subs, filter)
	link.mu.Unlock()
	return link.conn.Unsubscribe(ctx, b.mountpoint+filter)
}

// Retained reads topic's retained message over device's own connection, so
// that the broker's ACL decides what the device may read (the gateway's
// last-value cache holds what the gateway's account saw, and is not used): a
// SUBSCRIBE, the retained message the broker sends right after its SUBACK
// (MQTT 3.1.1 §3.8.4) or retainedWait of silence, then an UNSUBSCRIBE, unless
// the device subscribed to that very filter itself (then the SUBSCRIBE renews
// its subscription at its QoS, and the broker re-sends the retained message
// without interrupting the flow: its observers see the value again, which
// Observe allows, RFC 7641 §4.2).
func (b *transparentBroker) Retained(ctx context.Context, device, topic string) (udpgw.Message, bool, error) {
	link := b.link(device)
	if link == nil {
		if b.everyDevice {
			return udpgw.Message{}, false, errNoConnection
		}
		return b.listenerBroker.Retained(ctx, device, topic)
	}
	full := b.mountpoint + topic
	if !b.g.acl.allowed(b.listener, device, full, auth.Read) {
		return udpgw.Message{}, false, forbidden(full)
	}
	link.subOp.Lock()
	defer link.subOp.Unlock()
	r := retainedRead{topic: topic, got: make(chan udpgw.Message, 1)}
	link.mu.Lock()
	own, subscribed := link.subs[topic]
	link.reads = append(link.reads, r)
	link.mu.Unlock()
	defer func() {
		link.mu.Lock()
		link.reads = slices.DeleteFunc(link.reads, func(x retainedRead) bool { return x.got == r.got })
		link.mu.Unlock()
	}()
	if _, err := link.conn.Subscribe(ctx, full, own.qos); err != nil {
		if errors.Is(err, proxy.ErrForbidden) {
			return udpgw.Message{}, false, forbidden(full)
		}
		return udpgw.Message{}, false, fmt.Errorf("%w: %v", udpgw.ErrUnavailable, err)
	}
	if !subscribed {
		defer func() {
			uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.g.cfg.Upstream.PublishTimeout.D())
			defer cancel()
			_ = link.conn.Unsubscribe(uctx, full)
		}()
	}
	t := time.NewTimer(retainedWait)
	defer t.Stop()
	select {
	case m := <-r.got:
		return m, true, nil
	case <-t.C:
		return udpgw.Message{}, false, nil
	case <-ctx.Done():
		return udpgw.Message{}, false, ctx.Err()
	}
}

func (b *transparentBroker) UnsubscribeAll(device string) {
	b.listenerBroker.UnsubscribeAll(device)
	if link := b.link(device); link != nil {
		link.mu.Lock()
		clear(link.subs)
		link.mu.Unlock()
	}
}

// deliver runs on the device connection's delivery goroutine: it hands m to the
// first of the device's subscriptions that matches (one delivery per message,
// as the broker sends one), or holds it until one does. The engine's delivery
// only queues, so calling it under link.mu is cheap.
func (b *transparentBroker) deliver(link *deviceLink, pm proxy.Message) {
	if len(pm.Topic) < len(b.mountpoint) || pm.Topic[:len(b.mountpoint)] != b.mountpoint {
		return
	}
	m := udpgw.Message{Topic: pm.Topic[len(b.mountpoint):], Payload: pm.Payload, QoS: pm.QoS, Retain: pm.Retain}
	link.mu.Lock()
	read := false
	if m.Retain {
		// The retained message a Retained call's SUBSCRIBE brought answers
		// the read (a message forwarded live has its retain flag cleared:
		// MQTT 3.1.1 §3.3.1.3). It still goes to a matching subscription: it
		// may be that subscription's own first message, arriving late.
		for _, r := range link.reads {
			if r.topic == m.Topic {
				select {
				case r.got <- m:
				default:
				}
				read = true
			}
		}
	}
	var to func(udpgw.Message)
	for f, s := range link.subs {
		if udpgw.MatchTopic(f, m.Topic) {
			to = s.deliver
			break
		}
	}
	if to == nil && (read || b.everyDevice) {
		// A read's own, or a clean session's: nothing is held for a later
		// subscription.
		link.mu.Unlock()
		return
	}
	if to == nil {
		if len(link.held) >= maxHeld {
			link.held = link.held[1:]
			b.dropped.Inc()
		}
		link.held = append(link.held, m)
	} else {
		b.downlinks.Add(1)
		to(m) // under link.mu: after any held message Subscribe is handing over
	}
	link.mu.Unlock()
}
