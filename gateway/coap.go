package gateway

import (
	"crypto/tls"
	"fmt"
	"net/netip"

	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/udpgw"
	"github.com/mqttgw/mqttgw/udpgw/coap"
)

var _ coap.ConnectionChecker = (*transparentBroker)(nil)

// newCoAPListener builds the CoAP (or CoAP over DTLS) listener for lc. Devices
// authenticate with the [auth] files: the PSK file for coaps, the password file
// for the query's u and p. Keepalive is the listener's default, which
// newListener also gives the registry; the engine is the owner of its sessions.
// In transparent mode each device reaches the broker over a connection of its
// own (transparentBroker), made with its own credentials.
func (g *Gateway) newCoAPListener(lc config.Listener) (udpgw.Listener, error) {
	c := lc.CoAP
	a := g.cfg.Auth
	opts := coap.Options{
		Bind:                  lc.Bind,
		AllowAnonymous:        a.Anonymous(),
		NotifyCON:             c.Notify == "con",
		MaxObserversPerTopic:  c.MaxObserversPerTopic,
		MaxObserversPerDevice: c.MaxObserversPerDevice,
		ObserverQueue:         c.ObserverQueue,
		AllowWildcards:        c.AllowWildcards,
		MaxPayload:            c.MaxPayload,
		MaxDatagram:           lc.MaxPacket,
		ReadBuffer:            lc.ReadBuffer,
		MaxUnproven:           c.MaxUnproven,
		UnprovenRate:          c.UnprovenRate,
		Keepalive:             c.Keepalive.D(),
		RetryAfter:            c.RetryAfter.D(),
		// The proxy bounds the wait for a PUBACK itself; this only must not be shorter.
		PublishTimeout: g.cfg.Upstream.PublishTimeout.D() + g.cfg.Upstream.ConnectTimeout.D(),
		DrainTimeout:   g.cfg.Gateway.DrainTimeout.D(),
	}
	if g.store != nil && !lc.IsTransparent() {
		// Observations survive a restart (udpgw/coap/persist.go), their
		// devices' sessions with them (sessionstore.go). In a fleet the
		// records are shared: each instance restores those of the devices
		// it owns (fleetsessions.go), and leaves the others'.
		opts.State = g.store.State()
		opts.Shared = g.fleetStore() != nil
	}
	if a.PasswordFile != "" {
		opts.CheckPassword = g.auth.checkPassword
	}
	opts.Refused = func(from netip.AddrPort, user, reason string) { g.auth.refused(lc.Name, from, user, reason) }
	if lc.Type == config.ListenerCoAPS {
		d := &coap.DTLSOptions{HandshakeTimeout: c.HandshakeTimeout.D()}
		if a.PSKFile != "" {
			d.PSK = g.pskKey
		}
		if c.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(g.cfg.Path(c.CertFile), g.cfg.Path(c.KeyFile))
			if err != nil {
				return nil, fmt.Errorf("gateway: listener %q: coap.cert_file: %w", lc.Name, err)
			}
			d.Certificates = []tls.Certificate{cert}
		}
		if d.PSK == nil && d.Certificates == nil {
			return nil, fmt.Errorf("gateway: listener %q: type coaps needs auth.psk_file or coap.cert_file and key_file", lc.Name)
		}
		opts.DTLS = d
	}
	env := g.env(lc)
	if lc.IsTransparent() {
		// Each device over its own broker connection, from its session's first
		// request until the session ends (udpgw/coap/transparent.go).
		tb := newTransparentBroker(g, lc)
		tb.everyDevice = true
		g.transparent = append(g.transparent, tb)
		env.Broker = tb
	}
	l, err := coap.New(env, opts)
	if err != nil {
		return nil, fmt.Errorf("gateway: listener %q: %w", lc.Name, err)
	}
	return l, nil
}
