package gateway

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/auth"
	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/mapping"
	"github.com/mqttgw/mqttgw/metrics"
	"github.com/mqttgw/mqttgw/proxy"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// rawHandler maps each plain datagram through the rules table, keeps the
// device's session (created by the first datagram a rule maps, moved by NAT
// rebinding), sends the downlinks that waited for it, and queues the publishes —
// or, for a rule with an ack, publishes and acknowledges the device once the
// broker has them. It runs on the listener's single reader goroutine, so it owns
// one mapping.Result and reuses it for every datagram.
func (g *Gateway) rawHandler(lc config.Listener) func(udpgw.Uplink) {
	var res mapping.Result
	log := g.log.With(zapListener(lc.Name))
	count := func(reason string) func() {
		c := g.metrics.Counter("mqttgw_datagrams_total", "Datagrams received, by outcome.", "listener", lc.Name, "outcome", reason)
		return c.Inc
	}
	mapped, noMatch, decodeErr, unsafe, denied := count("mapped"), count("no_match"), count("decode_error"), count("unsafe_topic"), count("forbidden")
	lb := g.broker(lc)
	dropped := func(reason string) *metrics.Counter {
		return g.metrics.Counter("mqttgw_datagrams_dropped_total", "Datagrams dropped before mapping, by reason.", "listener", lc.Name, "reason", reason)
	}
	shuttingDown, storeBacklog := dropped("shutting_down"), dropped("store_backlog")
	return func(u udpgw.Uplink) {
		err := g.rules().Map(mapping.Datagram{Listener: u.Listener, From: u.From, Payload: u.Payload}, &res)
		if err == nil {
			for _, p := range res.Publishes {
				if !g.acl.allowed(lc.Name, res.Device, p.Topic, auth.Write) {
					err = forbidden(p.Topic) // none of the datagram's publishes goes out
					break
				}
			}
		}
		if err == nil {
			mapped()
			lb.uplinks.Add(1)
			s, _ := g.sessions.Touch(session.Key{Listener: lc.Name, Device: res.Device}, session.Peer{Addr: u.From}, u.Received)
			g.downs.flushQueued(lc.Name, s, u.From, u.Received)
			if res.Ack != nil {
				g.acks.handle(lc.Name, u.From, &res, u.Received)
				return
			}
			for _, p := range res.Publishes {
				m := proxy.Message{Listener: lc.Name, Device: res.Device, Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain}
				if g.fences.park(m) {
					continue // its device moved here: after what it left at its previous instance
				}
				if err := g.proxy.Enqueue(m); err != nil {
					// The proxy counts what the store refused; here: why this
					// datagram's publish was not taken.
					if errors.Is(err, proxy.ErrClosed) {
						shuttingDown.Inc()
					} else {
						storeBacklog.Inc()
					}
				}
			}
			return
		}
		switch {
		case errors.Is(err, mapping.ErrNoMatch):
			noMatch()
		case errors.Is(err, mapping.ErrUnsafeTopic):
			unsafe()
		case errors.Is(err, udpgw.ErrForbidden):
			denied()
		default:
			decodeErr()
		}
		// Debug, not warn: one misbehaving device must not flood the log.
		if ce := log.Check(zap.DebugLevel, "datagram not mapped"); ce != nil {
			ce.Write(zap.Stringer("from", u.From), zap.Int("bytes", len(u.Payload)), zap.Error(err))
		}
		if lc.DeadLetterTopic != "" {
			payload := append([]byte(nil), u.Payload...)
			_ = g.proxy.Enqueue(proxy.Message{Topic: lc.DeadLetterTopic, Payload: payload})
		}
	}
}

// publishAll publishes device's msgs and waits for the broker's
// acknowledgement of each QoS >= 1 one; any failure fails the lot (the device
// retries the datagram).
func (g *Gateway) publishAll(ctx context.Context, listener, device string, msgs []mapping.Message) error {
	for _, p := range msgs {
		if err := g.proxy.Publish(ctx, proxy.Message{Listener: listener, Device: device, Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain}); err != nil {
			return fmt.Errorf("gateway: publish %q: %w", p.Topic, err)
		}
	}
	return nil
}
