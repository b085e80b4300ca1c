package mqttsn

import (
	"time"

	"go.uber.org/zap"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/udpgw"
)

// deliver is the callback of a subscription of client id on filter: it runs on
// the broker's delivery goroutine, queues m and sends at most a few datagrams;
// it never waits. A message for a filter the client no longer has (unsubscribed,
// session gone) is dropped.
func (e *Engine) deliver(id, filter string, m udpgw.Message) {
	ob := getOutbox()
	e.mu.Lock()
	c := e.byID[id]
	if c != nil && !e.stopping && c.state != stateGone && c.subs[filter] != nil {
		if c.queue.len() >= e.o.MaxBuffered {
			// Bounded buffer, drop-oldest (ARCHITECTURE.md rule 4).
			c.queue.popFront()
			e.m.drop(dropBufferFull)
			if c.awakeBudget > 0 {
				c.awakeBudget--
			}
		}
		c.queue.pushBack(m)
		e.pump(ob, c, e.env.Now())
		e.saveDownlink(c) // buffered for a client not active: in its record
		if c.chk != nil && c.chk.fresh {
			e.bufferedUnproven(ob, c) // bounded all together (unproven.go)
		}
	}
	e.mu.Unlock()
	e.flush(ob)
}

// pump sends the client's next messages while nothing is in flight: every QoS 0
// message up to the next QoS 1 or 2 one (or REGISTER), which then waits for its
// acknowledgement. Asleep and disconnected clients only buffer; an awake client
// gets the messages buffered when it woke, then PINGRESP, and sleeps again
// (MQTT-SN 1.2 §6.14). e.mu is held.
func (e *Engine) pump(ob *outbox, c *client, now time.Time) {
	for c.out == nil && c.subscribing == 0 {
		if c.chk != nil && c.chk.held {
			return // until its address is proven (unproven.go)
		}
		switch c.state {
		case stateActive:
		case stateAwake:
			if c.awakeBudget <= 0 || c.queue.len() == 0 {
				// Everything buffered was delivered and (QoS >= 1)
				// acknowledged: PINGRESP tells the client it may sleep.
				c.awakeBudget = 0
				e.sleep(c)
				e.sendc(ob, c, &mqttsn.Pingresp{})
				return
			}
			c.awakeBudget--
		default:
			return
		}
		m, ok := c.queue.popFront()
		if !ok {
			return
		}
		e.saveDownlink(c)
		if !e.startOut(ob, c, m, false, now) && c.state == stateAwake {
			c.awakeBudget++ // held: it is still to come in this awake period
		}
	}
}

// downlinkTopic picks how to name topic to the client (MQTT-SN 1.2 §6.7), in the
// form it subscribed with: the predefined id or short name of a subscription made
// that way, else the id it already knows (registered by either side, or given in
// the SUBACK of a subscription by name); ok is false when a REGISTER is needed
// first, as for a topic matched by a wildcard filter: the client then learns the
// name, which it could not from a predefined id it never asked for.
func (e *Engine) downlinkTopic(c *client, topic string) (t mqttsn.TopicIDType, id uint16, ok bool) {
	if s := c.subs[topic]; s != nil {
		switch s.idType {
		case mqttsn.TopicPredefined:
			if id, ok := e.predef.id(c.id, topic); ok {
				return mqttsn.TopicPredefined, id, true
			}
		case mqttsn.TopicShort:
			if id, err := mqttsn.ShortTopicID(topic); err == nil {
				return mqttsn.TopicShort, id, true
			}
		}
	}
	if id, ok := c.topics.id(topic); ok {
		if c.confirmed != nil {
			if _, known := c.confirmed[id]; !known {
				return 0, 0, false // REGISTER it again first (see accept)
			}
		}
		return mqttsn.TopicNormal, id, true
	}
	return 0, 0, false
}

