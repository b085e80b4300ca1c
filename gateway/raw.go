package gateway

import (
	"errors"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/mapping"
	"github.com/mqttgw/mqttgw/proxy"
	"github.com/mqttgw/mqttgw/udpgw"
	"github.com/mqttgw/mqttgw/udpgw/raw"
)

// rawHandler maps each plain datagram through the rules table and queues its
// publishes. It runs on the listener's single reader goroutine, so it owns one
// mapping.Result and reuses it for every datagram.
func (g *Gateway) rawHandler(lc config.Listener) raw.Handler {
	var res mapping.Result
	log := g.log.With(zap.String("listener", lc.Name))
	count := func(reason string) func() {
		c := g.metrics.Counter("mqttgw_datagrams_total", "Datagrams received, by outcome.", "listener", lc.Name, "outcome", reason)
		return c.Inc
	}
	mapped, noMatch, decodeErr, unsafe := count("mapped"), count("no_match"), count("decode_error"), count("unsafe_topic")
	queueFull := g.metrics.Counter("mqttgw_datagrams_dropped_total", "Datagrams dropped before mapping, by reason.", "listener", lc.Name, "reason", "shutting_down")
	return func(u udpgw.Uplink) {
		err := g.table.Map(mapping.Datagram{Listener: u.Listener, From: u.From, Payload: u.Payload}, &res)
		if err == nil {
			mapped()
			for _, p := range res.Publishes {
				if err := g.proxy.Enqueue(proxy.Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain}); err != nil {
					queueFull.Inc()
				}
			}
			return
		}
		switch {
		case errors.Is(err, mapping.ErrNoMatch):
			noMatch()
		case errors.Is(err, mapping.ErrUnsafeTopic):
			unsafe()
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
