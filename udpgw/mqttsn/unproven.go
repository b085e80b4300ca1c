package mqttsn

import (
	"math/rand/v2"
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/metrics"
	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// The address check (plain UDP; a DTLS handshake proves the address with its
// cookie). Nothing in a UDP datagram proves its source address, so a spoofed
// CONNECT + SUBSCRIBE of a few bytes could make the gateway send a victim a
// large retained message again and again (reflection), and spoofed CONNECTs
// could fill max_clients. The engine's answer, QUIC's (RFC 9000 §8.1):
//
//   - Every datagram is first recorded in e.sources (udpgw.Sources), before
//     it is decoded: an address that has not proven it receives is admitted
//     at UnprovenRate and earns a budget of Amplification (3) times the bytes
//     it sent; whatever goes to it is spent from that budget (put), and a
//     datagram that does not fit is held, not sent, and counted
//     (mqttgw_amplification_held_bytes_total). Answers (REGACK, PUBACK,
//     PUBREC, PUBCOMP) are never rate limited: they are how a client proves
//     itself.
//   - An address proves it receives by echoing a value the gateway chose at
//     random and sent only there (an off-path sender guesses one in 65535):
//     the MsgId of a REGISTER, of a QoS 1 or 2 PUBLISH or of a PUBREL the
//     gateway sent (REGACK, PUBACK, PUBREC, PUBCOMP: a connection's MsgIds
//     start at a random value), or a topic id the gateway gave that address
//     in a REGACK or SUBACK (picked at random while the address is unproven)
//     used in a PUBLISH. Publishers that REGISTER and clients that take QoS
//     1 or 2 messages prove themselves so, without an extra message. Such a
//     16-bit echo proves only while the source made fewer than maxMisses
//     wrong guesses (counted in its e.sources entry); then only the probe's
//     REGACK echoing its MsgId and its topic id, 32 random bits, does.
//   - A client whose next downlink datagram does not fit the budget (a large
//     retained message after SUBSCRIBE, say) keeps it queued, and the
//     gateway sends it a probe instead: a small REGISTER (MQTT-SN 1.2 §6.5:
//     the gateway may tell a client a topic name and id at any time; every
//     client answers REGACK with the MsgId, whatever it makes of the name)
//     of the name probeTopic with a topic id the client does not use. Its
//     REGACK proves the address and the message goes. The probe is sent
//     again every UnprovenTTL/5, probeTries times, then again only once the
//     client was heard meanwhile (it is alive but lost them).
//   - A client that connected from an unproven address and never proved it
//     is "fresh": it is on e.unproven, least recently heard first, at most
//     MaxUnproven of them (the least recently heard is evicted to make room,
//     and first when max_clients is reached). Quiet for UnprovenTTL/2, or
//     connected that long (past the opening exchanges of tools that read
//     answers in strict order), it gets a probe; silent for UnprovenTTL, or
//     connected for twice that, unless it sleeps, it is ended: a spoofed
//     CONNECT costs a client record for seconds. A sleeping fresh client
//     lives its Duration (it cannot answer), but is evicted first. What fresh
//     clients buffer (held retained messages) is bounded all together by
//     MaxUnprovenBytes, the least recently heard evicted beyond it.
//   - Will exchanges begun from unproven addresses are on e.pendUnproven:
//     at most MaxUnproven, the oldest evicted, each forgotten after
//     UnprovenTTL.
//
// Once proven (for 24 h after the address was last heard, udpgw.Sources),
// none of this costs a proven client anything per datagram: the UDP reader
// remembers the sources it found proven for a second (provenCache), and what
// goes to a client's proven address (client.okAddr) skips the table. A client
// that moves to an unproven address (NAT rebinding), or whose address the
// table forgot (a restart, a long sleep), is budgeted again and probed when a
// downlink datagram is held.

// probeTopic is the topic name of the gateway's probe REGISTER: short (the
// probe must fit the budget a CONNECT earns), and under "$", which MQTT
// keeps for servers (3.1.1 §4.7.2): no client subscription matches it.
const probeTopic = "$GW/probe"

const (
	// probeTries bounds the probes of one round (UnprovenTTL/5 apart).
	probeTries = 3
	// maxMisses bounds the wrong guesses one unproven source may make —
	// acknowledgements of nothing in flight, PUBLISHes naming an unknown
	// topic id — while its 16-bit echoes (a MsgId, a topic id) still prove
	// it. Beyond, until the table forgets the source, only the probe's
	// REGACK echoing both its MsgId and its topic id (32 random bits) does:
	// an off-path sender cannot guess its way to a proof.
	maxMisses = 16
)

// srcState is the engine's state of one unproven source in e.sources: its
// wrong guesses (maxMisses).
type srcState struct{ misses uint16 }

// addrCheck is the proof of address of one client in progress: its current
// address has not proven it receives. nil once it has (client.chk).
type addrCheck struct {
	links[client]                // e.unproven, while fresh
	addr          netip.AddrPort // the address being checked: the client's
	last          int64          // when the client was last heard (unix ns)
	since         int64          // when it connected (fresh)
	fresh         bool           // never proven since its CONNECT: on e.unproven
	resumed       bool           // its CONNECT resumed a persistent session
	held          bool           // downlink waits for the proof (pump stops)
	// The last topic ids given to addr at random (a ring; nids of them are
	// set); a PUBLISH from addr naming one proves it.
	ids          [4]uint16
	nids, nextID uint8
	// The probe REGISTER: its MsgId (0: none), topic id, the probes sent in
	// this round and when the next is due (unix ns).
	probeID, probeTopic uint16
	probes              uint8
	probeDue            int64
	alive               bool // heard since the probe round began
	// counted is what the client's buffer held when last counted in
	// e.unprovenBytes (fresh clients).
	counted int
}

// unprovenEnd says why an unproven client or will exchange ended.
type unprovenEnd uint8

const (
	unprovenEvicted     unprovenEnd = iota // made room for a new CONNECT (max_unproven, max_clients)
	unprovenExpired                        // silent for UnprovenTTL without proving its address
	unprovenWillEvicted                    // a will exchange from an unproven address, made room for a new one
	numUnprovenEnds
)

var unprovenEndNames = [numUnprovenEnds]string{"evicted", "expired", "will_exchange_evicted"}

// proofKind says how an address proved it receives.
type proofKind uint8

const (
	proofMsgID   proofKind = iota // REGACK, PUBACK, PUBREC or PUBCOMP of the gateway's message in flight
	proofTopicID                  // PUBLISH with a topic id given at random
	proofProbe                    // REGACK of the probe REGISTER
	numProofKinds
)

var proofKindNames = [numProofKinds]string{"msgid", "topic_id", "probe"}

type unprovenMetrics struct {
	ended  [numUnprovenEnds]*metrics.Counter
	proofs [numProofKinds]*metrics.Counter
	probes *metrics.Counter
}

func newUnprovenMetrics(r *metrics.Registry, listener string) *unprovenMetrics {
	m := &unprovenMetrics{}
	for i, n := range unprovenEndNames {
		m.ended[i] = r.Counter("mqttgw_mqttsn_unproven_ended_total", "MQTT-SN clients (and will exchanges) from addresses that never proved they receive, ended: evicted to make room, or expired after unproven_ttl of silence.", "listener", listener, "reason", n)
	}
	for i, n := range proofKindNames {
		m.proofs[i] = r.Counter("mqttgw_mqttsn_address_proofs_total", "MQTT-SN client addresses proven, by what the client echoed: the MsgId of the gateway's REGISTER/PUBLISH/PUBREL, a topic id given at random, or the probe REGISTER's MsgId.", "listener", listener, "kind", n)
	}
	m.probes = r.Counter("mqttgw_mqttsn_address_probes_total", "Probe REGISTERs sent to MQTT-SN clients whose address has not proven it receives.", "listener", listener)
	return m
}

// newSources makes the listener's table of source addresses (plain UDP).
func newSources(env udpgw.Env, o Options) *udpgw.Sources[srcState] {
	return udpgw.NewSources[srcState](udpgw.SourcesOptions{
		Factor:      o.Amplification,
		MaxUnproven: o.MaxUnproven,
		UnprovenTTL: o.UnprovenTTL,
		MaxProven:   max(2*o.MaxClients, 1<<17),
		Rate:        o.UnprovenRate,
		Metrics:     env.Metrics,
		Listener:    env.Name,
	})
}

// isAnswer reports whether datagram b holds an acknowledgement of something
// the gateway sent (REGACK, PUBACK, PUBREC, PUBCOMP): it proves an address,
// so it is never rate limited, and it creates no state.
func isAnswer(b []byte) bool {
	var t byte
	switch {
	case len(b) >= 2 && b[0] != 0x01:
		t = b[1]
	case len(b) >= 4 && b[0] == 0x01:
		t = b[3]
	default:
		return false
	}
	switch mqttsn.MsgType(t) {
	case mqttsn.MsgRegack, mqttsn.MsgPuback, mqttsn.MsgPubrec, mqttsn.MsgPubcomp:
		return true
	}
	return false
}

// proven reports whether a is known to receive (always over DTLS).
func (e *Engine) proven(a netip.AddrPort, now time.Time) bool {
	return e.sources == nil || e.sources.IsProven(a, now)
}

// startCheck begins the address check of c, which connects from p; e.mu is
// held. A CONNECT from an unproven address makes a fresh client, for which
// room is made among the MaxUnproven; its MsgIds start at a random value.
func (e *Engine) startCheck(ob *outbox, c *client, p session.Peer, resumed bool, now time.Time) {
	e.clearCheck(c)
	c.okAddr = netip.AddrPort{}
	if e.proven(p.Addr, now) {
		c.okAddr = p.Addr
		return
	}
	for e.unproven.n >= e.o.MaxUnproven && e.evictUnproven(ob, now) {
	}
	c.chk = &addrCheck{addr: p.Addr, last: now.UnixNano(), since: now.UnixNano(), fresh: true, resumed: resumed}
	e.unproven.pushBack(c)
	if c.out == nil {
		c.nextMsgID = uint16(rand.Uint32())
	}
}

// check returns c's address check, beginning one (not fresh) when c has none:
// its address is not proven after all (NAT rebinding, a restart, a long
// sleep). e.mu is held.
func (e *Engine) check(c *client) *addrCheck {
	if c.chk == nil {
		c.chk = &addrCheck{addr: c.peer().Addr, last: e.env.Now().UnixNano()}
	}
	return c.chk
}

// clearCheck ends c's address check, whatever its state; e.mu is held.
func (e *Engine) clearCheck(c *client) {
	if c.chk == nil {
		return
	}
	if c.chk.fresh {
		e.unproven.remove(c)
		e.unprovenBytes -= c.chk.counted
	}
	delete(e.probing, c)
	c.chk = nil
}

// bufferedUnproven counts what fresh client c buffers (its messages wait for
// the proof of its address) in e.unprovenBytes, and keeps that total within
// MaxUnprovenBytes: the least recently heard fresh clients that buffer
// something are evicted, and beyond that c's oldest messages are dropped
// (counted). A spoofed SUBSCRIBE to a large retained topic costs the
// message's size until its client ends: without this, max_unproven of them
// could hold gigabytes. e.mu is held.
func (e *Engine) bufferedUnproven(ob *outbox, c *client) {
	ck := c.chk
	e.unprovenBytes += c.queue.bytes - ck.counted
	ck.counted = c.queue.bytes
	now := e.env.Now()
	for x := e.unproven.head; x != nil && e.unprovenBytes > e.o.MaxUnprovenBytes; {
		next := x.chk.next
		if x != c && x.chk.counted > 0 {
			e.endUnproven(ob, x, unprovenEvicted, now)
		}
		x = next
	}
	for e.unprovenBytes > e.o.MaxUnprovenBytes && c.queue.len() > 0 {
		c.queue.popFront()
		e.m.drop(dropBufferFull)
		e.unprovenBytes += c.queue.bytes - ck.counted
		ck.counted = c.queue.bytes
	}
}

// heard records a datagram of connected client c from p, whose address is
// being checked: the least recently heard are evicted first, and a move to
// another address starts the check of that one. e.mu is held.
func (e *Engine) heard(ob *outbox, c *client, p session.Peer, now time.Time) {
	ck := c.chk
	ck.last = now.UnixNano()
	if ck.fresh {
		e.unproven.moveToBack(c)
	}
	ck.alive = true
	if p.Addr != ck.addr {
		// What was sent to the old address proves nothing here.
		ck.addr, ck.nids, ck.nextID, ck.probeID, ck.probes = p.Addr, 0, 0, 0, 0
		delete(e.probing, c)
		if ck.held || (c.out != nil && c.out.unsent) {
			e.probe(ob, c, now) // downlink waits: probe the new address
		}
	}
}

// proved records that c's address proved it receives, by kind; downlink held
// for it goes now. e.mu is held.
func (e *Engine) proved(ob *outbox, c *client, kind proofKind, now time.Time) {
	a := c.peer().Addr
	e.sources.Prove(a, now)
	e.um.proofs[kind].Inc()
	held := c.chk.held
	e.clearCheck(c)
	c.okAddr = a
	if ce := e.log.Check(zap.DebugLevel, "client address proven"); ce != nil {
		ce.Write(zap.String("client", c.id), zap.Stringer("addr", a), zap.String("by", proofKindNames[kind]))
	}
	if o := c.out; o != nil && o.unsent {
		// Held when it was due: it goes now, and is retransmitted as usual.
		o.due = now.Add(e.o.RetryInterval)
		e.resend(ob, c, o)
	}
	if held {
		e.pump(ob, c, now)
	}
}

// echoed checks an acknowledgement of c's message in flight, o, for a proof:
// it came from the address o was sent to. e.mu is held.
func (e *Engine) echoed(ob *outbox, c *client, o *outbound, now time.Time) {
	if c.chk != nil && o.sentTo == c.peer().Addr && !o.unsent && e.guessable(c, now) {
		e.proved(ob, c, proofMsgID, now)
	}
}

// probeAnswer reports whether a REGACK answers c's probe, and takes the
// proof when it does: with its MsgId and topic id (32 random bits), or its
// MsgId alone while the source made few wrong guesses. e.mu is held.
func (e *Engine) probeAnswer(ob *outbox, c *client, m *mqttsn.Regack, now time.Time) bool {
	ck := c.chk
	if ck == nil || ck.probeID == 0 || m.MsgID != ck.probeID {
		return false
	}
	switch {
	case c.peer().Addr != ck.addr: // the probe went elsewhere (heard resets it on a move)
	case m.TopicID == ck.probeTopic || e.guessable(c, now):
		e.proved(ob, c, proofProbe, now)
	default:
		e.missed(c, now)
	}
	return true
}

// missed counts a wrong guess of c's unproven address: an acknowledgement of
// nothing in flight, a PUBLISH naming an unknown topic id. e.mu is held.
func (e *Engine) missed(c *client, now time.Time) {
	if c.chk == nil {
		return
	}
	e.sources.Unproven(c.peer().Addr, now, func(s *srcState) {
		if s.misses < maxMisses {
			s.misses++
		}
	})
}

// guessable reports whether c's unproven address may still prove itself
// with a 16-bit echo: it made fewer than maxMisses wrong guesses. e.mu is
// held.
func (e *Engine) guessable(c *client, now time.Time) bool {
	ok := true
	e.sources.Unproven(c.peer().Addr, now, func(s *srcState) { ok = s.misses < maxMisses })
	return ok
}

// hold keeps m, whose datagram did not fit c's budget, for when c's address
// is proven, and probes it. e.mu is held.
func (e *Engine) hold(ob *outbox, c *client, m udpgw.Message, now time.Time) {
	c.queue.pushFront(m)
	e.saveDownlink(c)
	ck := e.check(c)
	ck.held = true
	if ck.probeID == 0 {
		e.probe(ob, c, now)
	}
}

// holdOut marks c's message in flight as not sent (held) and probes c; it goes
// once c's address is proven. e.mu is held.
func (e *Engine) holdOut(ob *outbox, c *client, now time.Time) {
	c.out.unsent = true
	ck := e.check(c)
	if ck.probeID == 0 {
		e.probe(ob, c, now)
	}
}

// probe sends c the probe REGISTER (again), within its budget; e.mu is held.
func (e *Engine) probe(ob *outbox, c *client, now time.Time) {
	ck := e.check(c)
	if ck.probeID == 0 {
		ck.probeID, ck.probeTopic, ck.probes = e.randomMsgID(c), e.unusedTopicID(c), 0
	}
	if ck.probes >= probeTries {
		if !ck.alive {
			return // Tick tries again once the client is heard
		}
		ck.probes = 0 // alive and still unproven: a new round
	}
	if ck.probes == 0 {
		ck.alive = false
	}
	ck.probes++
	ck.probeDue = now.Add(e.o.UnprovenTTL / 5).UnixNano()
	e.probing[c] = struct{}{}
	if e.putc(ob, c, &mqttsn.Register{TopicID: ck.probeTopic, MsgID: ck.probeID, TopicName: probeTopic}) == nil {
		e.um.probes.Inc()
	}
}

// randomMsgID is a MsgId for a probe of c: random, not 0, not its message
// in flight's.
func (e *Engine) randomMsgID(c *client) uint16 {
	for {
		id := uint16(rand.Uint32())
		if id != 0 && (c.out == nil || c.out.msgID != id) {
			return id
		}
	}
}

// unusedTopicID is a topic id c has no registration for: the probe's, which
// the gateway records nowhere (a later registration of the id replaces it in
// the client).
func (e *Engine) unusedTopicID(c *client) uint16 {
	for {
		id := uint16(rand.Uint32())
		if id != 0 && id != 0xFFFF && !hasTopic(c, id) {
			return id
		}
	}
}

// register gives c a topic id for name (MQTT-SN 1.2 §6.5, §6.9): while c's
// address is unproven a new id is picked at random and remembered, so that a
// PUBLISH naming it proves the address. e.mu is held.
func (e *Engine) register(c *client, name string, origin regOrigin) (uint16, bool) {
	ck := c.chk
	if ck == nil {
		return c.register(name, e.o.MaxTopics, origin)
	}
	if id, ok := c.topics.id(name); ok {
		return id, true // known to whoever knew the name before: proves nothing
	}
	id, ok := c.topics.addRandom(name, e.o.MaxTopics, origin)
	if ok {
		ck.ids[ck.nextID] = id
		ck.nextID = (ck.nextID + 1) % uint8(len(ck.ids))
		ck.nids = min(ck.nids+1, uint8(len(ck.ids)))
	}
	return id, ok
}

// topicUsed checks a PUBLISH of c's naming a normal topic id for a proof; ok
// says whether the id is registered. e.mu is held.
func (e *Engine) topicUsed(ob *outbox, c *client, id uint16, ok bool, now time.Time) {
	ck := c.chk
	if ck == nil {
		return
	}
	if !ok {
		e.missed(c, now)
		return
	}
	for _, x := range ck.ids[:ck.nids] {
		if x == id && c.peer().Addr == ck.addr && e.guessable(c, now) {
			e.proved(ob, c, proofTopicID, now)
			return
		}
	}
}

// evictUnproven ends the least recently heard fresh client to make room; it
// reports whether there was one. e.mu is held.
func (e *Engine) evictUnproven(ob *outbox, now time.Time) bool {
	c := e.unproven.head
	if c == nil {
		return false
	}
	e.endUnproven(ob, c, unprovenEvicted, now)
	return true
}

// endUnproven ends fresh client c's connection for why, without its will: it
// never proved its address. A persistent session it resumed is kept (the
// CONNECT may have been spoofed with the client's id); one it made is
// dropped. The address gets an unsolicited DISCONNECT (MQTT-SN 1.2 §6.12),
// within its budget. e.mu is held.
func (e *Engine) endUnproven(ob *outbox, c *client, why unprovenEnd, now time.Time) {
	e.um.ended[why].Inc()
	if ok, suppressed := e.badLog.allow(now); ok && e.log.Core().Enabled(zap.DebugLevel) {
		e.log.Debug("client whose address never proved it receives ended", zap.String("client", c.id),
			zap.Stringer("addr", c.chk.addr), zap.String("why", unprovenEndNames[why]), zap.Int("suppressed_before", suppressed))
	}
	if !c.chk.resumed {
		c.clean = true // nothing to keep: closeClient drops it
	}
	e.sendc(ob, c, &mqttsn.Disconnect{})
	e.disconnectBroker(c, true)
	e.endConnection(ob, c, session.EndTakenOver, now)
}

// tickUnproven is Tick's step for the address checks: probes due again, and
// the fresh clients silent for long: a probe at UnprovenTTL/2, the end at
// UnprovenTTL. e.mu is held.
func (e *Engine) tickUnproven(ob *outbox, now time.Time) {
	t := now.UnixNano()
	for c := range e.probing {
		ck := c.chk
		switch {
		case ck == nil || ck.probeID == 0 || !c.state.connected():
			delete(e.probing, c)
		case c.state == stateAsleep || t < ck.probeDue:
		case ck.probes >= probeTries && !ck.fresh && !ck.held && (c.out == nil || !c.out.unsent):
			delete(e.probing, c) // nothing waits for the proof any more
		default:
			e.probe(ob, c, now)
		}
	}
	ttl := int64(e.o.UnprovenTTL)
	for c := e.unproven.head; c != nil; {
		ck := c.chk
		next := ck.next
		switch idle, age := t-ck.last, t-ck.since; {
		case c.state == stateAsleep:
			// It cannot answer: it lives its Duration, evicted first.
		case idle > ttl || age > 2*ttl:
			e.endUnproven(ob, c, unprovenExpired, now)
		case ck.probeID == 0 && (idle > ttl/2 || age > ttl/2):
			// Quiet, or connected for a while (past any opening exchange
			// of request and answer): ask it.
			e.probe(ob, c, now)
		}
		c = next
	}
	for pc := e.pendUnproven.head; pc != nil; {
		next := pc.next
		if now.Sub(pc.started) <= e.o.UnprovenTTL {
			break
		}
		e.dropPending(pc.peer)
		pc = next
	}
}

// addPending records a will exchange begun by a CONNECT from p; one from an
// unproven address is on e.pendUnproven, for which room is made. e.mu is held.
func (e *Engine) addPending(p session.Peer, pc *pendingConnect, now time.Time) {
	e.dropPending(p)
	pc.peer = p
	if !e.proven(p.Addr, now) {
		for e.pendUnproven.n >= e.o.MaxUnproven {
			e.dropPending(e.pendUnproven.head.peer)
			e.um.ended[unprovenWillEvicted].Inc()
		}
		pc.unproven = true
		e.pendUnproven.pushBack(pc)
	}
	e.pending[p] = pc
}

// dropPending forgets the will exchange at p, if any; e.mu is held.
func (e *Engine) dropPending(p session.Peer) {
	pc := e.pending[p]
	if pc == nil {
		return
	}
	if pc.unproven {
		e.pendUnproven.remove(pc)
	}
	delete(e.pending, p)
}

// unprovenClients is the number of fresh clients, for the gauge.
func (e *Engine) unprovenClients() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.unproven.n
}

// provenCache is a transport reader's memory of the sources it found proven
// in the last second, so that a proven client's datagram costs no lookup in
// e.sources (which extends the proof at most a second later). Direct-mapped,
// lossy; used by one goroutine only. A nil cache remembers nothing.
type provenCache [256]struct {
	addr  netip.AddrPort
	until int64
}

func provenSlot(a netip.AddrPort) uint8 {
	b := a.Addr().As16()
	return b[15] ^ b[14]<<3 ^ b[13]<<5 ^ uint8(a.Port()) ^ uint8(a.Port()>>8)*31
}

func (pc *provenCache) hit(a netip.AddrPort, now time.Time) bool {
	if pc == nil {
		return false
	}
	s := &pc[provenSlot(a)]
	return s.addr == a && now.UnixNano() < s.until
}

func (pc *provenCache) put(a netip.AddrPort, now time.Time) {
	if pc != nil {
		pc[provenSlot(a)] = struct {
			addr  netip.AddrPort
			until int64
		}{a, now.Add(time.Second).UnixNano()}
	}
}
