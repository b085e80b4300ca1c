package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqttgw/mqttgw/auth"
	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/metrics"
	"github.com/mqttgw/mqttgw/proxy"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// hub fans broker messages out to device subscriptions. The broker sees one
// subscription per distinct filter, however many devices share it; the hub matches
// each message against those filters and calls each subscribed device once.
//
// Lock order: hub.mu only; deliver callbacks and proxy calls run outside it.
type hub struct {
	proxy *proxy.Proxy

	mu      sync.RWMutex                  // guards filters, tree, byOwner and last
	filters map[string]*filterSubs        // broker-side filter → subscribers
	tree    trie                          // the same filters, indexed by level for dispatch
	byOwner map[owner]map[string]struct{} // owner → its broker-side filters
	last    map[string]udpgw.Message      // topic → last message seen (bounded)
}

type owner struct{ listener, device string }

type filterSubs struct {
	qos  byte // the QoS the broker subscription was made with
	subs map[owner]*subscriber
}

type subscriber struct {
	qos        byte
	mountpoint string
	deliver    func(udpgw.Message)
	// retainedUntil: messages with the retain flag reach this subscriber only
	// until then. A broker sets the flag only on retained messages it sends because
	// of a (re)subscription (MQTT 3.1.1 §3.3.1.3), which the hub makes for every new
	// device subscription; subscribers already holding the filter have had theirs.
	retainedUntil time.Time
	// retainedSeen holds the retained topics delivered in the window, so that a
	// later device's resubscription does not repeat them; hub.mu guards it.
	retainedSeen map[string]bool
}

// retainedWindow is how long after subscribing a device takes retained messages.
const retainedWindow = 5 * time.Second

// lastValues bounds the last-value cache behind CoAP GET.
const lastValues = 10000

func newHub() *hub {
	return &hub{filters: map[string]*filterSubs{}, byOwner: map[owner]map[string]struct{}{}, last: map[string]udpgw.Message{}}
}

// subscribe adds (or replaces) o's subscription to the broker-side filter and
// subscribes the broker every time: a repeated SUBSCRIBE makes the broker send the
// filter's retained messages again (MQTT 3.1.1 §3.8.4), and dispatch gives them
// only to the new subscriber.
func (h *hub) subscribe(ctx context.Context, o owner, filter string, s subscriber) error {
	s.retainedUntil = time.Now().Add(retainedWindow)
	h.mu.Lock()
	fs, ok := h.filters[filter]
	if !ok {
		fs = &filterSubs{subs: map[owner]*subscriber{}}
		h.filters[filter] = fs
		h.tree.insert(filter, fs)
	}
	fs.subs[o] = &s
	if h.byOwner[o] == nil {
		h.byOwner[o] = map[string]struct{}{}
	}
	h.byOwner[o][filter] = struct{}{}
	fs.qos = max(fs.qos, s.qos)
	qos := fs.qos
	h.mu.Unlock()
	if err := h.proxy.Subscribe(ctx, filter, qos); err != nil {
		if errors.Is(err, proxy.ErrTimeout) {
			return fmt.Errorf("%w: %v", udpgw.ErrUnavailable, err)
		}
		return err
	}
	return nil
}

// unsubscribe removes o's subscription; the last one out unsubscribes the broker.
func (h *hub) unsubscribe(ctx context.Context, o owner, filter string) error {
	h.mu.Lock()
	empty := false
	if fs, ok := h.filters[filter]; ok {
		delete(fs.subs, o)
		if len(fs.subs) == 0 {
			delete(h.filters, filter)
			h.tree.remove(filter)
			empty = true
		}
	}
	if m := h.byOwner[o]; m != nil {
		delete(m, filter)
		if len(m) == 0 {
			delete(h.byOwner, o)
		}
	}
	h.mu.Unlock()
	if empty {
		return h.proxy.Unsubscribe(ctx, filter)
	}
	return nil
}

func (h *hub) unsubscribeAll(o owner) {
	h.mu.RLock()
	filters := make([]string, 0, len(h.byOwner[o]))
	for f := range h.byOwner[o] {
		filters = append(filters, f)
	}
	h.mu.RUnlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, f := range filters {
		_ = h.unsubscribe(ctx, o, f)
	}
}

// dispatch is the proxy's OnMessage: it runs on paho's delivery goroutine.
func (h *hub) dispatch(m proxy.Message) {
	type target struct {
		s   *subscriber
		qos byte
	}
	var targets map[owner]target
	now := time.Now()
	h.mu.Lock()
	h.remember(udpgw.Message{Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain})
	h.tree.match(m.Topic, func(fs *filterSubs) {
		if targets == nil {
			targets = make(map[owner]target, len(fs.subs))
		}
		for o, s := range fs.subs {
			if m.Retain {
				if now.After(s.retainedUntil) {
					s.retainedSeen = nil
					continue // re-sent for another device's subscription
				}
				if s.retainedSeen[m.Topic] {
					continue
				}
				if s.retainedSeen == nil {
					s.retainedSeen = map[string]bool{}
				}
				s.retainedSeen[m.Topic] = true
			}
			// Overlapping filters of one device: deliver once, with the highest
			// QoS granted (MQTT 3.1.1 §3.3.5).
			if t, ok := targets[o]; !ok || s.qos > t.qos {
				targets[o] = target{s, s.qos}
			}
		}
	})
	h.mu.Unlock()
	for _, t := range targets {
		topic, ok := strings.CutPrefix(m.Topic, t.s.mountpoint)
		if !ok {
			continue
		}
		t.s.deliver(udpgw.Message{Topic: topic, Payload: m.Payload, QoS: min(m.QoS, t.qos), Retain: m.Retain})
	}
}

