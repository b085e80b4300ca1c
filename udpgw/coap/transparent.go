package coap

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"slices"

	"github.com/plgd-dev/go-coap/v3/message/codes"
	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// Transparent mode. When env.Broker is a udpgw.Connector, each device has a
// broker connection of its own while its session lasts, made with its own
// identity, so that the broker's authentication and ACLs apply to it:
//
//   - The first request of a session makes it (Connector.Connect) on the
//     request's own goroutine (go-coap's handler loop of the peer, or an
//     unproven request's goroutine), with no engine lock held; a request of
//     the same device arriving meanwhile waits for it. Then the request is
//     served: its publish, read or observation goes over that connection.
//   - Credentials: the query's u and p (or t); a coaps device's PSK identity
//     as the user name (the Connector adds [listener.transparent] password);
//     none for a device that gave none (anonymous ones, named by their
//     address, included): the Connector uses the listener's. Clean session
//     always: CoAP has no session flag, nor anything for a broker to keep.
//     No will: a class's will stays the gateway's to publish.
//   - Every later request of the session must carry the same credentials
//     (4.01 otherwise): without a password file nothing else would stop a
//     device without credentials from using another's connection.
//   - The broker refusing the identity is 4.01 Unauthorized, as the gateway's
//     own password check (RFC 7252 §5.9.2.2: the client must improve its
//     authentication status first); 4.03 stays for a topic an ACL denies.
//     The broker away, or max_connections reached: 5.03 with Max-Age.
//   - A plain CoAP source that has not proven its address makes no connection
//     (a spoofed datagram must not open TCP connections at the broker): it
//     gets 4.01 with an Echo option (needProof), and its repeated request,
//     proven, makes it. A device whose connection exists is served there.
//   - The session's end (SessionEnded) closes the connection, with DISCONNECT:
//     there is no will for the broker to publish. A connection the broker
//     dropped (it refused a reconnect: ConnectionChecker) is made again by
//     the device's next request, and the observations it carried end.
//
// Lock order: device.connOp (held across Connect and Disconnect of that
// device) before device.mu; never taken with device.subOp held, nor subOp
// with it.

// ConnectionChecker is implemented by a udpgw.Connector that can tell whether
// a device's connection is still up: a broker that refuses a reconnect ends
// it. Without it, a connection made is taken to last until Disconnect.
type ConnectionChecker interface {
	Connected(device string) bool
}

// brokerConn is the engine's record of the connection it asked the Connector
// for on behalf of a device: the session it serves, the credentials that may
// use it, and how Connect ended. The connection is the Connector's.
type brokerConn struct {
	sess  *session.Session
	creds [sha256.Size]byte // credSum of the Connection it was made with
	done  chan struct{}     // closed when Connect returned
	err   error             // Connect's; read only after done
}

func (bc *brokerConn) finished() bool {
	select {
	case <-bc.done:
		return true
	default:
		return false
	}
}

// transparentConnection is what a request says of its device's broker
// identity.
func transparentConnection(st *connState, q query) udpgw.Connection {
	c := udpgw.Connection{CleanSession: true}
	switch {
	case st.identity != "":
		c.Username = st.identity
	case q.user != "":
		pass := q.password
		if pass == "" {
			pass = q.token
		}
		// A user name without a password is no credential: the device
		// connects with the listener's, as an anonymous one.
		if pass != "" {
			c.Username, c.Password = q.user, pass
		}
	}
	return c
}

// credSum binds a connection to the credentials it was made with, without
// keeping the password.
func credSum(c udpgw.Connection) [sha256.Size]byte {
	return sha256.Sum256([]byte(c.Username + "\x00" + c.Password))
}

