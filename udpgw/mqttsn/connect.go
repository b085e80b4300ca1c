package mqttsn

import (
	"bytes"
	"fmt"
	"net/netip"
	"time"

	"go.uber.org/zap"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/session"
)

// pendingConnect is a CONNECT with the Will flag whose will exchange is under
// way (MQTT-SN 1.2 §6.2, Figure 3).
type pendingConnect struct {
	clientID string
	clean    bool
	duration uint16
	started  time.Time
	gotTopic bool            // WILLTOPIC received, WILLMSGREQ sent
	will     session.Message // topic, QoS and retain from WILLTOPIC; the session's at CONNACK
	// Begun from an unproven address: on Engine.pendUnproven (unproven.go).
	links[pendingConnect]
	peer     session.Peer
	unproven bool
}

// onConnect handles CONNECT. MQTT-SN 1.2 §6.2.
func (e *Engine) onConnect(ob *outbox, p session.Peer, m *mqttsn.Connect, now time.Time) {
	e.connect(ob, p, m, now, false)
}

// connect is onConnect; loaded says the client's record was read from the
// fleet's store for this CONNECT (fleet.go), or that there is none.
func (e *Engine) connect(ob *outbox, p session.Peer, m *mqttsn.Connect, now time.Time, loaded bool) {
	reject := func(code mqttsn.ReturnCode, r refuseReason, why string, err error) {
		e.m.refuse(r)
		e.dropPending(p)
		e.send(ob, p, &mqttsn.Connack{ReturnCode: code})
		if ce := e.log.Check(zap.DebugLevel, "CONNECT refused: "+why); ce != nil {
			ce.Write(zap.String("client", m.ClientID), zap.Stringer("from", p.Addr), zap.Stringer("code", code), zap.Error(err))
		}
	}
	if err := checkClientID(m.ClientID); err != nil {
		reject(mqttsn.NotSupported, refuseClientID, "bad client id", err)
		return
	}
	if e.dtls != nil {
		// mqttsns: the DTLS PSK identity is the client id; a client may
		// connect only as the one it proved to be.
		if id := e.dtls.identity(p.Addr); id != m.ClientID {
			reject(mqttsn.NotSupported, refuseIdentity, "client id is not the DTLS PSK identity", fmt.Errorf("PSK identity %q", id))
			if e.o.DTLS.Refused != nil {
				e.o.DTLS.Refused(p.Addr, id, refusedOtherClientID)
			}
			return
		}
	}
	if e.o.KnownClient != nil && !e.o.KnownClient(m.ClientID) {
		reject(mqttsn.NotSupported, refuseUnknownClient, "client id is not a known client (require_known_client)", nil)
		return
	}
	if max := e.o.MaxKeepalive; max > 0 && (m.Duration == 0 || time.Duration(m.Duration)*time.Second > max) {
		// No way to tell the client a shorter Duration: refuse, rather than
		// declare it lost while it keeps the keepalive it asked for.
		reject(mqttsn.NotSupported, refuseKeepalive, "Duration over max_keepalive", nil)
		return
	}
	if c := e.byID[m.ClientID]; c != nil && c.lostPending {
		// Restored with its keepalive run out while the gateway was down: its
		// will goes out first, when the driver finds its session lost
		// (persist.go). The client retransmits its CONNECT after T_RETRY.
		e.m.drop(dropLostAtStart)
		e.debugBad(now, "CONNECT of a client lost while the gateway was down dropped: its will goes first", p.Addr, nil, zap.String("client", m.ClientID))
		return
	}
	if !loaded && e.loadFirst(p, m, now) {
		return // handled once its record is read (fleet.go)
	}
	if c := e.byID[m.ClientID]; c == nil && len(e.byID) >= e.o.MaxClients && !e.evictUnproven(ob, now) {
		// Full, and no client that never proved its address to make room
		// (they go first: spoofed CONNECTs cannot lock devices out).
		reject(mqttsn.Congestion, refuseMaxClients, "max_clients reached", nil)
		return
	}
	sig := connectSig{duration: m.Duration, clean: m.Flags.CleanSession, will: m.Flags.Will}
	if c := e.byID[m.ClientID]; c != nil && c.state == stateActive && c.peer() == p && c.connSig == sig &&
		now.UnixNano()-c.connAt <= int64(e.connectDupWindow()) {
		// The same CONNECT again, from the same address, just after it was
		// accepted: a copy the link made, or a retransmission whose CONNACK was
		// lost. Answer it again and change nothing: treating it as new would
		// wipe (clean) or reset the session the client is already using.
		e.m.duplicates.Inc()
		e.send(ob, p, &mqttsn.Connack{ReturnCode: mqttsn.Accepted})
		return
	}
	if m.Flags.Will {
		// A repeated CONNECT restarts the exchange (the client retransmits
		// CONNECT when an answer was lost).
		if _, again := e.pending[p]; !again && len(e.pending) >= e.o.MaxClients {
			reject(mqttsn.Congestion, refuseMaxClients, "too many will exchanges under way", nil)
			return
		}
		e.addPending(p, &pendingConnect{clientID: m.ClientID, clean: m.Flags.CleanSession, duration: m.Duration, started: now}, now)
		e.send(ob, p, &mqttsn.WillTopicReq{})
		return
	}
	e.dropPending(p)
	e.connectThenAccept(ob, p, m.ClientID, connectSig{duration: m.Duration, clean: m.Flags.CleanSession}, nil, now)
}

