package mqttsn

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

type opKind uint8

const (
	opPublish opKind = iota
	opSubscribe
	opUnsubscribe
	opUnsubscribeAll
	opConnect    // transparent mode: the device's own broker connection
	opDisconnect // transparent mode: end it (graceful: without the will)
)

// op is one broker operation of a client, run by a worker.
type op struct {
	kind    opKind
	device  string // Broker device: the client id, or the address for QoS -1
	gen     uint32 // the client's connection when queued
	qos     mqttsn.QoS
	msgID   uint16
	topicID uint16
	idType  mqttsn.TopicIDType
	filter  string
	msg     udpgw.Message
	// opConnect: the CONNECT being accepted; opDisconnect: graceful.
	connect  *connectOp
	graceful bool
	// restore: opSubscribe of a subscription restored from the store: no
	// SUBACK (persist.go).
	restore bool
}

// connectOp is a CONNECT waiting for the device's broker connection.
type connectOp struct {
	peer session.Peer
	sig  connectSig
	will *session.Message
	user string
}

// result is what the broker answered.
type result struct {
	err     error
	granted byte
}

// enqueueOp queues o on c and makes c ready for a worker; e.mu is held. It
// returns false when c already has MaxClientOps operations queued (force
// ignores the bound: dropping subscriptions must happen).
func (e *Engine) enqueueOp(c *client, o op, force bool) bool {
	limit := e.o.MaxClientOps
	if c == e.anon {
		limit = e.o.MaxClientOps * e.o.Workers
	}
	if (!force && len(c.ops) >= limit) || e.stopping {
		return false
	}
	if o.device == "" {
		o.device = c.id
	}
	c.ops = append(c.ops, o)
	if !c.queued {
		c.queued = true
		e.ready = append(e.ready, c)
		e.cond.Signal()
	}
	return true
}

// worker runs clients' operations, one client at a time, round robin, until
// Serve ends and the ready list is empty.
func (e *Engine) worker() {
	e.mu.Lock()
	for {
		for len(e.ready) == 0 && !e.stopping {
			e.cond.Wait()
		}
		if len(e.ready) == 0 {
			e.mu.Unlock()
			return
		}
		c := e.ready[0]
		e.ready = popFront(e.ready)
		o := c.ops[0]
		c.ops = popFront(c.ops)
		if len(c.ops) == 0 && cap(c.ops) > keptOps {
			c.ops = nil // let a burst's array go
		}
		var res result
		if e.dropOps {
			res.err = errDropped
			e.m.drop(dropShutdown)
		} else {
			e.mu.Unlock()
			res = e.run(o)
			e.mu.Lock()
		}
		ob := getOutbox()
		if res.err != errDropped {
			e.complete(ob, c, o, res)
		}
		if len(c.ops) > 0 {
			e.ready = append(e.ready, c)
		} else {
			c.queued = false
			e.maybeRemove(c)
		}
		if len(ob.items) > 0 {
			e.mu.Unlock()
			e.flush(ob)
			e.mu.Lock()
		} else {
			e.flush(ob)
		}
	}
}

var errDropped = errors.New("dropped at shutdown")

// keptOps is the largest array of operations an idle client keeps (c.ops):
// one with one operation at a time (a sensor publishing at QoS 0, each
// publish done before the next) then queues without allocating, for one
// array of at most keptOps ops per client that has published.
const keptOps = 2

// popFront removes a queue's first element. A queue that it empties keeps
// its array from the start (not the slice past the element), so that the
// next append reuses it.
func popFront[T any](q []T) []T {
	var zero T
	q[0] = zero
	if len(q) == 1 {
		return q[:0]
	}
	return q[1:]
}

