package mqttsn

import (
	"context"
	"errors"

	"go.uber.org/zap"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/udpgw"
)

type opKind uint8

const (
	opPublish opKind = iota
	opSubscribe
	opUnsubscribe
	opUnsubscribeAll
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
		e.ready[0] = nil
		e.ready = e.ready[1:]
		o := c.ops[0]
		c.ops[0] = op{}
		c.ops = c.ops[1:]
		if len(c.ops) == 0 {
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
			e.send(ob, c.peer(), &mqttsn.Puback{TopicID: o.topicID, MsgID: o.msgID, ReturnCode: code})
			return
		}
		if o.qos == mqttsn.QoS1 {
			// MQTT-SN 1.2 §6.6: PUBACK, sent only now that the broker has it.
			delete(c.uplink, o.msgID)
			c.rememberDone(o.msgID, o.qos, e.digest(o.msg.Topic, o.msg.Payload), e.env.Now())
			e.send(ob, c.peer(), &mqttsn.Puback{TopicID: o.topicID, MsgID: o.msgID, ReturnCode: mqttsn.Accepted})
			return
		}
		// QoS 2 (§6.7 Figure 7): PUBREC now that the broker has it, once.
		c.uplink[o.msgID] = upReceived
		c.rememberDone(o.msgID, o.qos, e.digest(o.msg.Topic, o.msg.Payload), e.env.Now())
		e.send(ob, c.peer(), &mqttsn.Pubrec{MsgID: o.msgID})

	case opSubscribe:
		if !current {
			return
		}
		c.subscribing--
		if res.err != nil {
			if s := c.subs[o.filter]; s != nil && c.subscribing == 0 {
				delete(c.subs, o.filter)
			}
			code, r := returnCode(res.err)
			e.m.refuse(r)
			e.send(ob, c.peer(), &mqttsn.Suback{MsgID: o.msgID, ReturnCode: code})
			if ce := e.log.Check(zap.DebugLevel, "subscribe failed"); ce != nil {
				ce.Write(zap.String("client", c.id), zap.String("filter", o.filter), zap.Error(res.err))
			}
		} else {
			granted := min(res.granted, byte(o.qos))
			if s := c.subs[o.filter]; s != nil {
				s.qos, s.idType = granted, o.idType
			}
			e.send(ob, c.peer(), &mqttsn.Suback{Flags: mqttsn.Flags{QoS: mqttsn.QoS(granted)}, TopicID: o.topicID, MsgID: o.msgID, ReturnCode: mqttsn.Accepted})
		}
		// Downlink held for this SUBACK may go now, after it.
		e.pump(ob, c, e.env.Now())

	case opUnsubscribe:
		if current {
			e.send(ob, c.peer(), &mqttsn.Unsuback{MsgID: o.msgID})
		}
	}
}