// connectDupWindow is how long after a CONNECT an identical one from the same
// address is taken for a copy of it: a client waits T_RETRY before it sends
// CONNECT again (MQTT-SN 1.2 §6.13), and a restarted device that really wants a
// clean session comes later or from another port.
func (e *Engine) connectDupWindow() time.Duration {
	return e.o.RetryInterval * time.Duration(e.o.MaxRetries+1)
}

// onWillTopic handles WILLTOPIC during a will exchange. MQTT-SN 1.2 §6.2.
func (e *Engine) onWillTopic(ob *outbox, p session.Peer, pc *pendingConnect, m *mqttsn.WillTopic, now time.Time) {
	if m.Topic == "" && m.Flags == (mqttsn.Flags{}) {
		// An empty WILLTOPIC: no will after all (§5.4.7).
		e.dropPending(p)
		e.connectThenAccept(ob, p, pc.clientID, connectSig{duration: pc.duration, clean: pc.clean, will: true}, nil, now)
		return
	}
	if err := checkTopicName(m.Topic); err != nil {
		e.dropPending(p)
		e.m.refuse(refuseWillTopic)
		e.send(ob, p, &mqttsn.Connack{ReturnCode: mqttsn.NotSupported})
		if ce := e.log.Check(zap.DebugLevel, "CONNECT refused: bad will topic"); ce != nil {
			ce.Write(zap.String("client", pc.clientID), zap.Error(err))
		}
		return
	}
	if pc.gotTopic {
		e.m.duplicates.Inc() // our WILLMSGREQ was lost: ask again
	}
	pc.gotTopic = true
	pc.will = session.Message{Topic: m.Topic, QoS: qosByte(m.Flags.QoS), Retain: m.Flags.Retain}
	e.send(ob, p, &mqttsn.WillMsgReq{})
}

// onWillMsg handles WILLMSG, the end of the will exchange. MQTT-SN 1.2 §6.2.
func (e *Engine) onWillMsg(ob *outbox, p session.Peer, pc *pendingConnect, m *mqttsn.WillMsg, now time.Time) {
	if !pc.gotTopic {
		e.m.drop(dropUnexpected)
		e.debugBad(now, "WILLMSG before WILLTOPIC dropped", p.Addr, nil, zap.String("client", pc.clientID))
		return
	}
	e.dropPending(p)
	w := pc.will
	w.Payload = bytes.Clone(m.WillMsg)
	e.connectThenAccept(ob, p, pc.clientID, connectSig{duration: pc.duration, clean: pc.clean, will: true}, &w, now)
}

