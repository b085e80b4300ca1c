package coap

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/pion/logging"
	dtlsserver "github.com/plgd-dev/go-coap/v3/dtls/server"
	coapNet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/monitor/inactivity"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/metrics"
	"github.com/mqttgw/mqttgw/udpgw"
)

// dtlsListener is a coaps listener: pion binds the UDP socket and runs one
// handshake per new peer; go-coap's DTLS server runs one reader per session.
type dtlsListener struct {
	ln         *coapNet.DTLSListener
	srv        *dtlsserver.Server
	handshakes *metrics.Counter // completed handshakes
}

// cidLength is the length of the connection ids (RFC 9146) the listener asks
// clients to put in their records.
const cidLength = 8

// dtlsOption applies the gateway's settings to go-coap's DTLS server config
// directly, so that no go-coap default (16 s inactivity, 30 s handshake,
// printing errors) is left implicit.
type dtlsOption func(*dtlsserver.Config)

func (o dtlsOption) DTLSServerApply(c *dtlsserver.Config) { o(c) }

func (l *Listener) newDTLS() (*dtlsListener, error) {
	d := l.opts.DTLS
	if d.PSK == nil && len(d.Certificates) == 0 {
		return nil, ErrNoCredentials
	}
	opts := []piondtls.ServerOption{
		piondtls.WithExtendedMasterSecret(piondtls.RequestExtendedMasterSecret),
		piondtls.WithLoggerFactory(pionLogs{l.log.Named("dtls")}),
		piondtls.WithMTU(mtu),
		// A stalled handshake ends after HandshakeTimeout (go-coap enforces it
		// with the context); pion's flights are retransmitted every second.
		piondtls.WithFlightInterval(time.Second),
		// RFC 9146: a client that supports connection ids puts this one in its
		// records. go-coap's NewDTLSListener goes through pion's
		// dtls.ListenWithOptions, which then routes datagrams by connection id
		// (not only by source address), and pion answers the latest address an
		// authenticated record came from (§6): a device behind a rebinding NAT
		// keeps its DTLS session, and its go-coap connection with it.
		piondtls.WithConnectionIDGenerator(piondtls.RandomCIDGenerator(cidLength)),
		// pion binds the socket: read_buffer and the kernel's drop count are
		// applied to it as it is made.
		piondtls.WithListenConfig(net.ListenConfig{Control: udpgw.ListenControl(l.env, l.opts.ReadBuffer)}),
	}
	if d.PSK != nil {
		psk := d.PSK
		opts = append(opts, piondtls.WithPSK(func(identity []byte) ([]byte, error) {
			key, ok := psk(string(identity))
			if !ok {
				return nil, fmt.Errorf("unknown PSK identity %q", identity)
			}
			return key, nil
		}), piondtls.WithCipherSuites(
			piondtls.TLS_PSK_WITH_AES_128_CCM_8, // RFC 7252 §9.1.3.1: the mandatory PSK suite
			piondtls.TLS_PSK_WITH_AES_128_CCM,
			piondtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
			piondtls.TLS_PSK_WITH_AES_256_CCM_8,
			piondtls.TLS_PSK_WITH_AES_128_CBC_SHA256,
			piondtls.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256,
			piondtls.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256,
			piondtls.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
			piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, // RFC 7252 §9.1.3.2, certificates
			piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			piondtls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			piondtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			piondtls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		))
	}
	if len(d.Certificates) > 0 {
		opts = append(opts, piondtls.WithCertificates(d.Certificates...))
	}
	ln, err := coapNet.NewDTLSListener("udp", l.opts.Bind, coapNet.NewDTLSServerOptions(opts...))
	if err != nil {
		return nil, fmt.Errorf("coap: %s: bind %q: %w", l.env.Name, l.opts.Bind, err)
	}
	srv := dtlsserver.New(dtlsOption(func(c *dtlsserver.Config) {
		c.Ctx = l.ctx
		c.Errors = l.dtlsError
		c.MessagePool = l.pool
		c.Handler = l.handle
		c.ProcessReceivedMessage = l.processReceived
		c.RequestMonitor = l.monitor
		c.ReceivedMessageQueueSize = 2 * maxInflight
		c.MaxMessageSize = uint32(l.opts.MaxDatagram)
		c.MTU = mtu
		c.BlockwiseEnable = true
		c.BlockwiseSZX = blockwise.SZX1024
		c.BlockwiseTransferTimeout = blockTransferTimeout
		c.HandshakeTimeout = d.HandshakeTimeout
		// A DTLS session is the only way to reach a device behind it, so it lives
		// as long as the device's session: Keepalive × 1.5 by default (go-coap's
		// default closes it after 16 s of silence). No CoAP ping keepalive: a
		// sleepy device could not answer it.
		idle := l.opts.ConnIdle
		c.CreateInactivityMonitor = func() udpclient.InactivityMonitor {
			return udpclient.DeferInactivityWhileConfirmableMessagesPending(
				inactivity.New(idle, func(cc *udpclient.Conn) { _ = cc.Close() }))
		}
		c.OnNewConn = l.onNewDTLSConn
		c.PeriodicRunner = func(f func(now time.Time) bool) {
			l.goStart(func() {
				t := time.NewTicker(2 * time.Second)
				defer t.Stop()
				for {
					select {
					case <-l.ctx.Done():
						return
					case now := <-t.C:
						if !f(now) {
							return
						}
					}
				}
			})
		}
	}))
	hs := l.env.Metrics.Counter("mqttgw_coap_dtls_handshakes_total", "DTLS handshakes completed.", "listener", l.env.Name)
	return &dtlsListener{ln: ln, srv: srv, handshakes: hs}, nil
}

