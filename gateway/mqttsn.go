package gateway

import (
	"fmt"
	"net/netip"

	"github.com/mqttgw/mqttgw/auth"
	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/store"
	"github.com/mqttgw/mqttgw/udpgw"
	"github.com/mqttgw/mqttgw/udpgw/mqttsn"
)

// newMQTTSNListener builds the MQTT-SN engine for lc (type mqttsn, or mqttsns:
// MQTT-SN over DTLS 1.2 with the PSKs of auth.psk_file) from g.env(lc) and its
// own options. newListener declares it to the registry as its sessions' owner
// (session.Owner) and to the driver (udpgw.Ticker).
func (g *Gateway) newMQTTSNListener(lc config.Listener) (udpgw.Listener, error) {
	o := lc.MQTTSN
	predefined := make([]mqttsn.Predefined, 0, len(g.cfg.MQTTSN.Predefined))
	for _, p := range g.cfg.MQTTSN.Predefined {
		predefined = append(predefined, mqttsn.Predefined{ID: uint16(p.ID), Topic: p.Topic, ClientID: p.ClientID})
	}
	var known func(string) bool
	if o.RequireKnownClient {
		known = g.knownUser
	}
	var dtls *mqttsn.DTLSOptions
	if lc.Kind().DTLS {
		if g.cfg.Auth.PSKFile == "" { // config validation says so first, with the line
			return nil, fmt.Errorf("gateway: listener %q: type %s needs auth.psk_file", lc.Name, lc.Type)
		}
		// The PSK file in force: SIGHUP replaces it (reload.go). Refused
		// handshakes and CONNECTs count and log as every protocol's refused
		// authentications (authfail.go).
		dtls = &mqttsn.DTLSOptions{PSK: g.pskKey, HandshakeTimeout: o.HandshakeTimeout.D(), MaxHandshakes: o.MaxHandshakes,
			Refused: func(from netip.AddrPort, identity, reason string) { g.auth.refused(lc.Name, from, identity, reason) }}
	}
	env := g.env(lc)
	// With [store] dir the engine keeps its persistent sessions there, so
	// that they survive a crash (transparent listeners leave them to each
	// device's own broker connection).
	var state store.State
	if g.store != nil {
		state = g.store.State()
	}
	if lc.IsTransparent() {
		tb := newTransparentBroker(g, lc)
		g.transparent = append(g.transparent, tb)
		env.Broker = tb
	}
	e, err := mqttsn.New(env, mqttsn.Options{
		Bind:              lc.Bind,
		GatewayID:         uint8(o.GatewayID),
		AdvertiseInterval: o.AdvertiseInterval.D(),
		AdvertiseAddr:     o.AdvertiseAddr,
		RetryInterval:     o.RetryInterval.D(),
		MaxRetries:        o.MaxRetries,
		MaxClients:        o.MaxClients,
		MaxTopics:         o.MaxTopics,
		MaxBuffered:       o.MaxBuffered,
		MaxKeepalive:      o.MaxKeepalive.D(),
		MaxPacket:         lc.MaxPacket,
		SessionExpiry:     o.SessionExpiry.D(),
		ReadBuffer:        lc.ReadBuffer, // read_buffer and the kernel's drop count: plain and DTLS sockets
		MaxUnproven:       o.MaxUnproven,
		UnprovenRate:      o.UnprovenRate,
		AllowedSources:    o.SourcePrefixes(),
		KnownClient:       known,
		Predefined:        predefined,
		DTLS:              dtls,
		State:             state,
		Owners:            g.owners(),                       // [cluster]: one instance serves a client at a time
		AdoptEvery:        g.cfg.Cluster.OwnerLease.D() / 2, // [cluster]: dead instances' clients are adopted
		DrainTimeout:      g.cfg.Gateway.DrainTimeout.D(),
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: listener %q: %w", lc.Name, err)
	}
	return e, nil
}

var _ mqttsn.PublishChecker = (*listenerBroker)(nil)

// CheckPublish implements mqttsn.PublishChecker: whether device may publish to
// topic on this listener, as Publish would decide, without publishing. The
// MQTT-SN engine asks it for a REGISTER (MQTT-SN 1.2 §6.5), so that a topic the
// ACL denies gets REGACK "not supported" and no topic id; the denial is
// counted and logged like a publish's. It takes no lock of its own beyond the
// ACL's log limiter and the registry's.
func (b *listenerBroker) CheckPublish(device, topic string) error {
	out, err := b.BrokerTopic(device, topic)
	if err != nil {
		return err
	}
	if !b.g.acl.allowed(b.listener, device, out, auth.Write) {
		return forbidden(out)
	}
	return nil
}