// run performs one operation at the broker; no lock is held.
func (e *Engine) run(o op) result {
	ctx := e.opCtx
	switch o.kind {
	case opPublish:
		return result{err: e.env.Broker.Publish(ctx, o.device, o.msg)}
	case opSubscribe:
		ctx, cancel := context.WithTimeout(ctx, e.o.OpTimeout)
		defer cancel()
		id, filter := o.device, o.filter
		granted, err := e.env.Broker.Subscribe(ctx, o.device, o.filter, byte(o.qos), func(m udpgw.Message) { e.deliver(id, filter, m) })
		return result{err: err, granted: granted}
	case opUnsubscribe:
		ctx, cancel := context.WithTimeout(ctx, e.o.OpTimeout)
		defer cancel()
		return result{err: e.env.Broker.Unsubscribe(ctx, o.device, o.filter)}
	case opUnsubscribeAll:
		e.env.Broker.UnsubscribeAll(o.device)
	case opConnect:
		ctx, cancel := context.WithTimeout(ctx, e.o.OpTimeout)
		defer cancel()
		c := o.connect
		conn := udpgw.Connection{Username: c.user, CleanSession: c.sig.clean, Keepalive: time.Duration(c.sig.duration) * time.Second}
		if w := c.will; w != nil {
			conn.Will = &udpgw.Message{Topic: w.Topic, Payload: w.Payload, QoS: w.QoS, Retain: w.Retain}
		}
		return result{err: e.connector.Connect(ctx, o.device, conn)}
	case opDisconnect:
		e.connector.Disconnect(o.device, o.graceful)
	}
	return result{}
}

// returnCode maps a Broker error to the MQTT-SN return code the client gets.
func returnCode(err error) (mqttsn.ReturnCode, refuseReason) {
	switch {
	case errors.Is(err, udpgw.ErrBadTopic):
		return mqttsn.InvalidTopicID, refuseInvalidTopic
	case errors.Is(err, udpgw.ErrForbidden):
		// MQTT-SN 1.2 has no "not authorized": "not supported" is permanent.
		return mqttsn.NotSupported, refuseForbidden
	}
	// ErrUnavailable, a timeout, anything else: the client should retry
	// later (§6.6: congestion, retry after T_WAIT).
	return mqttsn.Congestion, refuseCongestion
}

