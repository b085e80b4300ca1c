package mqttsn

import (
	"time"

	"go.uber.org/zap"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/udpgw"
)

// requestFilter resolves the topic of a SUBSCRIBE or UNSUBSCRIBE (MQTT-SN 1.2
// §5.4.15): a name or filter, a predefined id, or a short name.
func (e *Engine) requestFilter(c *client, t mqttsn.TopicIDType, name string, id uint16) (string, bool) {
	switch t {
	case mqttsn.TopicNormal:
		return name, true
	case mqttsn.TopicPredefined:
		return e.predef.topic(c.id, id)
	case mqttsn.TopicShort:
		return mqttsn.ShortTopicName(id), true
	}
	return "", false
}

// onSubscribe handles SUBSCRIBE. MQTT-SN 1.2 §6.9. The SUBACK carries the
// SUBSCRIBE's MsgId and, for a topic name, the id the gateway will publish with
// (registered now, so that no REGISTER is needed); for a wildcard filter or a
// short name it carries 0, for a predefined id that id (§5.4.16). It is sent when
// the broker has granted the subscription; downlink to the client waits for it.
func (e *Engine) onSubscribe(ob *outbox, c *client, m *mqttsn.Subscribe, now time.Time) {
	refuse := func(code mqttsn.ReturnCode, r refuseReason, why string) {
		e.m.refuse(r)
		e.sendc(ob, c, &mqttsn.Suback{TopicID: 0, MsgID: m.MsgID, ReturnCode: code})
		if ce := e.log.Check(zap.DebugLevel, "SUBSCRIBE refused: "+why); ce != nil {
			ce.Write(zap.String("client", c.id), zap.String("filter", m.TopicName), zap.Uint16("topic_id", m.TopicID), zap.Stringer("code", code))
		}
	}
	t := m.Flags.TopicIDType
	filter, ok := e.requestFilter(c, t, m.TopicName, m.TopicID)
	if !ok {
		refuse(mqttsn.InvalidTopicID, refuseInvalidTopic, "unknown predefined topic id")
		return
	}
	if err := udpgw.CheckFilter(filter); err != nil {
		refuse(mqttsn.InvalidTopicID, refuseInvalidTopic, err.Error())
		return
	}
	if _, again := c.subs[filter]; !again && len(c.subs) >= e.o.MaxTopics {
		// Subscriptions are bounded as topic ids are: each costs memory
		// here and at the broker, and a wildcard needs no id.
		refuse(mqttsn.NotSupported, refuseSubLimit, "max_topics subscriptions reached")
		return
	}
	var topicID uint16
	switch {
	case t == mqttsn.TopicPredefined:
		topicID = m.TopicID
	case t == mqttsn.TopicNormal && !isWildcard(filter):
		id, ok := e.register(c, filter, regSubscribe)
		if !ok {
			refuse(mqttsn.NotSupported, refuseTopicLimit, "max_topics reached")
			return
		}
		topicID = id
	}
	qos := qosByte(m.Flags.QoS) // a SUBSCRIBE at QoS -1 means nothing more than 0
	if m.Flags.DUP {
		e.m.duplicates.Inc() // subscribing again is harmless: SUBACK again
	}
	o := op{kind: opSubscribe, gen: c.gen, msgID: m.MsgID, topicID: topicID, idType: t, filter: filter, qos: mqttsn.QoS(qos)}
	if !e.enqueueOp(c, o, false) {
		refuse(mqttsn.Congestion, refuseCongestion, "operation queue full")
		return
	}
	// Deliveries may start before the broker's SUBACK reaches us (a retained
	// message): they are accepted from now on and held until our SUBACK.
	if c.subs == nil {
		c.subs = map[string]*sub{}
	}
	if s := c.subs[filter]; s == nil {
		c.subs[filter] = &sub{qos: qos, idType: t}
	}
	c.subscribing++
}

// onUnsubscribe handles UNSUBSCRIBE. MQTT-SN 1.2 §6.10: nothing arrives for the
// filter once it is handled; UNSUBACK follows the broker's answer.
func (e *Engine) onUnsubscribe(ob *outbox, c *client, m *mqttsn.Unsubscribe, now time.Time) {
	filter, ok := e.requestFilter(c, m.Flags.TopicIDType, m.TopicName, m.TopicID)
	if !ok {
		// UNSUBACK has no return code: nothing to unsubscribe from is done.
		e.sendc(ob, c, &mqttsn.Unsuback{MsgID: m.MsgID})
		return
	}
	if _, ok := c.subs[filter]; ok {
		delete(c.subs, filter)
		e.save(c)
	}
	if !e.enqueueOp(c, op{kind: opUnsubscribe, gen: c.gen, msgID: m.MsgID, filter: filter}, false) {
		// No UNSUBACK: the client retransmits the UNSUBSCRIBE.
		e.m.drop(dropBusy)
	}
}
