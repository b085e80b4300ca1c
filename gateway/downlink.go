package gateway

import (
	"context"
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/mapping"
	"github.com/mqttgw/mqttgw/metrics"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// downlinks turns broker messages into datagrams for plain-UDP devices
// ([[downlink]]): each downlink's filter is one hub subscription; a message is
// encoded and sent from the listener's socket to the device's last address at
// once ("now"), or queued in the device's session and sent right after its next
// datagram ("on_uplink", for devices that listen only briefly after they
// transmit). A device without a live session has no address: its downlink is
// dropped and counted.
type downlinks struct {
	g *Gateway
	n outcomes
}

func newDownlinks(g *Gateway) *downlinks {
	return &downlinks{g: g, n: newOutcomes(g, "mqttgw_downlinks_total", "Downlinks to plain-UDP devices, by outcome: sent, queued, dropped_overflow (oldest queued dropped), no_session, encode_error, send_failed.",
		"sent", "queued", "dropped_overflow", "no_session", "encode_error", "send_failed")}
}

// subscribe makes the hub deliver each downlink's messages; before the broker
// is connected the proxy only records the subscription.
func (d *downlinks) subscribe(ctx context.Context) error {
	return d.resubscribe(ctx, nil, d.g.rules())
}

// downlinkOwner is a downlink's identity in the hub, as if it were a device.
func downlinkOwner(dl *mapping.Downlink) owner {
	return owner{dl.Listener, "\x00downlink\x00" + dl.Name}
}

// resubscribe moves the hub from old's downlinks (nil at start) to next's: each
// of next's subscribes (replacing a same-named one, so no message is missed
// across a reload), then each of old's that next no longer has unsubscribes.
func (d *downlinks) resubscribe(ctx context.Context, old, next *mapping.Table) error {
	type sub struct {
		o      owner
		filter string
	}
	keep := map[sub]bool{}
	var first error
	for _, dl := range next.Downlinks() {
		keep[sub{downlinkOwner(dl), dl.Filter}] = true
		if err := d.g.hub.subscribe(ctx, downlinkOwner(dl), dl.Filter, subscriber{qos: 1, deliver: func(m udpgw.Message) { d.deliver(dl, m) }}); err != nil && first == nil {
			first = err
		}
	}
	if old == nil {
		return first
	}
	for _, dl := range old.Downlinks() {
		if s := (sub{downlinkOwner(dl), dl.Filter}); !keep[s] {
			if err := d.g.hub.unsubscribe(ctx, s.o, s.filter); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// deliver runs on the broker's delivery goroutine: it never blocks.
func (d *downlinks) deliver(dl *mapping.Downlink, m udpgw.Message) {
	device, b, ok, err := dl.Encode(m.Topic, m.Payload)
	if !ok {
		return
	}
	if err != nil {
		d.n.inc(dl.Listener, "encode_error")
		if ce := d.g.log.Check(zap.DebugLevel, "downlink not encoded"); ce != nil {
			ce.Write(zap.String("downlink", dl.Name), zap.String("topic", m.Topic), zap.Error(err))
		}
		return
	}
	s := d.g.sessions.Lookup(session.Key{Listener: dl.Listener, Device: device})
	if s == nil {
		d.n.inc(dl.Listener, "no_session")
		return
	}
	if dl.OnUplink {
		if s.Enqueue(session.Queued{Data: b, Expires: time.Now().Add(dl.TTL)}, dl.MaxQueued) {
			d.n.inc(dl.Listener, "dropped_overflow")
		}
		d.n.inc(dl.Listener, "queued")
		return
	}
	d.send(dl.Listener, s.Addr(), b)
}

// flushQueued sends the downlinks that waited for the device's datagram, to the
// address it just came from.
func (d *downlinks) flushQueued(listener string, s *session.Session, to netip.AddrPort, now time.Time) {
	if s.QueuedLen() == 0 {
		return
	}
	due, expired := s.TakeQueued(now)
	if expired > 0 {
		d.g.expiredDownlinks.Add(uint64(expired))
	}
	for _, b := range due {
		d.send(listener, to, b)
	}
}

func (d *downlinks) send(listener string, to netip.AddrPort, b []byte) {
	l := d.g.raws[listener]
	if l == nil {
		return
	}
	if err := l.Send(to, b); err != nil {
		d.n.inc(listener, "send_failed")
		d.g.log.Debug("downlink not sent", zapListener(listener), zap.Stringer("to", to), zap.Error(err))
		return
	}
	d.n.inc(listener, "sent")
	if b := d.g.brokers[listener]; b != nil {
		b.downlinks.Add(1)
	}
}

// outcomes holds the series of one counter family by listener and outcome for
// the plain-UDP listeners, made once in New so that the per-datagram path does
// no label formatting.
type outcomes map[[2]string]*metrics.Counter

func newOutcomes(g *Gateway, name, help string, names ...string) outcomes {
	o := outcomes{}
	for _, lc := range g.cfg.Listeners {
		if lc.Type != config.ListenerUDP {
			continue
		}
		for _, n := range names {
			o[[2]string{lc.Name, n}] = g.metrics.Counter(name, help, "listener", lc.Name, "outcome", n)
		}
	}
	return o
}

func (o outcomes) inc(listener, outcome string) {
	if c := o[[2]string{listener, outcome}]; c != nil {
		c.Inc()
	}
}
