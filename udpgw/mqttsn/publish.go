package mqttsn

import (
	"bytes"
	"hash/maphash"
	"time"

	"go.uber.org/zap"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// uplinkTopic resolves the topic of a client's PUBLISH (MQTT-SN 1.2 §6.7): a
// registered id, a predefined id (the client's own, then global) or a short name.
// clientID is "" for a client that is not connected.
func (e *Engine) uplinkTopic(c *client, clientID string, t mqttsn.TopicIDType, id uint16) (string, bool) {
	switch t {
	case mqttsn.TopicNormal:
		if c == nil {
			return "", false
		}
		name, ok := c.topics.name(id)
		if ok {
			c.confirm(id) // the client uses it: it knows it
		}
		return name, ok
	case mqttsn.TopicPredefined:
		return e.predef.topic(clientID, id)
	case mqttsn.TopicShort:
		return mqttsn.ShortTopicName(id), true
	}
	return "", false
}

// onPublishMinusOne handles a QoS -1 PUBLISH: fire and forget, from any address,
// connected or not, with a predefined id or a short name (MQTT-SN 1.2 §6.8). It
// keeps no state about the sender.
func (e *Engine) onPublishMinusOne(ob *outbox, p session.Peer, m *mqttsn.Publish, now time.Time) {
	var c *client
	clientID, device := "", ""
	if cc := e.clientAt(p); cc != nil && cc.state.connected() && e.sameIdentity(cc, p) {
		c, clientID, device = cc, cc.id, cc.id
		e.refresh(ob, cc, p, now)
	}
	if m.Flags.TopicIDType == mqttsn.TopicNormal {
		e.m.drop(dropMinusOneTopic)
		e.debugBad(now, "QoS -1 PUBLISH with a normal topic id dropped", p.Addr, nil, zap.Uint16("topic_id", m.TopicID))
		return
	}
	topic, ok := e.uplinkTopic(c, clientID, m.Flags.TopicIDType, m.TopicID)
	if !ok {
		// Nobody to answer: the sender may not even be listening.
		e.m.drop(dropMinusOneTopic)
		e.debugBad(now, "QoS -1 PUBLISH with an unknown predefined id dropped", p.Addr, nil, zap.Uint16("topic_id", m.TopicID))
		return
	}
	if device == "" {
		device = p.Addr.String() // the Broker's name of a sender with no connection
	}
	// The payload is copied: m.Data is the reader's buffer, and the Broker
	// keeps what it is given (the gateway's last-value cache, its queue).
	o := op{kind: opPublish, device: device, qos: mqttsn.QoSMinusOne,
		msg: udpgw.Message{Topic: topic, Payload: bytes.Clone(m.Data), Retain: m.Flags.Retain}}
	if e.goesDirect(ob, e.anon, o) {
		return
	}
	if !e.enqueueOp(e.anon, o, false) {
		e.m.drop(dropBusy)
	}
}

// goesDirect hands a QoS 0 or -1 publish o of client c to the reader itself
// (the outbox's direct list) when nothing of c is queued or running at the
// workers, and reports whether it did; e.mu is held. Such a publish waits for
// no answer, so the hop to a worker (a queue, a wake-up, a lock round trip)
// buys nothing (issue 11): the reader calls the Broker once the lock is
// released (publishDirect), before it reads its next datagram, so a client's
// publishes still reach the Broker in the order they came. A burst the Broker
// cannot take at once holds the reader, and the excess waits (or is dropped,
// counted) in the socket's receive buffer, not in a queue of ours.
func (e *Engine) goesDirect(ob *outbox, c *client, o op) bool {
	if c.queued || len(c.ops) > 0 || e.stopping {
		return false
	}
	ob.direct = append(ob.direct, o)
	return true
}

// publishDirect hands the outbox's direct publishes to the Broker; no lock
// is held. A failure is counted, as the worker counts it (complete).
func (e *Engine) publishDirect(ob *outbox) {
	for i := range ob.direct {
		o := &ob.direct[i]
		if err := e.env.Broker.Publish(e.opCtx, o.device, o.msg); err != nil {
			e.m.drop(dropPublishFailed)
			if ce := e.log.Check(zap.DebugLevel, "publish failed"); ce != nil {
				ce.Write(zap.String("client", o.device), zap.String("topic", o.msg.Topic), zap.Error(err))
			}
		}
		*o = op{}
	}
	ob.direct = ob.direct[:0]
}

// onPublish handles PUBLISH at QoS 0, 1 and 2 from a connected client. MQTT-SN
// 1.2 §6.6 (client's publish procedure), §6.7 (topic id types), §6.13
// (duplicates). The client is answered when the broker has answered.
func (e *Engine) onPublish(ob *outbox, c *client, m *mqttsn.Publish, now time.Time) {
	topic, ok := e.uplinkTopic(c, c.id, m.Flags.TopicIDType, m.TopicID)
	if m.Flags.TopicIDType == mqttsn.TopicNormal {
		e.topicUsed(ob, c, m.TopicID, ok, now) // a topic id given at random proves the address
	}
	if !ok {
		// §6.6: an unknown topic id is answered with PUBACK "rejected:
		// invalid topic ID", whatever the QoS.
		e.m.refuse(refuseInvalidTopic)
		e.sendc(ob, c, &mqttsn.Puback{TopicID: m.TopicID, MsgID: m.MsgID, ReturnCode: mqttsn.InvalidTopicID})
		if ce := e.log.Check(zap.DebugLevel, "PUBLISH to an unknown topic id"); ce != nil {
			ce.Write(zap.String("client", c.id), zap.Stringer("id_type", m.Flags.TopicIDType), zap.Uint16("topic_id", m.TopicID))
		}
		return
	}
	qos := m.Flags.QoS
	if qos >= mqttsn.QoS1 {
		if st, busy := c.uplink[m.MsgID]; busy {
			// A retransmission while the first copy is at the broker, or (QoS 2)
			// already published: never publish twice (§6.13, §6.7 QoS 2).
			// While upRecording, the PUBREC waits for the commit (persist.go).
			e.m.duplicates.Inc()
			if st == upReceived && qos == mqttsn.QoS2 {
				e.sendc(ob, c, &mqttsn.Pubrec{MsgID: m.MsgID})
			}
			return
		}
		if c.wasDone(m.MsgID, e.digest(topic, m.Data), now, e.dupWindow()) {
			// Completed already: a retransmission whose PUBACK was lost, or a
			// copy the network made. QoS 1 is acknowledged again; a QoS 2
			// exchange ended with PUBCOMP, so its copy needs no answer.
			// Never published twice (MQTT-SN 1.2 §6.13).
			e.m.duplicates.Inc()
			if qos == mqttsn.QoS1 {
				e.sendc(ob, c, &mqttsn.Puback{TopicID: m.TopicID, MsgID: m.MsgID, ReturnCode: mqttsn.Accepted})
			}
			return
		}
	}
	// The one allocation of a publish: m.Data is the reader's buffer, and
	// the Broker keeps what it is given (the gateway's last-value cache, its
	// queue to the broker).
	o := op{kind: opPublish, device: c.id, gen: c.gen, qos: qos, msgID: m.MsgID, topicID: m.TopicID,
		msg: udpgw.Message{Topic: topic, Payload: bytes.Clone(m.Data), QoS: qosByte(qos), Retain: m.Flags.Retain}}
	if qos == mqttsn.QoS0 && e.goesDirect(ob, c, o) {
		return
	}
	if !e.enqueueOp(c, o, false) {
		if qos == mqttsn.QoS0 {
			e.m.drop(dropBusy)
			return
		}
		e.m.refuse(refuseCongestion)
		e.sendc(ob, c, &mqttsn.Puback{TopicID: m.TopicID, MsgID: m.MsgID, ReturnCode: mqttsn.Congestion})
		return
	}
	if qos >= mqttsn.QoS1 {
		if c.uplink == nil {
			c.uplink = map[uint16]uplinkState{}
		}
		c.uplink[m.MsgID] = upPublishing
	}
}

// digest identifies a publish's topic and payload for duplicate detection.
func (e *Engine) digest(topic string, payload []byte) uint64 {
	var h maphash.Hash
	h.SetSeed(e.seed)
	h.WriteString(topic)
	h.WriteByte(0)
	h.Write(payload)
	return h.Sum64()
}

// dupWindow is how long a completed publish is remembered: longer than a
// client's retransmissions last (N_RETRY × T_RETRY, MQTT-SN 1.2 §6.13, with the
// spec's largest values as a floor since clients keep their own timers).
func (e *Engine) dupWindow() time.Duration {
	return max(2*time.Duration(e.o.MaxRetries+1)*e.o.RetryInterval, 90*time.Second)
}

// onPubrel ends an inbound QoS 2 exchange: the message was published once, at
// PUBREC; PUBCOMP lets the MsgId be reused. MQTT-SN 1.2 §6.7 (Figure 7).
//
// With a store the MsgId's removal is committed before PUBCOMP goes out
// (persist.go): a crash after PUBCOMP must not bring the MsgId back, or the
// client's next PUBLISH reusing it would be taken for a retransmission.
func (e *Engine) onPubrel(ob *outbox, c *client, m *mqttsn.Pubrel) {
	switch st, ok := c.uplink[m.MsgID]; {
	case ok && st != upReceived:
		// PUBREL before our PUBREC: the client is confused; PUBREC follows.
		e.m.drop(dropUnexpected)
		return
	case ok:
		delete(c.uplink, m.MsgID)
	default:
		e.m.duplicates.Inc() // our PUBCOMP was lost: complete again
	}
	e.reply(ob, c, &mqttsn.Pubcomp{MsgID: m.MsgID}, thenNothing)
}

// onRegister answers a client's REGISTER with the topic id of the name.
// MQTT-SN 1.2 §6.5. A name already registered keeps its id, which also makes a
// retransmitted REGISTER harmless.
//
// Refusals: a name that cannot be a topic gets 0x02 "invalid topic ID" (it can
// have no id); a name the client may not publish to (the ACL, asked through the
// Broker's PublishChecker) gets 0x03 "not supported", as its PUBLISH would
// (MQTT-SN 1.2 §6.5: the gateway may reject a REGISTER; there is no "not
// authorized" code, and "not supported" is the permanent refusal); a client at
// max_topics gets 0x03 too: the limit is permanent for this connection, and
// "congestion" would make the client retry after T_WAIT for nothing (MQTT-SN
// 1.2 §5.3.10 lists the codes; congestion is the one for transient conditions).
func (e *Engine) onRegister(ob *outbox, c *client, m *mqttsn.Register, now time.Time) {
	if err := checkTopicName(m.TopicName); err != nil {
		e.m.refuse(refuseInvalidTopic)
		e.sendc(ob, c, &mqttsn.Regack{MsgID: m.MsgID, ReturnCode: mqttsn.InvalidTopicID})
		if ce := e.log.Check(zap.DebugLevel, "REGISTER refused"); ce != nil {
			ce.Write(zap.String("client", c.id), zap.Error(err))
		}
		return
	}
	if e.checker != nil {
		if err := e.checker.CheckPublish(c.id, m.TopicName); err != nil {
			code, r := returnCode(err)
			if code != mqttsn.Congestion { // a checker has no transient answer: let it through
				e.m.refuse(r)
				e.sendc(ob, c, &mqttsn.Regack{MsgID: m.MsgID, ReturnCode: code})
				if ce := e.log.Check(zap.DebugLevel, "REGISTER refused"); ce != nil {
					ce.Write(zap.String("client", c.id), zap.String("topic", m.TopicName), zap.Error(err))
				}
				return
			}
		}
	}
	id, ok := e.register(c, m.TopicName, regClient)
	if !ok {
		e.m.refuse(refuseTopicLimit)
		e.sendc(ob, c, &mqttsn.Regack{MsgID: m.MsgID, ReturnCode: mqttsn.NotSupported})
		if ce := e.log.Check(zap.DebugLevel, "REGISTER refused: max_topics reached"); ce != nil {
			ce.Write(zap.String("client", c.id), zap.Int("max_topics", e.o.MaxTopics))
		}
		return
	}
	// With a store, once the registration is committed (persist.go): an id
	// the client was given is known after a crash.
	c.confirm(id) // the client learns it from this REGACK
	e.reply(ob, c, &mqttsn.Regack{TopicID: id, MsgID: m.MsgID, ReturnCode: mqttsn.Accepted}, thenNothing)
}
