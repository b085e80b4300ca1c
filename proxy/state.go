package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"go.uber.org/zap"
)

// State is the broker connection as an operator needs to see it.
type State struct {
	Connected bool
	// Since is when Connected last changed (the start when it never did).
	Since time.Time
	// Problem is why the last connection attempt failed, in words an operator
	// can act on; "" while connected or before the first failure.
	Problem string
	// URL is the broker's address as the gateway dials it, password hidden.
	URL string
}

// State reports the connection's state.
func (p *Proxy) State() State {
	p.mu.Lock()
	defer p.mu.Unlock()
	return State{Connected: p.state.connected, Since: p.state.since, Problem: p.state.problem, URL: redact(p.url)}
}

// connState is Proxy.state, guarded by Proxy.mu.
type connState struct {
	connected   bool
	since       time.Time
	problem     string
	connectedAt time.Time // of the current connection, for the client-id hint
	quickLosses int       // connections in a row lost with EOF soon after they were made
}

// onNotification hears every connection attempt paho makes: a failure is
// logged at once with its cause, and again only when the cause changes, so a
// wrong password or an unknown CA shows at start instead of a silent retry.
func (p *Proxy) onNotification(_ paho.Client, n paho.ConnectionNotification) {
	var err error
	switch n := n.(type) {
	case paho.ConnectionNotificationFailed:
		err = n.Reason
	case paho.ConnectionNotificationBrokerFailed:
		err = n.Reason
	default:
		return
	}
	p.connectFailed(err)
}

func (p *Proxy) connectFailed(err error) {
	p.m.connectFailures.Inc()
	why := explain(err, p.opts.ClientID)
	p.mu.Lock()
	changed := why != p.state.problem
	p.state.problem = why
	p.mu.Unlock()
	if changed {
		p.log.Warn("cannot connect to broker; retrying with backoff", zap.String("url", redact(p.url)), zap.String("problem", why))
	}
}

// markConnected and markLost keep State; markLost says when the connection
// ended right after it was made, which is how a broker answers a second
// client with the same id (MQTT 3.1.1 §3.1.4: it disconnects the older one).
func (p *Proxy) markConnected(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state.connected, p.state.since, p.state.problem, p.state.connectedAt = true, now, "", now
}

// neverConnected reports whether no connection was ever made.
func (p *Proxy) neverConnected() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.connectedAt.IsZero()
}

// quickLoss is how soon after connecting a loss suggests another client with
// the gateway's client id.
const quickLoss = 5 * time.Second

func (p *Proxy) markLost(now time.Time, err error) {
	p.mu.Lock()
	quick := now.Sub(p.state.connectedAt) < quickLoss && isEOF(err)
	if quick {
		p.state.quickLosses++
	} else {
		p.state.quickLosses = 0
	}
	p.state.connected, p.state.since = false, now
	// Twice in a row: once is also a broker that stopped just after we came.
	if p.state.quickLosses >= 2 {
		p.state.problem = fmt.Sprintf("the broker closed the connection right after it was made: another MQTT client may be using client id %q (a broker disconnects the older of two clients with one id); set upstream.client_id", p.opts.ClientID)
	} else {
		p.state.problem = explain(err, p.opts.ClientID)
	}
	why := p.state.problem
	p.mu.Unlock()
	p.log.Warn("lost connection to broker; reconnecting", zap.String("problem", why))
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// paho is the current paho client (connectLoop replaces it until the first
// connection is made).
func (p *Proxy) paho() paho.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.client
}

func (p *Proxy) setClient(c paho.Client) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.client = c
}

// explain turns a connection error into what to check.
func explain(err error, clientID string) string {
	var (
		unknownCA x509.UnknownAuthorityError
		verify    *tls.CertificateVerificationError
		host      x509.HostnameError
	)
	switch {
	case err == nil:
		return ""
	case errors.Is(err, packets.ErrorRefusedNotAuthorised), errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword):
		return "the broker refused the gateway's credentials: check upstream.username and upstream.password against the broker's password_file (" + err.Error() + ")"
	case errors.Is(err, packets.ErrorRefusedIDRejected):
		return fmt.Sprintf("the broker rejected client id %q: set upstream.client_id", clientID)
	case errors.As(err, &host):
		return "TLS: the broker's certificate is not valid for this host name: set upstream.tls.server_name or connect by the name in the certificate (" + err.Error() + ")"
	case errors.As(err, &unknownCA), errors.As(err, &verify):
		return "TLS: the broker's certificate is not signed by a CA the gateway trusts: set upstream.tls.ca_file to the broker's CA (" + err.Error() + ")"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused: is the broker running and listening on that address and port?"
	}
	return err.Error()
}

// connectLoop makes the first connection, retrying with a jittered doubling
// backoff from ReconnectMin to ReconnectMax (paho's own connect retry waits a
// fixed interval, four attempts a second with the defaults); once connected,
// paho's auto-reconnect takes over, with its own backoff.
//
// Each attempt gets a fresh paho client: paho does not promise that a client
// whose Connect failed works after a second Connect (publishes hung).
func (p *Proxy) connectLoop(o *paho.ClientOptions) {
	defer close(p.connectDone)
	wait := p.opts.ReconnectMin
	warned := false
	for first := true; ; first = false {
		c := p.paho()
		if !first {
			c = paho.NewClient(o)
			p.setClient(c)
		}
		tok := c.Connect()
		ok := tok.WaitTimeout(p.opts.ConnectTimeout + time.Second)
		if ok && tok.Error() == nil {
			select {
			case <-p.stop: // Close finished during the attempt and disconnected an older client
				c.Disconnect(0)
			default:
			}
			return
		}
		// A failed attempt was reported to onNotification by paho already.
		if !ok && !warned {
			warned = true
			p.log.Warn("broker not reachable yet; retrying in the background", zap.String("url", redact(p.url)))
		}
		d := wait/2 + rand.N(wait/2+1)
		wait = min(2*wait, p.opts.ReconnectMax)
		select {
		case <-p.stop:
			return
		case <-p.retryNow:
		case <-time.After(d):
		}
	}
}