// accept completes a CONNECT: take-over, clean or resumed session, CONNACK,
// then the messages a persistent session buffered. MQTT-SN 1.2 §6.2. The
// device's session is created (or kept, for a CONNECT again from the same
// address) in the registry, which runs the gateway's Created hook; the CONNECT's
// Duration is its keepalive and will (nil: none) its own will.
func (e *Engine) accept(ob *outbox, p session.Peer, id string, sig connectSig, will *session.Message, now time.Time) {
	clean, duration := sig.clean, sig.duration
	c := e.byID[id]
	if c == nil {
		// In a fleet another instance may have left a record of the client:
		// a clean session deletes it (fleet.go), as it would here.
		c = &client{id: id, state: stateGone, stored: e.fl != nil}
		e.byID[id] = c
	}
	if old := c.peer(); c.state.connected() && old != p {
		// Take-over: the client id is now at p. The old address gets an
		// unsolicited DISCONNECT (§6.12); no will: the device is alive.
		e.m.takeovers.Inc()
		if ok, suppressed := e.badLog.allow(now); ok { // two devices fighting over an id must not flood the log
			e.clog(c).Info("client id taken over by a CONNECT from another address",
				zap.Stringer("old", old.Addr), zap.Stringer("new", p.Addr), zap.Int("suppressed_before", suppressed))
		}
		e.send(ob, old, &mqttsn.Disconnect{})
		e.endSession(c, session.EndTakenOver)
	}
	if other := e.clientAt(p); other != nil && other != c {
		// One address, one client: the other client id disconnects.
		e.disconnectBroker(other, true)
		e.endConnection(ob, other, session.EndTakenOver, now)
	}
	resumed := !clean && c.state != stateGone
	switch {
	case clean || c.state == stateGone:
		c.confirmed = nil
		if !clean {
			// CleanSession false, but the gateway has no session for the
			// client (never had one, it expired, or a gateway without a
			// store restarted): MQTT-SN 1.2 has no session-present flag, so
			// the client gets a new, empty persistent session, as §6.2 allows
			// a gateway that has none; it learns it from "invalid topic ID"
			// (and REGISTERs again, §6.6) and from silence on its old
			// subscriptions. Counted.
			// (Also every persistent client's first CONNECT: debug only.)
			e.m.persistentNew.Inc()
			e.debugBad(now, "CONNECT with CleanSession false and no session to resume: a new one starts", p.Addr, nil, zap.String("client", id))
		}
		e.resetSession(c)
	default:
		e.m.persistentResumed.Inc()
		// The QoS 2 publishes awaiting PUBREL stay (the session's), the
		// ones still at the broker belonged to the old connection.
		pruneUplink(c)
		// The client that resumes may be a new process that kept its client
		// id but not the topic ids it learned (mqttgw sub -c): a downlink
		// PUBLISH on an id it does not know is rejected, and a QoS 0 one lost.
		// So each normal topic id is REGISTERed again (§6.5: harmless to a
		// client that remembers) before its first downlink PUBLISH on this
		// connection; its uplink ids stay valid.
		c.confirmed = map[uint16]struct{}{}
	}
	c.gen++
	c.subscribing = 0
	c.state = stateActive
	c.clean = clean
	c.connSig, c.connAt = sig, now.UnixNano()
	delete(e.parked, c)
	e.save(c) // a persistent session's record, or a clean one's deletion
	s, _ := e.env.Sessions.Touch(c.key(e.env.Name), p, now)
	c.sess = s
	e.startCheck(ob, c, p, resumed, now) // from an address not proven: fresh (unproven.go)
	if e.dtls != nil {
		// mqttsns: the device proved its PSK identity, which is its client
		// id (onConnect checked): its user for the ACL (%u).
		s.SetUser(id)
	}
	s.SetKeepalive(time.Duration(duration) * time.Second) // over a class's: the device asked for it
	s.SetAsleep(false)
	s.SetWill(will)
	e.send(ob, p, &mqttsn.Connack{ReturnCode: mqttsn.Accepted})
	e.resumeOut(ob, c, now) // a persistent session's message in flight, again with DUP
	if ce := e.log.Check(zap.DebugLevel, "client connected"); ce != nil {
		ce.Write(zap.String("client", id), zap.Stringer("from", p.Addr), zap.Bool("clean", clean),
			zap.Uint16("duration", duration), zap.Bool("will", will != nil), zap.Int("buffered", c.queue.len()))
	}
	e.pump(ob, c, now)
}

// onWake handles PINGREQ with a ClientId: a sleeping client wakes up, gets its
// buffered messages and then PINGRESP (MQTT-SN 1.2 §6.14). The client is known
// by its id, so a new source address (NAT rebinding) moves its session there.
func (e *Engine) onWake(ob *outbox, p session.Peer, id string, now time.Time) {
	if e.dtls != nil && e.dtls.identity(p.Addr) != id {
		// mqttsns: only the client itself may wake it (and move it here).
		e.m.drop(dropIdentity)
		e.debugBad(now, "PINGREQ naming a client id other than the DTLS PSK identity dropped", p.Addr, nil, zap.String("client", id))
		return
	}
	c := e.byID[id]
	if c == nil || !c.state.connected() {
		e.notConnected(ob, p, &mqttsn.Pingreq{ClientID: id}, now)
		return
	}
	if old := c.peer(); old != p {
		e.m.rebinds.Inc()
		if ce := e.log.Check(zap.DebugLevel, "client moved to a new address"); ce != nil {
			ce.Write(zap.String("client", id), zap.Stringer("old", old.Addr), zap.Stringer("new", p.Addr))
		}
		if other := e.clientAt(p); other != nil && other != c {
			e.endConnection(ob, other, session.EndTakenOver, now)
		}
	}
	if !e.refresh(ob, c, p, now) { // moves the session to p
		e.notConnected(ob, p, &mqttsn.Pingreq{ClientID: id}, now)
		return
	}
	switch c.state {
	case stateAsleep:
		c.state = stateAwake
		c.sess.SetAsleep(false)
		c.awakeBudget = c.queue.len()
		e.resumeOut(ob, c, now) // the one it fell asleep over comes first
		e.pump(ob, c, now)      // ends with PINGRESP once the budget is delivered
	case stateAwake:
		// A retransmitted PINGREQ: delivery is under way (or a lost PINGRESP).
		e.m.duplicates.Inc()
		e.pump(ob, c, now)
	default:
		e.send(ob, p, &mqttsn.Pingresp{})
	}
}