// confirm records that the client acknowledged topic id on this connection.
func (c *client) confirm(id uint16) {
	if c.confirmed != nil {
		c.confirmed[id] = struct{}{}
	}
}

// startOut sends m: a REGISTER first when the client has no id for its topic
// (MQTT-SN 1.2 §6.5: the gateway registers a topic before it PUBLISHes on it,
// e.g. for a wildcard subscription), else the PUBLISH. It returns false when
// the datagram did not fit the budget of the client's unproven address: m
// waits at the head of its queue for the proof (hold).
func (e *Engine) startOut(ob *outbox, c *client, m udpgw.Message, reregistered bool, now time.Time) bool {
	t, id, ok := e.downlinkTopic(c, m.Topic)
	if ok {
		return e.sendPublish(ob, c, m, t, id, reregistered, now)
	}
	_, known := c.topics.id(m.Topic) // registered before: REGISTERed again (resumed session)
	id, ok = e.register(c, m.Topic, regGateway)
	if !ok {
		e.m.drop(dropTopicLimit)
		if ce := e.log.Check(zap.DebugLevel, "no topic id left to REGISTER: message dropped"); ce != nil {
			ce.Write(zap.String("client", c.id), zap.String("topic", m.Topic), zap.Int("max_topics", e.o.MaxTopics))
		}
		return true
	}
	e.save(c) // a registration
	reg := &mqttsn.Register{TopicID: id, MsgID: c.allocMsgID(), TopicName: m.Topic}
	switch err := e.putc(ob, c, reg); err {
	case nil:
		c.out = &outbound{msg: m, stage: outRegister, msgID: reg.MsgID, topicID: id, due: now.Add(e.o.RetryInterval), reregistered: reregistered, sentTo: c.peer().Addr}
		e.retrying[c] = struct{}{}
	case udpgw.ErrHeld:
		if !known {
			c.unregister(id)
		}
		e.hold(ob, c, m, now)
		return false
	default:
		if !known {
			c.unregister(id)
		}
		e.m.drop(dropDownlinkTooLarge)
	}
	return true
}

// sendPublish sends the PUBLISH of m; QoS 1 and 2 stay in flight. It returns
// false when the datagram was held (see startOut).
func (e *Engine) sendPublish(ob *outbox, c *client, m udpgw.Message, t mqttsn.TopicIDType, id uint16, reregistered bool, now time.Time) bool {
	p := &mqttsn.Publish{Flags: mqttsn.Flags{QoS: mqttsn.QoS(min(m.QoS, 2)), Retain: m.Retain, TopicIDType: t}, TopicID: id, Data: m.Payload}
	if m.QoS > 0 {
		p.MsgID = c.allocMsgID()
	}
	switch err := e.putc(ob, c, p); err {
	case nil:
	case udpgw.ErrHeld:
		e.hold(ob, c, m, now)
		return false
	default:
		e.m.drop(dropDownlinkTooLarge)
		if ce := e.log.Check(zap.DebugLevel, "broker message too large for max_packet: dropped"); ce != nil {
			ce.Write(zap.String("client", c.id), zap.String("topic", m.Topic), zap.Int("bytes", len(m.Payload)))
		}
		return true
	}
	if m.QoS == 0 {
		return true
	}
	c.out = &outbound{msg: m, stage: outPublish, msgID: p.MsgID, topicID: id, idType: t, due: now.Add(e.o.RetryInterval), reregistered: reregistered, sentTo: c.peer().Addr}
	e.retrying[c] = struct{}{}
	return true
}

// finishOut ends the exchange in flight and sends what comes next.
func (e *Engine) finishOut(ob *outbox, c *client, now time.Time) {
	c.out = nil
	delete(e.retrying, c)
	e.saveDownlink(c)
	e.pump(ob, c, now)
}

// pauseOut stops retransmitting the message in flight to a client that went to
// sleep or away: it stays in flight, with its MsgId, and resumeOut sends it again
// (with DUP) when the client is back, so that a QoS 2 message the client may
// already hold is never delivered under a new MsgId (MQTT-SN 1.2 §6.7, §6.14).
func (e *Engine) pauseOut(c *client) {
	delete(e.retrying, c)
}