// remember keeps the last message per topic; h.mu must be held for writing.
func (h *hub) remember(m udpgw.Message) {
	if _, ok := h.last[m.Topic]; !ok && len(h.last) >= lastValues {
		for k := range h.last { // evict one at random: a cache, not a store
			delete(h.last, k)
			break
		}
	}
	h.last[m.Topic] = m
}

func (h *hub) lastValue(topic string) (udpgw.Message, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	m, ok := h.last[topic]
	return m, ok
}

// listenerBroker is the udpgw.Broker one listener's engine talks to: it applies the
// listener's mountpoint both ways.
type listenerBroker struct {
	g          *Gateway
	listener   string
	mountpoint string

	// For the status page: messages from devices the broker took, and broker
	// messages handed to devices, on this listener.
	uplinks, downlinks atomic.Uint64
	// ackLatency is how long a device's QoS >= 1 publish waits for the broker's
	// acknowledgement: the latency the gateway adds before the device's ack.
	ackLatency *metrics.Histogram
}

var _ udpgw.Broker = (*listenerBroker)(nil)

func (b *listenerBroker) Publish(ctx context.Context, device string, m udpgw.Message) error {
	topic, _, err := b.g.rules().MapTopic(b.listener, device, m.Topic)
	if err != nil {
		return fmt.Errorf("%w: %v", udpgw.ErrBadTopic, err)
	}
	if err := config.CheckTopic(topic); err != nil {
		return fmt.Errorf("%w: %v", udpgw.ErrBadTopic, err)
	}
	if !b.g.acl.allowed(b.listener, device, topic, auth.Write) {
		return forbidden(topic)
	}
	start := time.Now()
	if m.QoS > 0 {
		err = b.g.fences.wait(ctx, session.Key{Listener: b.listener, Device: device})
	}
	if err == nil {
		err = b.g.proxy.Publish(ctx, proxy.Message{Listener: b.listener, Device: device, Topic: topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain})
	}
	if err == nil {
		b.uplinks.Add(1)
		if m.QoS > 0 {
			b.ackLatency.Observe(time.Since(start).Seconds())
		}
	}
	switch {
	case errors.Is(err, proxy.ErrUnavailable), errors.Is(err, proxy.ErrTimeout), errors.Is(err, proxy.ErrClosed):
		return fmt.Errorf("%w: %v", udpgw.ErrUnavailable, err)
	case err != nil:
		return err
	}
	b.g.hub.mu.Lock()
	b.g.hub.remember(udpgw.Message{Topic: topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain})
	b.g.hub.mu.Unlock()
	return nil
}

func (b *listenerBroker) BrokerTopic(device, topic string) (string, error) {
	out, _, err := b.g.rules().MapTopic(b.listener, device, topic)
	if err != nil {
		return "", fmt.Errorf("%w: %v", udpgw.ErrBadTopic, err)
	}
	if err := config.CheckTopic(out); err != nil {
		return "", fmt.Errorf("%w: %v", udpgw.ErrBadTopic, err)
	}
	return out, nil
}

func (b *listenerBroker) HasTopicRule(topic string) bool {
	return b.g.rules().HasTopicRule(b.listener, topic)
}

func (b *listenerBroker) Subscribe(ctx context.Context, device, filter string, qos byte, deliver func(udpgw.Message)) (byte, error) {
	if err := udpgw.CheckFilter(filter); err != nil {
		return 0, fmt.Errorf("%w: %v", udpgw.ErrBadTopic, err)
	}
	qos = min(qos, 2)
	if !b.g.acl.allowed(b.listener, device, b.mountpoint+filter, auth.Read) {
		return 0, forbidden(b.mountpoint + filter)
	}
	counted := func(m udpgw.Message) {
		b.downlinks.Add(1)
		deliver(m)
	}
	err := b.g.hub.subscribe(ctx, owner{b.listener, device}, b.mountpoint+filter, subscriber{qos: qos, mountpoint: b.mountpoint, deliver: counted})
	return qos, err
}

func (b *listenerBroker) Unsubscribe(ctx context.Context, device, filter string) error {
	return b.g.hub.unsubscribe(ctx, owner{b.listener, device}, b.mountpoint+filter)
}

func (b *listenerBroker) UnsubscribeAll(device string) {
	b.g.hub.unsubscribeAll(owner{b.listener, device})
}

// Retained answers from the last-value cache, else asks the broker for the
// retained message with a short-lived subscription.
func (b *listenerBroker) Retained(ctx context.Context, device, topic string) (udpgw.Message, bool, error) {
	full := b.mountpoint + topic
	if !b.g.acl.allowed(b.listener, device, full, auth.Read) {
		return udpgw.Message{}, false, forbidden(full)
	}
	if m, ok := b.g.hub.lastValue(full); ok {
		m.Topic = topic
		return m, true, nil
	}
	if !b.g.proxy.Connected() {
		return udpgw.Message{}, false, udpgw.ErrUnavailable
	}
	got := make(chan udpgw.Message, 1)
	o := owner{b.listener, "\x00retained\x00" + topic}
	err := b.g.hub.subscribe(ctx, o, full, subscriber{qos: 0, mountpoint: b.mountpoint, deliver: func(m udpgw.Message) {
		select {
		case got <- m:
		default:
		}
	}})
	defer b.g.hub.unsubscribe(context.Background(), o, full)
	if err != nil {
		return udpgw.Message{}, false, err
	}
	// A broker sends a retained message right after SUBACK (MQTT 3.1.1 §3.8.4);
	// silence for a moment means there is none.
	t := time.NewTimer(300 * time.Millisecond)
	defer t.Stop()
	select {
	case m := <-got:
		return m, true, nil
	case <-t.C:
		return udpgw.Message{}, false, nil
	case <-ctx.Done():
		return udpgw.Message{}, false, ctx.Err()
	}
}
