package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"

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
// gateway's own acl_file still apply, as in aggregate mode.
//
// A device without a connection (an MQTT-SN QoS -1 publisher that never
// connected) publishes over the gateway's own connection, as in aggregate mode.
type transparentBroker struct {
	*listenerBroker
	lc       config.Listener
	log      *zap.Logger
	dropped  *metrics.Counter
	refusals *metrics.Counter

	mu      sync.Mutex
	devices map[string]*deviceLink
}

// deviceLink is one device's connection and its subscriptions' deliveries.
type deviceLink struct {
	conn *proxy.DeviceConn

	mu   sync.Mutex
	subs map[string]func(udpgw.Message) // device-side filter → the engine's delivery
	// held are broker messages that no subscription claims yet: a persistent
	// device's queued messages arrive right after CONNACK, before the device has
	// subscribed again (MQTT-SN has no session-present flag, so it does).
	held []udpgw.Message
}

// maxHeld bounds the messages held for a device until it subscribes.
const maxHeld = 100

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
	link := &deviceLink{subs: map[string]func(udpgw.Message){}}
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
		return b.listenerBroker.Subscribe(ctx, device, filter, qos, deliver)
	}
	if err := udpgw.CheckFilter(filter); err != nil {
		return 0, fmt.Errorf("%w: %v", udpgw.ErrBadTopic, err)
	}
	full := b.mountpoint + filter
	if !b.g.acl.allowed(b.listener, device, full, auth.Read) {
		return 0, forbidden(full)
	}
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
	link.subs[filter] = deliver
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
	link.mu.Lock()
	delete(link.subs, filter)
	link.mu.Unlock()
	return link.conn.Unsubscribe(ctx, b.mountpoint+filter)
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
	var to func(udpgw.Message)
	for f, d := range link.subs {
		if udpgw.MatchTopic(f, m.Topic) {
			to = d
			break
		}
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
