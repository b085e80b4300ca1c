package coap

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/session"
)

// device is the engine's protocol state of one device: its observations, the
// state of its notifications' sending (notify.go) and, for coaps, the DTLS
// session of its last request. Where it is belongs to its session in the
// device registry (session.Session.Addr), never to a copy here.
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

	// mid numbers the messages of the gateway's own to the device (nextMID).
	mid atomic.Uint32

	mu   sync.Mutex // guards the fields below
	cred string     // the credential that first named this device ("" anonymous)
	sess *session.Session
	// cc is the go-coap connection of its last request: its DTLS session
	// (coaps), which its notifications take; for plain CoAP nil or a
	// connection made for a block-wise transfer, which they do not.
	cc *udpclient.Conn
	// obs are its observations, at most MaxObserversPerDevice, in the order
	// they were made; subs its observed filters, each with the observations
	// on it, a broker subscription each. Slices: a few entries, found by a
	// walk, cost less than maps.
	obs  []*observation
	subs []filterCount
	conn *brokerConn // transparent mode: the connection asked for its session
	// wait is what its sending waits for (a Confirmable notification's ACK,
	// its address's proof), nil when nothing; scheduled: it is on the
	// sender's ready list.
	wait      *pending
	scheduled bool
	gone      bool   // removed from the table; a new lookup makes a new one
	rr        uint16 // round-robin position among its observations
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
		d = &device{key: key, cred: cred}
		d.mid.Store(rand.Uint32())
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
// go-coap connection (notifications follow the device there); it goes back on
// the sender's ready list when notifications wait. It returns false when the
// device was removed meanwhile (the caller looks it up again) or when cred
// does not match the credential the device was first seen with.
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
	start := l.readyLocked(d)
	d.mu.Unlock()
	if start {
		l.schedule(d)
	}
	return true, true
}

// filterCount is one observed filter of a device and its observations.
type filterCount struct {
	filter string
	n      int
}

// addObsLocked adds o to d's observations, one more on o's filter, and
// reports how many there were on it before; d.mu is held.
func (d *device) addObsLocked(o *observation) (before int) {
	d.obs = append(d.obs, o)
	if i := d.subIndex(o.filter); i >= 0 {
		before = d.subs[i].n
		d.subs[i].n++
		return before
	}
	d.subs = append(d.subs, filterCount{filter: o.filter, n: 1})
	return 0
}

// obsLocked is d's observation with token, nil when none; d.mu is held.
func (d *device) obsLocked(token string) *observation {
	for _, o := range d.obs {
		if string(o.token) == token {
			return o
		}
	}
	return nil
}

// removeObsLocked takes o out of d's observations; d.mu is held.
func (d *device) removeObsLocked(o *observation) {
	if i := slices.Index(d.obs, o); i >= 0 {
		d.obs = slices.Delete(d.obs, i, i+1)
	}
	if len(d.obs) == 0 {
		d.obs = nil
	}
}

// subIndex is the index of filter in d.subs, -1 when absent; d.mu is held.
func (d *device) subIndex(filter string) int {
	for i, s := range d.subs {
		if s.filter == filter {
			return i
		}
	}
	return -1
}

// subCount is how many observations of d are on filter, and whether d has
// (or is getting) a subscription to it; d.mu is held.
func (d *device) subCount(filter string) (n int, ok bool) {
	if i := d.subIndex(filter); i >= 0 {
		return d.subs[i].n, true
	}
	return 0, false
}

// dropSubLocked forgets filter when no observation is on it; d.mu is held.
func (d *device) dropSubLocked(filter string) {
	if i := d.subIndex(filter); i >= 0 && d.subs[i].n == 0 {
		d.subs = slices.Delete(d.subs, i, i+1)
	}
	if len(d.subs) == 0 {
		d.subs = nil
	}
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
	return d.obsLocked(string(token)) != nil
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
	ended := slices.Clone(d.obs)
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
	for _, s := range d.subs {
		if s.n == 0 {
			fs = append(fs, s.filter)
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
	n, ok := d.subCount(filter)
	d.dropSubLocked(filter)
	d.mu.Unlock()
	if !ok || n > 0 {
		return
	}
	ctx, cancel := context.WithTimeout(l.ctx, l.opts.PublishTimeout)
	defer cancel()
	_ = l.env.Broker.Unsubscribe(ctx, d.key, filter)
}