// onDisconnect handles DISCONNECT: with a Duration the client goes to sleep
// (MQTT-SN 1.2 §6.14), without it the connection ends cleanly, without the will
// (§6.12). The gateway answers with DISCONNECT either way.
func (e *Engine) onDisconnect(ob *outbox, c *client, m *mqttsn.Disconnect, now time.Time) {
	// With a store, the answer waits for the record saying so (persist.go):
	// a client told it sleeps, or left without its will, finds it so after
	// a crash; until then it retransmits its DISCONNECT.
	p := c.peer()
	if m.HasDuration && m.Duration > 0 {
		e.sleep(c)
		c.awakeBudget = 0
		e.pauseOut(c)
		c.sess.SetKeepalive(time.Duration(m.Duration) * time.Second)
		e.replyTo(ob, c, p, &mqttsn.Disconnect{})
		return
	}
	e.replyTo(ob, c, p, &mqttsn.Disconnect{})
	e.disconnectBroker(c, true) // DISCONNECT: no will (§6.12)
	e.endConnection(ob, c, session.EndDisconnected, now)
}

// sleep puts a connected client to sleep (MQTT-SN 1.2 §6.14), in the registry
// too; e.mu is held.
func (e *Engine) sleep(c *client) {
	c.state = stateAsleep
	if c.sess != nil {
		c.sess.SetAsleep(true)
	}
	e.save(c)
}

// endConnection ends c's connection without its will, for why: its session
// leaves the registry, and the client keeps a persistent session or is dropped.
func (e *Engine) endConnection(_ *outbox, c *client, why session.EndReason, now time.Time) {
	e.endSession(c, why)
	if ce := e.log.Check(zap.DebugLevel, "client disconnected"); ce != nil {
		ce.Write(zap.String("client", c.id), zap.Bool("clean", c.clean), zap.Stringer("why", why))
	}
	e.closeClient(c, now)
}

// endSession removes c's session from the registry, for why; no will is due.
// A session the registry lost meanwhile is left to it: its will is out, and
// SessionEnded will find it is no longer c's. e.mu is held.
func (e *Engine) endSession(c *client, why session.EndReason) {
	if c.sess != nil && c.sess.Live() {
		e.env.Sessions.End(c.sess, why)
	}
	c.sess = nil
}

// SessionEnded implements session.Owner: the gateway's driver expired the
// client's session after 1.5 keepalives of silence (MQTT-SN 1.2 §6.14) and
// queued its will. The client is lost, unless s is no longer its session (it
// reconnected, or the engine saw the loss first).
func (e *Engine) SessionEnded(s *session.Session, why session.EndReason) {
	ob := getOutbox()
	e.mu.Lock()
	if c := e.byID[s.Key.Device]; c != nil && c.sess == s {
		now := e.env.Now()
		e.lose(ob, c, now)
		if c.lostPending {
			// Restored lost (persist.go): its will is out; its persistent
			// session runs from when its keepalive ran out.
			c.lostPending = false
			if c.ps.lostAt.Before(now) {
				c.since = c.ps.lostAt
			}
		}
	}
	e.mu.Unlock()
	e.flush(ob)
}

// lose ends a connection whose session the registry expired. In transparent
// mode the device's broker connection is dropped without DISCONNECT, so the
// broker publishes its will (the gateway does not).
func (e *Engine) lose(_ *outbox, c *client, now time.Time) {
	c.sess = nil
	e.disconnectBroker(c, false)
	if ce := e.log.Check(zap.DebugLevel, "client lost"); ce != nil {
		ce.Write(zap.String("client", c.id), zap.Stringer("state", c.state), zap.Bool("clean", c.clean))
	}
	e.closeClient(c, now)
}

