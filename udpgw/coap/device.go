package coap

import (
	"context"
	"net/netip"
	"sync"
	"time"

	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/mqttgw/mqttgw/session"
)

// device is the engine's state of one device: where it is, and its observations.
// It is keyed like its session (client id, PSK identity or source address), so
// a device that changes address (NAT rebinding) keeps it.
type device struct {
	key string

	// subOp serializes this device's Broker.Subscribe and Unsubscribe calls, so
	// that an unsubscribe decided before a new registration never runs after the
	// registration's subscribe. It is held across those broker calls; nothing on
	// the reader or delivery path ever takes it.
	subOp sync.Mutex

	mu      sync.Mutex // guards the fields below
	cred    string     // the credential that first named this device ("" anonymous)
	sess    *session.Session
	addr    netip.AddrPort
	cc      *udpclient.Conn // the connection of its last request
	obs     map[string]*observation
	subs    map[string]int // observed filter → observations on it; a broker subscription each
	pumping bool           // a pump goroutine is sending this device's notifications
	rr      int            // round-robin start of the next pump pass
	gone    bool           // removed from the table; a new lookup makes a new one
	indexed netip.AddrPort // byAddr key; guarded by Listener.mu, not d.mu
}

// lookup returns the device for key, creating it. The device is not yet bound
// to an address or a session: see attach.
func (l *Listener) lookup(key string) *device {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.devices[key]
	if d == nil {
		d = &device{key: key, obs: map[string]*observation{}, subs: map[string]int{}}
		l.devices[key] = d
	}
	return d
}

// attach binds a device to its latest request: session, address and go-coap
// connection (notifications follow the device there), and restarts its pump
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
	// and its session follows its last address.
	s, created := l.opts.Sessions.Touch(session.Key{Listener: l.opts.Name, Device: d.key}, addr, now)
	if created {
		s.SetKeepalive(l.opts.Keepalive)
	}

	l.mu.Lock()
	if d.indexed != addr {
		if l.byAddr[d.indexed] == d {
			delete(l.byAddr, d.indexed)
		}
		d.indexed = addr
	}
	l.byAddr[addr] = d
	l.mu.Unlock()

	d.mu.Lock()
	d.sess, d.addr, d.cc = s, addr, cc
	start := l.shouldPumpLocked(d)
	d.mu.Unlock()
	if start {
		l.startPump(d)
	}
	return true, true
}

// byAddress is the device last seen at addr, for requests that carry no
// identity.
func (l *Listener) byAddress(addr netip.AddrPort) *device {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byAddr[addr]
}

// observes reports whether d has an observation with token.
func (d *device) observes(token []byte) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.obs[string(token)]
	return ok
}

// touch records traffic without a request (an ACK or RST) in the device's
// session, when that session is still the live one.
func (l *Listener) touch(d *device, now time.Time) {
	d.mu.Lock()
	s, addr := d.sess, d.addr
	d.mu.Unlock()
	k := session.Key{Listener: l.opts.Name, Device: d.key}
	if s != nil && l.opts.Sessions.Get(k) == s {
		l.opts.Sessions.Touch(k, addr, now)
	}
}

// SessionLost is the gateway's callback for a CoAP session that expired after
// 1.5 keepalives of silence: the device's observations end, its broker
// subscriptions go, and its state is forgotten unless it came back meanwhile.
func (l *Listener) SessionLost(s *session.Session) {
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
	d.mu.Unlock()
	for _, o := range ended {
		l.endObservation(d, o, endLost, false)
	}
	filters := l.unobservedFilters(d)
	l.goStart(func() {
		for _, f := range filters {
			l.syncSubscription(d, f)
		}
		l.forget(d, s)
	})
}

// forget removes d from the table when it is still the device lost with s and
// nothing came back to it.
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
	if l.byAddr[d.indexed] == d {
		delete(l.byAddr, d.indexed)
	}
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
	_ = l.opts.Broker.Unsubscribe(ctx, d.key, filter)
}
