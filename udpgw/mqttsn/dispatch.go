package mqttsn

import (
	"time"

	"go.uber.org/zap"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/session"
)

// dispatch acts on one decoded message from p; e.mu is held.
func (e *Engine) dispatch(ob *outbox, p session.Peer, m mqttsn.Message, now time.Time) {
	// Messages that need no connection.
	switch m := m.(type) {
	case *mqttsn.SearchGW:
		// MQTT-SN 1.2 §6.1: a gateway answers SEARCHGW with GWINFO (without GwAdd).
		e.send(ob, p, &mqttsn.GWInfo{GwID: e.o.GatewayID})
		return
	case *mqttsn.Connect:
		e.onConnect(ob, p, m, now)
		return
	case *mqttsn.Publish:
		if m.Flags.QoS == mqttsn.QoSMinusOne {
			e.onPublishMinusOne(ob, p, m, now)
			return
		}
	case *mqttsn.Pingreq:
		if m.ClientID != "" {
			e.onWake(ob, p, m.ClientID, now)
			return
		}
	}

	// A will exchange in progress owns its address (MQTT-SN 1.2 §6.2); over
	// DTLS only while the connection that began it has it.
	if pc := e.pending[p]; pc != nil && e.dtls != nil && e.dtls.identity(p.Addr) != pc.clientID {
		e.dropPending(p)
	}
	if pc := e.pending[p]; pc != nil {
		switch m := m.(type) {
		case *mqttsn.WillTopic:
			e.onWillTopic(ob, p, pc, m, now)
		case *mqttsn.WillMsg:
			e.onWillMsg(ob, p, pc, m, now)
		case *mqttsn.Disconnect:
			e.dropPending(p)
			e.send(ob, p, &mqttsn.Disconnect{})
		default:
			// Anything else (a REGISTER, a PUBLISH ...) is out of place until
			// CONNACK: drop it; the client retransmits once connected.
			e.m.drop(dropWillExchange)
			e.debugBad(now, "message during the will exchange dropped", p.Addr, nil, zap.Stringer("type", m.Type()), zap.String("client", pc.clientID))
		}
		return
	}

	switch m.(type) {
	case *mqttsn.WillTopic, *mqttsn.WillMsg:
		e.m.drop(dropUnexpected)
		e.debugBad(now, "will message outside a will exchange dropped", p.Addr, nil, zap.Stringer("type", m.Type()))
		return
	case *mqttsn.Advertise, *mqttsn.GWInfo, *mqttsn.Connack, *mqttsn.WillTopicReq, *mqttsn.WillMsgReq,
		*mqttsn.Suback, *mqttsn.Unsuback, *mqttsn.WillTopicResp, *mqttsn.WillMsgResp, *mqttsn.Encapsulated:
		// Sent by gateways (or a GWINFO a client answers for one, §6.1): a
		// gateway has nothing to do with them.
		e.m.drop(dropUnexpected)
		e.debugBad(now, "message a gateway does not take dropped", p.Addr, nil, zap.Stringer("type", m.Type()))
		return
	}

	c := e.clientAt(p)
	if c != nil && !e.sameIdentity(c, p) {
		c = nil
	}
	if c == nil || !c.state.connected() || !e.refresh(ob, c, p, now) {
		e.notConnected(ob, p, m, now)
		return
	}
	switch m := m.(type) {
	case *mqttsn.Publish:
		e.onPublish(ob, c, m, now)
	case *mqttsn.Pubrel:
		e.onPubrel(ob, c, m)
	case *mqttsn.Register:
		e.onRegister(ob, c, m, now)
	case *mqttsn.Regack:
		e.onRegack(ob, c, m, now)
	case *mqttsn.Puback:
		e.onPuback(ob, c, m, now)
	case *mqttsn.Pubrec:
		e.onPubrec(ob, c, m, now)
	case *mqttsn.Pubcomp:
		e.onPubcomp(ob, c, m, now)
	case *mqttsn.Subscribe:
		e.onSubscribe(ob, c, m, now)
	case *mqttsn.Unsubscribe:
		e.onUnsubscribe(ob, c, m, now)
	case *mqttsn.Pingreq:
		// MQTT-SN 1.2 §6.11 (a PINGREQ with ClientId went to onWake above).
		e.sendc(ob, c, &mqttsn.Pingresp{})
	case *mqttsn.Pingresp:
		// Liveness only: refresh did the work.
	case *mqttsn.Disconnect:
		e.onDisconnect(ob, c, m, now)
	case *mqttsn.WillTopicUpd:
		e.onWillTopicUpd(ob, c, m)
	case *mqttsn.WillMsgUpd:
		e.onWillMsgUpd(ob, c, m)
	}
}

// notConnected answers a message that needs a connection from an address
// without one. MQTT-SN 1.2 §6.12: the gateway sends an unsolicited DISCONNECT
// when it cannot map a message to a client, and the client then CONNECTs again.
// Acknowledgements and DISCONNECT itself are dropped silently: they answer
// something this gateway no longer remembers.
func (e *Engine) notConnected(ob *outbox, p session.Peer, m mqttsn.Message, now time.Time) {
	e.m.drop(dropNotConnected)
	e.debugBad(now, "message from an address with no connected client", p.Addr, nil, zap.Stringer("type", m.Type()))
	switch m.(type) {
	case *mqttsn.Regack, *mqttsn.Puback, *mqttsn.Pubrec, *mqttsn.Pubcomp, *mqttsn.Pingresp:
		return
	case *mqttsn.Disconnect:
		// The client wants to be gone and is: confirm (§6.12).
	}
	e.send(ob, p, &mqttsn.Disconnect{})
}

// clientAt returns the client whose live session was last seen at p: the
// registry knows the address, the engine the client's protocol state. nil when
// no connected client is there.
func (e *Engine) clientAt(p session.Peer) *client {
	s := e.env.Sessions.ByPeer(e.env.Name, p)
	if s == nil {
		return nil
	}
	if c := e.byID[s.Key.Device]; c != nil && c.sess == s && !c.lostPending {
		return c
	}
	return nil
}

// sameIdentity reports whether a datagram from p may act for c: always on
// plain UDP; over DTLS only when p's connection proved c's client id, so that
// a connection that took over an address (the key a peer is known by: another
// device behind a NAT, or a new handshake) never acts for the client that had
// it before.
func (e *Engine) sameIdentity(c *client, p session.Peer) bool {
	return e.dtls == nil || e.dtls.identity(p.Addr) == c.id
}

// refresh records traffic from a connected client at p in its session (NAT
// rebinding moves the session's address). It returns false when the session
// ended or was lost meanwhile (the gateway's driver expired it and will call
// SessionEnded): the client is then treated as lost here. e.mu is held.
func (e *Engine) refresh(ob *outbox, c *client, p session.Peer, now time.Time) bool {
	if e.ps != nil && c.ps != nil && !c.clean && c.sess != nil &&
		(now.UnixNano() > c.ps.seenBy || c.sess.Peer() != p) {
		// The record's last-seen time is half a keepalive old, or the
		// client moved: write it again (persist.go).
		e.save(c)
	}
	if c.sess != nil && e.env.Sessions.Refresh(c.sess, p, now) {
		if c.chk != nil {
			e.heard(ob, c, p, now) // its address is being checked (unproven.go)
		}
		return true
	}
	e.lose(ob, c, now)
	return false
}