// resumeOut sends the paused message in flight again, to a client that woke up
// or reconnected, and restarts its retransmissions.
func (e *Engine) resumeOut(ob *outbox, c *client, now time.Time) {
	o := c.out
	if o == nil {
		return
	}
	o.retries = 0
	o.due = now.Add(e.o.RetryInterval)
	e.retrying[c] = struct{}{}
	e.resend(ob, c, o)
}

// resend sends the message in flight again: REGISTER, PUBLISH with DUP, or
// PUBREL. One that does not fit the budget of the client's unproven address
// is marked unsent and waits for the proof (holdOut).
func (e *Engine) resend(ob *outbox, c *client, o *outbound) {
	var m mqttsn.Message
	switch o.stage {
	case outRegister:
		m = &mqttsn.Register{TopicID: o.topicID, MsgID: o.msgID, TopicName: o.msg.Topic}
	case outPublish:
		m = &mqttsn.Publish{
			Flags:   mqttsn.Flags{DUP: true, QoS: mqttsn.QoS(o.msg.QoS), Retain: o.msg.Retain, TopicIDType: o.idType},
			TopicID: o.topicID, MsgID: o.msgID, Data: o.msg.Payload,
		}
	case outRelease:
		m = &mqttsn.Pubrel{MsgID: o.msgID}
	default:
		return
	}
	switch err := e.putc(ob, c, m); err {
	case nil:
		o.sentTo, o.unsent = c.peer().Addr, false
	case udpgw.ErrHeld:
		e.holdOut(ob, c, e.env.Now())
	}
}

// onRegack handles the client's answer to the gateway's REGISTER. MQTT-SN 1.2 §6.5.
func (e *Engine) onRegack(ob *outbox, c *client, m *mqttsn.Regack, now time.Time) {
	if e.probeAnswer(ob, c, m, now) {
		return // the answer to the probe of its address (unproven.go)
	}
	o := c.out
	if o == nil || o.stage != outRegister || o.msgID != m.MsgID {
		e.m.duplicates.Inc()
		e.missed(c, now) // a guess, while its address is unproven
		return
	}
	e.echoed(ob, c, o, now)
	c.out = nil
	delete(e.retrying, c)
	e.save(c) // the registration is confirmed, or goes
	if m.ReturnCode != mqttsn.Accepted {
		c.unregister(o.topicID)
		e.m.drop(dropRegisterRejected)
		if ce := e.log.Check(zap.DebugLevel, "client refused the gateway's REGISTER: message dropped"); ce != nil {
			ce.Write(zap.String("client", c.id), zap.String("topic", o.msg.Topic), zap.Stringer("code", m.ReturnCode))
		}
		e.pump(ob, c, now)
		return
	}
	c.confirm(o.topicID)
	e.sendPublish(ob, c, o.msg, mqttsn.TopicNormal, o.topicID, o.reregistered, now)
	if c.out == nil {
		e.pump(ob, c, now)
	}
}

// onPuback handles PUBACK from the client: the end of a QoS 1 delivery, or a
// rejection of any PUBLISH. MQTT-SN 1.2 §6.6.
func (e *Engine) onPuback(ob *outbox, c *client, m *mqttsn.Puback, now time.Time) {
	o := c.out
	if o == nil || o.stage != outPublish || o.msgID != m.MsgID {
		if m.ReturnCode == mqttsn.InvalidTopicID && hasTopic(c, m.TopicID) {
			// A QoS 0 PUBLISH the client could not map: register again next time.
			c.unregister(m.TopicID)
			e.save(c)
		} else if m.MsgID != 0 {
			e.missed(c, now) // a guess, while its address is unproven
		}
		e.m.duplicates.Inc()
		return
	}
	e.echoed(ob, c, o, now)
	switch m.ReturnCode {
	case mqttsn.Accepted:
	case mqttsn.InvalidTopicID:
		// The client lost the id (it restarted, say): REGISTER again, once.
		if o.idType == mqttsn.TopicNormal {
			c.unregister(o.topicID)
			e.save(c)
		}
		if !o.reregistered && o.idType == mqttsn.TopicNormal {
			c.out = nil
			delete(e.retrying, c)
			e.startOut(ob, c, o.msg, true, now)
			if c.out == nil {
				e.pump(ob, c, now)
			}
			return
		}
		e.m.drop(dropRegisterRejected)
	default:
		e.m.drop(dropRegisterRejected)
	}
	e.finishOut(ob, c, now)
}

