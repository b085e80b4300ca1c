package gateway

import (
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
	"github.com/mqttgw/mqttgw/udpgw/raw"
)

// newListener builds the listener of lc's type, every type the same way: an
// engine made from g.env(lc) and its own options (raw here, mqttsn.go, coap.go),
// then declared to the device registry with its protocol, default keepalive and
// owner, and to the driver when it has timed work.
func (g *Gateway) newListener(lc config.Listener) (udpgw.Listener, error) {
	var (
		l   udpgw.Listener
		err error
	)
	switch lc.Type {
	case config.ListenerUDP:
		l, err = g.newRawListener(lc)
	case config.ListenerMQTTSN, config.ListenerMQTTSNS:
		l, err = g.newMQTTSNListener(lc)
	case config.ListenerCoAP, config.ListenerCoAPS:
		l, err = g.newCoAPListener(lc)
	default:
		err = fmt.Errorf("gateway: listener %q: unknown type %q", lc.Name, lc.Type)
	}
	if err != nil {
		return nil, err
	}
	sl := session.Listener{Protocol: lc.Type, Keepalive: lc.SessionKeepalive()}
	if o, ok := l.(session.Owner); ok {
		sl.Owner = o
	}
	// With a store, the synthetic sessions of CoAP and plain-UDP devices
	// survive a restart (sessionstore.go): restored here, before anything is
	// served. In a fleet they are the fleet's (fleetsessions.go): only this
	// instance's own are restored, and the devices' owner keys are watched
	// from here on.
	k := g.sessionsKeeper()
	if k != nil && keepsSessions(lc) {
		sl.Saver = k
	}
	g.sessions.AddListener(lc.Name, sl)
	if sl.Saver != nil {
		var err error
		if k.fl != nil {
			if err = k.fl.addListener(lc.Name, sl.Keepalive); err == nil {
				if rerr := k.fl.restoreOwned(lc.Name); rerr != nil {
					// Not fatal: the devices' next datagrams load their
					// sessions (their observations are lost).
					g.log.Warn("fleet: this instance's device sessions not restored", zapListener(lc.Name), zap.Error(rerr))
				}
			}
			if err != nil {
				err = fmt.Errorf("gateway: listener %q: %w", lc.Name, err)
			}
		} else {
			err = k.restore(lc)
		}
		if err != nil {
			_ = l.Close()
			return nil, err
		}
	}
	if t, ok := l.(udpgw.Ticker); ok {
		g.tickers = append(g.tickers, t)
	}
	return l, nil
}

// env is the construction environment of lc's engine.
func (g *Gateway) env(lc config.Listener) udpgw.Env {
	return udpgw.Env{
		Name:     lc.Name,
		Logger:   g.log.Named(lc.Type).With(zapListener(lc.Name)),
		Metrics:  g.metrics,
		Now:      time.Now,
		Broker:   g.broker(lc),
		Sessions: g.sessions,
	}
}

// ackBuckets suit a broker ack on a LAN (sub-millisecond) up to the publish
// timeout.
var ackBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// broker returns the udpgw.Broker for one listener's engine: the one uplink
// path into the gateway.
func (g *Gateway) broker(lc config.Listener) *listenerBroker {
	if b := g.brokers[lc.Name]; b != nil {
		return b
	}
	b := &listenerBroker{g: g, listener: lc.Name, mountpoint: lc.Mountpoint,
		ackLatency: g.metrics.Histogram("mqttgw_ack_latency_seconds", "Time from a device's QoS >= 1 publish to the broker's acknowledgement, which the device's own ack waits for.",
			ackBuckets, "protocol", lc.Type)}
	g.brokers[lc.Name] = b
	return b
}

func (g *Gateway) newRawListener(lc config.Listener) (udpgw.Listener, error) {
	l, err := raw.New(g.env(lc), raw.Options{Bind: lc.Bind, MaxPacket: lc.MaxPacket, ReadBuffer: lc.ReadBuffer, Handle: g.rawHandler(lc)})
	if err != nil {
		return nil, fmt.Errorf("gateway: listener %q: %w", lc.Name, err)
	}
	g.raws[lc.Name] = l
	return l, nil
}