func sameCreds(a, b [sha256.Size]byte) bool {
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// connUp reports whether the Connector still has device's connection.
func (l *Listener) connUp(device string) bool {
	return l.connChecker == nil || l.connChecker.Connected(device)
}

// usable reports whether the device named key has a connection a request
// with credentials c may use now, for the unproven path, which makes none: nil
// when it has, errNeedProof when it has none (or it is not made yet),
// errOtherCredentials when it was made with others.
func (l *Listener) usable(key string, c udpgw.Connection) error {
	l.mu.Lock()
	d := l.devices[key]
	l.mu.Unlock()
	if d == nil {
		return errNeedProof
	}
	d.mu.Lock()
	bc, s := d.conn, d.sess
	d.mu.Unlock()
	switch {
	case bc == nil || bc.sess != s || !bc.finished() || bc.err != nil:
		return errNeedProof
	case !sameCreds(bc.creds, credSum(c)):
		return errOtherCredentials
	case !l.connUp(key):
		return errNeedProof
	}
	return nil
}

// connect makes sure d has its broker connection for its current session,
// made with c, and returns nil once it has (see the Transparent mode notes
// above). A request that waited for another's Connect gets its error. proven
// is false on the unproven path, where a missing connection is errNeedProof.
// It runs on a request's goroutine, after attach.
func (l *Listener) connect(ctx context.Context, d *device, c udpgw.Connection, proven bool) error {
	sum := credSum(c)
	for {
		d.mu.Lock()
		bc, s := d.conn, d.sess
		dropped := false
		if bc != nil && bc.sess == s {
			if !bc.finished() {
				d.mu.Unlock()
				select {
				case <-bc.done:
				case <-ctx.Done():
					return ctx.Err()
				}
				if bc.err != nil {
					return bc.err
				}
				continue
			}
			if bc.err == nil {
				if !sameCreds(bc.creds, sum) {
					d.mu.Unlock()
					return errOtherCredentials
				}
				if l.connUp(d.key) {
					d.mu.Unlock()
					return nil
				}
				dropped = true
			}
		}
		if !proven {
			d.mu.Unlock()
			return errNeedProof
		}
		if !s.Live() {
			// Lost since attach: its SessionEnded would not close a
			// connection made now.
			d.mu.Unlock()
			return errSessionEnded
		}
		nb := &brokerConn{sess: s, creds: sum, done: make(chan struct{})}
		d.conn = nb
		var stale []*observation
		if dropped {
			// Their subscriptions went with the connection.
			stale = slices.Clone(d.obs)
		}
		d.mu.Unlock()
		for _, o := range stale {
			l.endObservation(d, o, endConnLost, false)
		}

		d.connOp.Lock()
		err := l.connector.Connect(ctx, d.key, c)
		nb.err = err
		close(nb.done)
		d.mu.Lock()
		orphan := err == nil && d.conn == nil // the session ended meanwhile
		d.mu.Unlock()
		if orphan {
			l.connector.Disconnect(d.key, true)
			err = errSessionEnded
		}
		d.connOp.Unlock()
		return err
	}
}

// endConnLocked takes d's connection record when it belongs to s, whose
// session ended; d.mu is held. The caller closes it with disconnect.
func (d *device) endConnLocked(s *session.Session) *brokerConn {
	bc := d.conn
	if bc == nil || bc.sess != s {
		return nil
	}
	d.conn = nil
	return bc
}

// disconnect closes the connection bc made for d's ended session, unless a
// newer one was asked for since (Connect replaces it then) or it was never
// made. Under connOp, bc is finished exactly when its Connect ran; when it did
// not run yet, connect sees the session's end and closes it itself. It runs
// on a goStart goroutine: Disconnect may wait for the broker.
func (l *Listener) disconnect(d *device, bc *brokerConn) {
	d.connOp.Lock()
	defer d.connOp.Unlock()
	d.mu.Lock()
	newer := d.conn != nil
	d.mu.Unlock()
	if newer || !bc.finished() || bc.err != nil {
		return
	}
	// Graceful: the device has no will at the broker, and DISCONNECT is the
	// orderly end of a clean session.
	l.connector.Disconnect(d.key, true)
}

// connectRefusal answers a request whose device could not have its broker
// connection: 4.01 with Echo on the unproven path (proof first), 4.01 for
// credentials that are not the connection's or that the broker refused, the
// Broker codes otherwise (5.03 with Max-Age when the broker is away or
// max_connections is reached).
func (l *Listener) connectRefusal(st *connState, q query, key string, err error) response {
	user := q.user
	if st.identity != "" {
		user = st.identity
	}
	switch {
	case errors.Is(err, errNeedProof):
		res := answer(codes.Unauthorized)
		res.proof = true
		return res
	case errors.Is(err, errOtherCredentials):
		if l.opts.Refused != nil {
			l.opts.Refused(st.addr, user, "not the credentials of the device's broker connection")
		}
		return answer(codes.Unauthorized)
	case errors.Is(err, udpgw.ErrForbidden):
		if l.opts.Refused != nil {
			l.opts.Refused(st.addr, user, "refused by the broker")
		}
		if ce := l.log.Check(zap.DebugLevel, "broker refused the device's connection"); ce != nil {
			ce.Write(zap.String("device", key), zap.Error(err))
		}
		return answer(codes.Unauthorized)
	}
	return l.brokerError(&device{key: key}, "connect", "", err)
}
