package coap

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"time"

	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/session"
)

// device is the engine's protocol state of one device: its observations and
// the go-coap connection of its last request. Where it is belongs to its
// session in the device registry (session.Session.Addr), never to a copy here.
// It is keyed like its session (client id, PSK identity or source address), so
// a device that changes address (NAT rebinding) keeps it.
type device struct {
	key string

	// subOp serializes this device's Broker.Subscribe and Unsubscribe calls, so
	// that an unsubscribe decided before a new registration never runs after the
	// registration's subscribe. It is held across those broker calls; nothing on
	// the reader or delivery path ever takes it.
	subOp sync.Mutex
	// connOp serializes this device's Connector.Connect and Disconnect calls
	// (transparent mode), so that closing an ended session's connection never
	// closes the next session's. Held across them, like subOp.
	connOp sync.Mutex

	mu      sync.Mutex // guards the fields below
	cred    string     // the credential that first named this device ("" anonymous)
	sess    *session.Session
	cc      *udpclient.Conn // the connection of its last request
	obs     map[string]*observation
	subs    map[string]int // observed filter → observations on it; a broker subscription each
	conn    *brokerConn    // transparent mode: the connection asked for its session
	pumping bool           // a pump goroutine is sending this device's notifications
	rr      int            // round-robin start of the next pump pass
	gone    bool           // removed from the table; a new lookup makes a new one
}

// lookup returns the device for key, creating it. The device is not yet bound
// to a session: see attach. A device made while its session lives (restored
// after a restart: the engine's table is not kept) takes the credential the
// session's user stands for, so that no other credential takes it over.
func (l *Listener) lookup(key string) *device {
	l.mu.Lock()
	d := l.devices[key]
	l.mu.Unlock()
	if d != nil {
		return d
	}
	cred := ""
	if s := l.env.Sessions.Lookup(session.Key{Listener: l.env.Name, Device: key}); s != nil {
		cred = l.credOf(s.User())
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if d = l.devices[key]; d == nil {
		d = &device{key: key, cred: cred, obs: map[string]*observation{}, subs: map[string]int{}}
		l.devices[key] = d
	}
	return d
}

// credOf is the credential a session's user stands for (the inverse of
// userOf): a coaps device's PSK identity, else a password file user; "" for
// an anonymous device.
func (l *Listener) credOf(user string) string {
	switch {
	case user == "":
		return ""
	case l.dtls != nil:
		return "psk:" + user
	}
	return "user:" + user
}

// attach binds a device to its latest request: the registry records the
// request in the device's session (creating it on first contact, moving its
// address when it changed), and the device keeps that session and the request's
// go-coap connection (notifications follow the device there); its pump restarts
// when notifications wait. It returns false when the device was removed
// meanwhile (the caller looks it up again) or when cred does not match the
// credential the device was first seen with.
func (l *Listener) attach(d *device, cred string, addr netip.AddrPort, cc *udpclient.Conn, now time.Time) (ok, authorized bool) {
	d.mu.Lock()
	if d.gone {
		d.mu.Unlock()
		return false, true
	}
	if d.cred != "" && d.cred != cred {
		d.mu.Unlock()
		return true, false
	}
	d.cred = cred
	d.mu.Unlock()

	// RFC 7252 §4.1 leaves matching to endpoints; here the device is its key,
	// and its session follows its last address. A new session gets its class
	// and keepalive from the gateway's Created hook, inside Touch.
	s, _ := l.env.Sessions.Touch(l.key(d), session.Peer{Addr: addr}, now)
	s.SetUser(userOf(cred))

	d.mu.Lock()
	if d.gone {
		// Forgotten while the session was touched: the caller makes a new
		// device, which takes the same session.
		d.mu.Unlock()
		return false, true
	}
	d.sess, d.cc = s, cc
	start := l.shouldPumpLocked(d)
	d.mu.Unlock()
	if start {
		l.startPump(d)
	}
	return true, true
}

// userOf is the username a credential proves, for ACLs (%u): the password
// file's user, or the DTLS PSK identity (as Mosquitto's use_identity_as_username);
// "" for an anonymous device.
func userOf(cred string) string {
	if u, ok := strings.CutPrefix(cred, "user:"); ok {
		return u
	}
	u, _ := strings.CutPrefix(cred, "psk:")
	return u
}

// key is d's session key.
func (l *Listener) key(d *device) session.Key {
	return session.Key{Listener: l.env.Name, Device: d.key}
}

// byAddress is the device last seen at addr, for requests that carry no
// identity: the registry knows whose session was last at addr.
func (l *Listener) byAddress(addr netip.AddrPort) *device {
	s := l.env.Sessions.ByPeer(l.env.Name, session.Peer{Addr: addr})
	if s == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.devices[s.Key.Device]
}

// observes reports whether d has an observation with token.
func (d *device) observes(token []byte) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.obs[string(token)]
	return ok
}