// onPubrec continues a QoS 2 delivery: PUBREL, then wait for PUBCOMP.
// MQTT-SN 1.2 §6.7 (Figure 7).
func (e *Engine) onPubrec(ob *outbox, c *client, m *mqttsn.Pubrec, now time.Time) {
	o := c.out
	if o == nil || o.msgID != m.MsgID || o.msg.QoS != 2 || o.stage == outRegister {
		e.m.duplicates.Inc()
		e.missed(c, now) // a guess, while its address is unproven
		return
	}
	if o.stage == outRelease {
		e.m.duplicates.Inc() // our PUBREL was lost
	} else {
		e.echoed(ob, c, o, now)
	}
	o.stage = outRelease
	o.retries = 0
	o.due = now.Add(e.o.RetryInterval)
	e.saveDownlink(c)
	e.resend(ob, c, o) // PUBREL
}

// onPubcomp ends a QoS 2 delivery. MQTT-SN 1.2 §6.7.
func (e *Engine) onPubcomp(ob *outbox, c *client, m *mqttsn.Pubcomp, now time.Time) {
	o := c.out
	if o == nil || o.stage != outRelease || o.msgID != m.MsgID {
		e.m.duplicates.Inc()
		e.missed(c, now) // a guess, while its address is unproven
		return
	}
	e.echoed(ob, c, o, now)
	e.finishOut(ob, c, now)
}

// retransmit is Tick's step for a client with a message in flight past its
// deadline: send it again (PUBLISH with DUP) up to MaxRetries times, then give
// up (MQTT-SN 1.2 §6.13). An awake client that stopped answering went back to
// sleep: the message stays in flight, paused, for its next wake-up; an active
// one loses it (counted), and its keepalive decides whether it is lost.
func (e *Engine) retransmit(ob *outbox, c *client, now time.Time) {
	o := c.out
	if o == nil {
		delete(e.retrying, c)
		return
	}
	if now.Before(o.due) {
		return
	}
	if !c.state.connected() || c.state == stateAsleep {
		e.pauseOut(c)
		return
	}
	if o.retries >= e.o.MaxRetries {
		e.m.drop(dropRetries)
		if ce := e.log.Check(zap.DebugLevel, "no answer after N_RETRY retransmissions"); ce != nil {
			ce.Write(zap.String("client", c.id), zap.String("topic", o.msg.Topic), zap.Int("retries", o.retries), zap.Stringer("state", c.state))
		}
		if c.state == stateAwake {
			e.pauseOut(c)
			e.sleep(c)
			c.awakeBudget = 0
			return
		}
		if o.stage == outRegister {
			c.unregister(o.topicID)
			e.save(c)
		}
		e.finishOut(ob, c, now)
		return
	}
	o.due = now.Add(e.o.RetryInterval)
	if o.unsent {
		// Held for the proof of the client's address: not a try; its
		// budget may have grown meanwhile.
		e.resend(ob, c, o)
		return
	}
	o.retries++
	e.m.retransmitted.Inc()
	e.resend(ob, c, o)
}

func hasTopic(c *client, id uint16) bool {
	_, ok := c.topics.name(id)
	return ok
}