// onNewDTLSConn runs after a handshake: it records the peer's PSK identity, which
// names the device (RFC 7252 §9.1.3.1).
func (l *Listener) onNewDTLSConn(cc *udpclient.Conn) {
	l.dtls.handshakes.Inc()
	st := &connState{}
	if ap, err := netip.ParseAddrPort(cc.RemoteAddr().String()); err == nil {
		st.addr = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if c, ok := cc.NetConn().(interface {
		ConnectionState() (piondtls.State, bool)
	}); ok {
		if s, ok := c.ConnectionState(); ok {
			st.identity = string(s.IdentityHint)
		}
	}
	cc.SetContextValue(stateKey{}, st)
}

// dtlsError counts failed handshakes; the rest is coapError.
func (l *Listener) dtlsError(err error) {
	if before, after, ok := strings.Cut(err.Error(), ": handshake failed: "); ok {
		l.ctr.handshakeFailed.Inc()
		if ce := l.log.Check(zap.DebugLevel, "handshake failed"); ce != nil {
			ce.Write(zap.Error(err))
		}
		// A failed handshake is usually a device that cannot authenticate:
		// visible at info level (rate-limited by the gateway) with its source.
		if l.opts.Refused != nil {
			from, _ := netip.ParseAddrPort(before) // go-coap: "ADDR: handshake failed: ERR"
			l.opts.Refused(from, "", handshakeReason(after))
		}
		return
	}
	l.coapError(err)
}

// handshakeReason names why a DTLS handshake failed, in a few fixed words (a
// metric label): pion's errors carry identities and addresses.
func handshakeReason(err string) string {
	switch {
	case strings.Contains(err, "PSK identity"):
		return "DTLS: unknown PSK identity"
	case strings.Contains(err, "deadline") || strings.Contains(err, "timeout"):
		return "DTLS: handshake timed out (a wrong PSK key looks like this)"
	case strings.Contains(err, "certificate"):
		return "DTLS: certificate refused"
	}
	return "DTLS: handshake failed"
}

// pionLogs sends pion's logs to zap at debug level: a failed handshake is one
// device's problem, counted in mqttgw_coap_dtls_handshake_failures_total.
type pionLogs struct{ log *zap.Logger }

func (p pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{p.log.Sugar().With("scope", scope)}
}

type pionLogger struct{ s *zap.SugaredLogger }

func (p pionLogger) Trace(string)          {}
func (p pionLogger) Tracef(string, ...any) {}
func (p pionLogger) Debug(m string)        { p.s.Debug(m) }
func (p pionLogger) Debugf(f string, a ...any) {
	p.s.Debugf(f, a...)
}
func (p pionLogger) Info(m string)             { p.s.Debug(m) }
func (p pionLogger) Infof(f string, a ...any)  { p.s.Debugf(f, a...) }
func (p pionLogger) Warn(m string)             { p.s.Debug(m) }
func (p pionLogger) Warnf(f string, a ...any)  { p.s.Debugf(f, a...) }
func (p pionLogger) Error(m string)            { p.s.Debug(m) }
func (p pionLogger) Errorf(f string, a ...any) { p.s.Debugf(f, a...) }