// closeClient moves a client whose connection ended to stateDisconnected
// (persistent session: subscriptions, topic ids and buffered messages stay for
// SessionExpiry) or drops it (clean session).
func (e *Engine) closeClient(c *client, now time.Time) {
	e.clearCheck(c)
	c.okAddr = netip.AddrPort{}
	c.sess = nil
	c.gen++
	c.subscribing = 0
	if c.clean {
		e.dropClient(c)
		return
	}
	pruneUplink(c)
	e.pauseOut(c)
	c.state = stateDisconnected
	c.since = now
	e.parked[c] = struct{}{}
	e.save(c)
}

// pruneUplink forgets the publishes of c's ended connection still at the
// broker (their answers will not be sent); QoS 2 publishes awaiting PUBREL
// belong to the persistent session and stay, so that a PUBREL on the next
// connection completes them and a retransmission is not published again.
func pruneUplink(c *client) {
	for id, st := range c.uplink {
		if !st.awaitsRelease() {
			delete(c.uplink, id)
		}
	}
}

// dropClient forgets everything about c; the record goes once its broker
// operations (the last one drops its subscriptions) are done.
func (e *Engine) dropClient(c *client) {
	e.clearCheck(c)
	e.resetSession(c)
	c.state = stateGone
	c.gen++
	delete(e.parked, c)
	e.save(c) // deletes its record
	e.maybeRemove(c)
}

// resetSession clears a client's session state (MQTT-SN 1.2 §6.2 CleanSession):
// topic ids, subscriptions (dropped at the broker too), buffered messages.
func (e *Engine) resetSession(c *client) {
	if len(c.subs) > 0 || c.subscribing > 0 {
		e.enqueueOp(c, op{kind: opUnsubscribeAll}, true)
	}
	c.subs = nil
	c.subscribing = 0
	c.topics = topicTable{}
	if c.out != nil {
		e.m.drop(dropSessionEnded)
		c.out = nil
	}
	delete(e.retrying, c)
	if n := c.queue.clear(); n > 0 {
		e.m.dropped[dropSessionEnded].Add(uint64(n))
	}
	c.uplink = nil
	c.done, c.doneN = nil, 0
	c.awakeBudget = 0
}

// maybeRemove deletes a dropped client's record once nothing refers to it.
func (e *Engine) maybeRemove(c *client) {
	if c.state == stateGone && !c.queued && len(c.ops) == 0 && e.byID[c.id] == c {
		delete(e.byID, c.id)
		e.forgetOwned(c.id)
	}
}

// onWillTopicUpd handles WILLTOPICUPD. MQTT-SN 1.2 §6.4. The will lives in the
// client's session, in its own topic space; the gateway maps it when it
// publishes it.
func (e *Engine) onWillTopicUpd(ob *outbox, c *client, m *mqttsn.WillTopicUpd) {
	if m.Topic == "" && m.Flags == (mqttsn.Flags{}) {
		// The empty WILLTOPICUPD deletes the will, message included (§5.4.22).
		c.sess.SetWill(nil)
		e.save(c)
		e.sendc(ob, c, &mqttsn.WillTopicResp{ReturnCode: mqttsn.Accepted})
		return
	}
	if err := checkTopicName(m.Topic); err != nil {
		e.m.refuse(refuseWillTopic)
		e.sendc(ob, c, &mqttsn.WillTopicResp{ReturnCode: mqttsn.NotSupported})
		return
	}
	var w session.Message
	if old := c.sess.OwnWill(); old != nil {
		w = *old
	}
	w.Topic, w.QoS, w.Retain = m.Topic, qosByte(m.Flags.QoS), m.Flags.Retain
	c.sess.SetWill(&w)
	e.save(c)
	e.sendc(ob, c, &mqttsn.WillTopicResp{ReturnCode: mqttsn.Accepted})
}

// onWillMsgUpd handles WILLMSGUPD. MQTT-SN 1.2 §6.4. Before any will topic the
// message waits in a will with an empty topic, which is never published.
func (e *Engine) onWillMsgUpd(ob *outbox, c *client, m *mqttsn.WillMsgUpd) {
	var w session.Message
	if old := c.sess.OwnWill(); old != nil {
		w = *old
	}
	w.Payload = bytes.Clone(m.WillMsg)
	c.sess.SetWill(&w)
	e.save(c)
	e.sendc(ob, c, &mqttsn.WillMsgResp{ReturnCode: mqttsn.Accepted})
}