// refresh records traffic without a request (an ACK or RST from from) in the
// device's session, when that session is still the live one: it never creates
// a session.
func (l *Listener) refresh(d *device, from netip.AddrPort, now time.Time) {
	d.mu.Lock()
	s := d.sess
	d.mu.Unlock()
	if s != nil {
		l.env.Sessions.Refresh(s, session.Peer{Addr: from}, now)
	}
}

// SessionEnded implements session.Owner: the registry ended the device's
// session (in practice EndLost, after Keepalive × 1.5 of silence; its will is
// out). The device's observations end, its broker subscriptions go, its own
// broker connection closes (transparent mode), and its state is forgotten
// unless it came back meanwhile (then d.sess is its new session, not s). It
// runs on the gateway's driver goroutine and does not wait for the broker.
func (l *Listener) SessionEnded(s *session.Session, why session.EndReason) {
	l.mu.Lock()
	d := l.devices[s.Key.Device]
	l.mu.Unlock()
	if d == nil {
		return
	}
	d.mu.Lock()
	if d.sess != s {
		d.mu.Unlock()
		return
	}
	ended := make([]*observation, 0, len(d.obs))
	for _, o := range d.obs {
		ended = append(ended, o)
	}
	bc := d.endConnLocked(s)
	d.mu.Unlock()
	if ce := l.log.Check(zap.DebugLevel, "session ended"); ce != nil {
		ce.Write(zap.String("device", d.key), zap.Stringer("reason", why), zap.Int("observations", len(ended)))
	}
	for _, o := range ended {
		l.endObservation(d, o, endLost, false)
	}
	filters := l.unobservedFilters(d)
	l.goStart(func() {
		for _, f := range filters {
			l.syncSubscription(d, f)
		}
		if bc != nil {
			l.disconnect(d, bc)
		}
		l.forget(d, s)
	})
}

// forget removes d from the table when it is still the device whose session s
// ended and nothing came back to it.
func (l *Listener) forget(d *device, s *session.Session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.devices[d.key] != d {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sess != s || len(d.obs) > 0 {
		return
	}
	d.gone = true
	delete(l.devices, d.key)
}

// unobservedFilters lists d's subscribed filters that no observation uses any more.
func (l *Listener) unobservedFilters(d *device) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var fs []string
	for f, n := range d.subs {
		if n == 0 {
			fs = append(fs, f)
		}
	}
	return fs
}

// syncSubscription unsubscribes d from filter when no observation uses it any
// more. It runs on a handler or a goStart goroutine, never on the reader.
func (l *Listener) syncSubscription(d *device, filter string) {
	d.subOp.Lock()
	defer d.subOp.Unlock()
	d.mu.Lock()
	n, ok := d.subs[filter]
	if ok && n == 0 {
		delete(d.subs, filter)
	}
	d.mu.Unlock()
	if !ok || n > 0 {
		return
	}
	ctx, cancel := context.WithTimeout(l.ctx, l.opts.PublishTimeout)
	defer cancel()
	_ = l.env.Broker.Unsubscribe(ctx, d.key, filter)
}