// complete answers the client for a finished operation; e.mu is held.
func (e *Engine) complete(ob *outbox, c *client, o op, res result) {
	if c == e.anon {
		if res.err != nil {
			e.m.drop(dropPublishFailed)
		}
		return
	}
	if o.kind == opSubscribe && o.restore {
		e.resubscribed(c, o, res)
		return
	}
	current := o.gen == c.gen && c.state.connected()
	switch o.kind {
	case opPublish:
		if res.err != nil {
			if ce := e.log.Check(zap.DebugLevel, "publish failed"); ce != nil {
				ce.Write(zap.String("client", o.device), zap.String("topic", o.msg.Topic), zap.Error(res.err))
			}
		}
		if o.qos == mqttsn.QoS0 {
			if res.err != nil {
				e.m.drop(dropPublishFailed)
			}
			return
		}
		if !current {
			return // the connection that sent it is gone; the client resends
		}
		if res.err != nil {
			delete(c.uplink, o.msgID)
			code, r := returnCode(res.err)
			e.m.refuse(r)
			e.sendc(ob, c, &mqttsn.Puback{TopicID: o.topicID, MsgID: o.msgID, ReturnCode: code})
			return
		}
		if o.qos == mqttsn.QoS1 {
			// MQTT-SN 1.2 §6.6: PUBACK, sent only now that the broker has it.
			delete(c.uplink, o.msgID)
			c.rememberDone(o.msgID, o.qos, e.digest(o.msg.Topic, o.msg.Payload), e.env.Now())
			e.sendc(ob, c, &mqttsn.Puback{TopicID: o.topicID, MsgID: o.msgID, ReturnCode: mqttsn.Accepted})
			return
		}
		// QoS 2 (§6.7 Figure 7): PUBREC now that the broker has it, once;
		// with a store, once the MsgId awaiting PUBREL is committed too
		// (persist.go: a PUBREC'ed MsgId survives a crash).
		c.uplink[o.msgID] = upRecording
		c.rememberDone(o.msgID, o.qos, e.digest(o.msg.Topic, o.msg.Payload), e.env.Now())
		e.reply(ob, c, &mqttsn.Pubrec{MsgID: o.msgID}, thenRecorded)

	case opSubscribe:
		if !current {
			return
		}
		if res.err != nil {
			c.subscribing--
			if s := c.subs[o.filter]; s != nil && c.subscribing == 0 {
				delete(c.subs, o.filter)
				e.save(c)
			}
			code, r := returnCode(res.err)
			e.m.refuse(r)
			e.sendc(ob, c, &mqttsn.Suback{MsgID: o.msgID, ReturnCode: code})
			if ce := e.log.Check(zap.DebugLevel, "subscribe failed"); ce != nil {
				ce.Write(zap.String("client", c.id), zap.String("filter", o.filter), zap.Error(res.err))
			}
			e.pump(ob, c, e.env.Now())
			return
		}
		granted := min(res.granted, byte(o.qos))
		if s := c.subs[o.filter]; s != nil {
			s.qos, s.idType = granted, o.idType
		}
		// Downlink held for this SUBACK may go after it (thenSubscribed);
		// with a store, once the subscription is committed (persist.go).
		if o.idType == mqttsn.TopicNormal && o.topicID != 0 {
			c.confirm(o.topicID) // the client learns it from this SUBACK
		}
		e.reply(ob, c, &mqttsn.Suback{Flags: mqttsn.Flags{QoS: mqttsn.QoS(granted)}, TopicID: o.topicID, MsgID: o.msgID, ReturnCode: mqttsn.Accepted}, thenSubscribed)

	case opUnsubscribe:
		if current {
			e.reply(ob, c, &mqttsn.Unsuback{MsgID: o.msgID}, thenNothing)
		}

	case opConnect:
		co := o.connect
		if c.connecting == nil || *c.connecting != co.peer {
			return // a newer CONNECT (from elsewhere) replaced this one
		}
		c.connecting = nil
		if res.err != nil {
			code, r := returnCode(res.err)
			if code == mqttsn.InvalidTopicID { // a will topic the rules reject
				code = mqttsn.NotSupported
			}
			e.m.refuse(r)
			e.send(ob, co.peer, &mqttsn.Connack{ReturnCode: code})
			e.clog(c).Info("CONNECT refused: the device's own broker connection failed", zap.Stringer("from", co.peer.Addr), zap.Stringer("code", code), zap.Error(res.err))
			return
		}
		e.accept(ob, co.peer, c.id, co.sig, co.will, e.env.Now())
	}
}

// connectThenAccept is accept for a listener in transparent mode: the CONNACK
// waits until the device's own broker connection is made (a worker makes it:
// no network I/O under e.mu). A copy of the CONNECT that arrives meanwhile
// from the same address is dropped: its CONNACK is on the way. e.mu is held.
func (e *Engine) connectThenAccept(ob *outbox, p session.Peer, id string, sig connectSig, will *session.Message, now time.Time) {
	if e.connector == nil {
		e.accept(ob, p, id, sig, will, now)
		return
	}
	c := e.byID[id]
	if c == nil {
		c = &client{id: id, state: stateGone}
		e.byID[id] = c
	}
	if c.connecting != nil && *c.connecting == p {
		e.m.duplicates.Inc()
		return
	}
	user := ""
	if e.dtls != nil {
		user = id // mqttsns: the proved PSK identity is the user
	}
	if !e.enqueueOp(c, op{kind: opConnect, connect: &connectOp{peer: p, sig: sig, will: will, user: user}}, false) {
		e.m.refuse(refuseCongestion)
		e.send(ob, p, &mqttsn.Connack{ReturnCode: mqttsn.Congestion})
		e.maybeRemove(c)
		return
	}
	c.connecting = &p
}

// disconnectBroker ends a transparent device's own broker connection:
// graceful (DISCONNECT, take-over) without its will, otherwise (the session was
// lost) the broker publishes it. e.mu is held.
func (e *Engine) disconnectBroker(c *client, graceful bool) {
	if e.connector != nil {
		e.enqueueOp(c, op{kind: opDisconnect, graceful: graceful}, true)
	}
}
