package mqttsn

import (
	"cmp"
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/metrics"
	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/store"
	"github.com/mqttgw/mqttgw/udpgw"
)

// Persistent sessions across a crash (issue 10, "Restarts"). With
// Options.State every client with CleanSession false (MQTT-SN 1.2 §6.2) has
// one record in the store (record.go), under the listener's name, a NUL and
// its client id: its will, keepalive, last address and state, its
// registrations both ways, its subscriptions, the QoS 2 MsgIds awaiting
// PUBREL and, when it is not active, the downlink it has not taken. Clean
// sessions are never written; a client that connects clean has its record
// deleted.
//
// # Writes
//
// Nothing is written under Engine.mu. A handler that changes what the record
// holds marks the client dirty (save); a writer goroutine snapshots the
// dirty clients under Engine.mu (a copy of plain values: no I/O), encodes
// them after the unlock and commits them with one State.Apply, which returns
// once they are on disk. Records are whole: a later snapshot replaces an
// earlier one, so marks made while a commit runs are simply written by the
// next. There are a few writers, so that the next batch is handed to the
// store while a commit runs and shares the one after it (one writer would
// pay a commit interval and an fsync per round); a client is in at most one
// commit at a time, so its records reach the store in the order they were
// taken. A failed commit marks its clients dirty again; Tick retries.
//
// # Answers wait for their commit
//
// The answer to a request that changed the record goes out only after the
// commit that holds the change (reply, deferredAck): a writer moves the
// client's waiting answers into its batch in the same locked section as the
// snapshot, so a commit's answers are exactly those its snapshot covers.
//
//   - PUBREC (MQTT-SN 1.2 §6.7, Figure 7): the broker has the message, and the
//     MsgId is recorded as awaiting PUBREL (upRecording until the commit, then
//     upReceived) before PUBREC is sent. So every MsgId a client was sent
//     PUBREC for survives any crash: its retransmitted PUBLISH (DUP) after a
//     restart is answered with PUBREC again and not published, and its PUBREL
//     completes. Sent before the commit, a PUBREC lost on the link followed by
//     a crash would leave the MsgId unknown after the restart, and the
//     client's retransmission would be published a second time. What no
//     order can close is the gap between the broker's acknowledgement and
//     that commit (a few milliseconds): a crash there leaves the client
//     without PUBREC, so it retransmits, and the gateway, which cannot know
//     whether the broker got the first copy, publishes it again: at least
//     once, never lost.
//   - PUBCOMP: the MsgId's removal is committed first. Otherwise a crash after
//     PUBCOMP would restore the MsgId as still awaiting PUBREL, and the
//     client's next QoS 2 PUBLISH reusing it would be taken for a
//     retransmission: acknowledged and never published.
//   - REGACK of the client's REGISTER, SUBACK, UNSUBACK, the DISCONNECT that
//     answers a DISCONNECT (asleep or gone): what the client learns from them
//     (its topic id, its subscription, that it sleeps or has left without its
//     will) is what a restart restores. The downlink of a subscription waits
//     for its SUBACK as before (subscribing).
//
// CONNACK is not held: a client that finds no session after a crash in that
// window gets a clean one, as for any CONNECT whose session the gateway does
// not have (see accept). QoS 1 needs no record: PUBACK follows the broker's
// acknowledgement, and a retransmission after a restart is published again,
// as QoS 1 allows.
//
// # Last seen
//
// Traffic alone is not a change worth a write per datagram: the record's
// last-seen time is rewritten when a datagram comes more than half a
// keepalive after the one written, so it is at most half a keepalive old.
// At start a client whose last seen + 1.5 × keepalive has passed is lost.
//
// # Restore
//
// Serve reads the listener's records before it reads a datagram (restore). A
// disconnected client keeps its persistent session for SessionExpiry from
// when it went. A connected one (active or asleep) gets its session back in
// the registry (Touch at its last-seen time, so the registry's clock runs on
// from there) and continues where it was, "connected but unconfirmed": its
// next PUBLISH with a registered topic id, PINGREQ or wake-up is served
// without a new CONNECT; its subscriptions are made again at the broker.
// One whose keepalive ran out while the gateway was down is restored as
// lostPending: the registry's driver then finds its session lost, like any
// silent session, publishes its will once through the gateway's usual path
// and calls SessionEnded, which parks the client as disconnected (its
// persistent session stays for SessionExpiry, from when it was lost). Until
// then nothing of the client is served (a CONNECT is dropped and counted: the
// client retransmits it), so that a CONNECT racing the driver cannot cancel
// the will. A will is published again only if the gateway crashes between
// publishing it and committing the client's new state.
//
// Only aggregate listeners persist: in transparent mode the device's own
// broker connection holds its session.

// persister is the engine's store side, nil without Options.State.
type persister struct {
	st     store.State
	prefix string        // of the keys: the listener's name and a NUL
	kick   chan struct{} // capacity 1: a writer has work
	log    limiter       // of write failures

	// Guarded by Engine.mu.
	dirty    map[string]struct{} // client ids whose record must be written
	inflight map[string]struct{} // client ids in a commit under way

	writes, deletes, failed *metrics.Counter
}

// clientPersist is one persistent client's side of it; Engine.mu guards it.
type clientPersist struct {
	acks []deferredAck // answers waiting for the client's next commit
	// seenBy (unix nanoseconds): traffic later than it rewrites the record's
	// last-seen time (half a keepalive after the written one).
	seenBy int64
	lostAs recordState // lostPending: the state it was restored in
	lostAt time.Time   // lostPending: when its keepalive ran out
}

// deferredAck is an answer waiting for the commit of the client's record.
type deferredAck struct {
	msg  mqttsn.Message
	to   session.Peer // anyConn: where it goes
	gen  uint32       // the connection it answers
	then ackThen
	// anyConn: sent to `to` even when the connection has ended meanwhile
	// (the DISCONNECT that answers a DISCONNECT).
	anyConn bool
}

// ackThen is what follows an answer's sending.
type ackThen uint8

const (
	thenNothing    ackThen = iota
	thenSubscribed         // SUBACK: the downlink held for it may go (subscribing, pump)
	thenRecorded           // PUBREC: its MsgId is durable (upRecording → upReceived)
)

// writeBatch bounds the records of one commit (at most 1000: one atomic
// batch of the JetStream backend, natsstore.MaxApplyOps); writers is the
// number of writer goroutines (commits handed to the store at once).
const (
	writeBatch = 1000
	writers    = 4
)

func newPersister(st store.State, env udpgw.Env) *persister {
	c := func(result string) *metrics.Counter {
		return env.Metrics.Counter("mqttgw_mqttsn_session_writes_total",
			"MQTT-SN persistent session records written to the store (put, delete) or whose commit failed (failed, retried).",
			"listener", env.Name, "result", result)
	}
	return &persister{st: st, prefix: env.Name + "\x00", kick: make(chan struct{}, 1), log: limiter{perSecond: 1},
		dirty: map[string]struct{}{}, inflight: map[string]struct{}{}, writes: c("put"), deletes: c("delete"), failed: c("failed")}
}

// save marks c's record to be written (or deleted, once it is clean or
// gone) by a writer; e.mu is held. Clean sessions with no record cost
// nothing.
func (e *Engine) save(c *client) {
	if e.ps == nil || c == e.anon || (c.clean && !c.stored) || !e.owns(c.id) {
		return
	}
	e.ps.dirty[c.id] = struct{}{}
	select {
	case e.ps.kick <- struct{}{}:
	default:
	}
}

// saveDownlink is save for a change of c's downlink, which the record holds
// only while c is not active (asleep, awake, disconnected).
func (e *Engine) saveDownlink(c *client) {
	if e.ps != nil && c.state != stateActive {
		e.save(c)
	}
}

// reply answers c with m: at once without a store or for a clean session,
// else once the commit of c's record as it is now (see the package's
// persistence notes above); then is done after the sending. e.mu is held.
func (e *Engine) reply(ob *outbox, c *client, m mqttsn.Message, then ackThen) {
	if e.ps == nil || c.clean {
		e.sendc(ob, c, m)
		e.afterReply(ob, c, m, then, true)
		return
	}
	e.deferReply(c, deferredAck{msg: m, gen: c.gen, then: then})
}

// replyTo is reply for an answer that goes to p even when c's connection has
// ended before the commit: the DISCONNECT answering a DISCONNECT.
func (e *Engine) replyTo(ob *outbox, c *client, p session.Peer, m mqttsn.Message) {
	if e.ps == nil || c.clean {
		e.send(ob, p, m)
		return
	}
	e.deferReply(c, deferredAck{msg: m, to: p, gen: c.gen, anyConn: true})
}

func (e *Engine) deferReply(c *client, a deferredAck) {
	if c.ps == nil {
		c.ps = &clientPersist{}
	}
	if a.then == thenNothing && len(c.ps.acks) >= e.o.MaxClientOps {
		// A client flooding requests whose answers wait for a commit: it
		// retransmits. Answers that change state (bounded by the operation
		// queue) are never dropped.
		e.m.drop(dropBusy)
		return
	}
	c.ps.acks = append(c.ps.acks, a)
	e.save(c)
}

// afterReply does what follows an answer; current says it answers c's
// connection of now. e.mu is held.
func (e *Engine) afterReply(ob *outbox, c *client, m mqttsn.Message, then ackThen, current bool) {
	switch then {
	case thenSubscribed:
		if current { // a new connection reset subscribing
			c.subscribing--
			e.pump(ob, c, e.env.Now())
		}
	case thenRecorded:
		if id := m.(*mqttsn.Pubrec).MsgID; c.uplink[id] == upRecording {
			c.uplink[id] = upReceived // durable, whichever connection asks next
		}
	}
}

// pendingWrite is one record of a commit: a snapshot, or a deletion (c nil),
// and the answers waiting for it, taken from owner.
type pendingWrite struct {
	id    string
	c     *client
	rec   sessionRecord
	owner *client
	acks  []deferredAck
	rev   uint64 // with Options.Owners: the fence (fleet.go)
}

// writer commits dirty records until stop is closed. Serve starts writers of
// them and, once they have returned, writes what is left (finalWrite).
func (e *Engine) writer(stop <-chan struct{}) {
	for {
		select {
		case <-e.ps.kick:
			e.write(context.Background())
		case <-stop:
			return
		}
	}
}

// finalWrite commits what is left at the end of Serve, for at most
// DrainTimeout (a stalled disk must not hold the shutdown forever).
func (e *Engine) finalWrite() {
	ctx, cancel := context.WithTimeout(context.Background(), e.o.DrainTimeout)
	defer cancel()
	e.write(ctx)
}

// write commits every dirty record, a batch at a time; it stops at a failed
// commit (its clients stay dirty; Tick kicks a writer again).
func (e *Engine) write(ctx context.Context) {
	for {
		batch := e.takeDirty()
		if len(batch) == 0 || !e.commit(ctx, batch) {
			return
		}
	}
}

// takeDirty snapshots up to writeBatch dirty clients that are in no commit
// under way and takes their waiting answers, in one locked section.
func (e *Engine) takeDirty() []pendingWrite {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.ps.dirty) == 0 {
		return nil
	}
	var batch []pendingWrite
	for id := range e.ps.dirty {
		if len(batch) == writeBatch {
			break
		}
		if _, busy := e.ps.inflight[id]; busy {
			continue // its commit's writer takes it after (commit kicks)
		}
		var rev uint64
		if e.fl != nil {
			var ok bool
			if rev, ok = e.fl.owned[id]; !ok {
				delete(e.ps.dirty, id) // let go: another instance writes it now
				continue
			}
		}
		if batch == nil {
			batch = make([]pendingWrite, 0, min(len(e.ps.dirty), writeBatch))
		}
		delete(e.ps.dirty, id)
		e.ps.inflight[id] = struct{}{}
		w := pendingWrite{id: id, rev: rev}
		if c := e.byID[id]; c != nil && c.state != stateGone && !c.clean {
			w.c, w.rec = c, e.snapshot(c)
			c.stored = true
		} else if c != nil {
			c.stored = false
		}
		if c := e.byID[id]; c != nil && c.ps != nil {
			w.owner, w.acks, c.ps.acks = c, c.ps.acks, nil
		}
		batch = append(batch, w)
	}
	return batch
}

// commit writes a batch (no lock held), then sends its answers; it reports
// whether the commit succeeded.
func (e *Engine) commit(ctx context.Context, batch []pendingWrite) bool {
	ops := make([]store.Op, 0, len(batch))
	puts := 0
	for i := range batch {
		w := &batch[i]
		op := store.Op{Kind: store.KindMQTTSNSession, Key: e.ps.prefix + w.id, Delete: true}
		if w.c != nil {
			v, err := appendSessionRecord(nil, &w.rec)
			if err != nil {
				// Cannot happen with the engine's own limits (a topic fits
				// a Str); a stale record must not come back: delete it.
				e.log.Error("mqttsn: session record not encodable: deleted", zap.String("client", w.id), zap.Error(err))
			} else {
				op.Value, op.Delete = v, false
				puts++
			}
		}
		ops = append(ops, op)
	}
	var (
		lost []int
		err  error
	)
	if e.fl != nil {
		revs := make([]uint64, len(batch))
		for i := range batch {
			revs[i] = batch[i].rev
		}
		lost, err = e.fl.owners.ApplyOwned(ctx, ops, revs)
	} else {
		err = e.ps.st.Apply(ctx, ops...)
	}
	ob := getOutbox()
	e.mu.Lock()
	for i := range batch {
		delete(e.ps.inflight, batch[i].id)
	}
	for _, i := range lost {
		// Another instance took the client since: its record is theirs.
		w := &batch[i]
		if rev, ok := e.fl.owned[w.id]; ok && rev == w.rev {
			e.letGo(w.id, letGoFenced)
		}
		w.owner, w.acks = nil, nil
	}
	if err != nil {
		for i := range batch {
			w := &batch[i]
			e.ps.dirty[w.id] = struct{}{} // retried at the next Tick
			if c := w.owner; c != nil && c == e.byID[w.id] {
				c.ps.acks = append(w.acks, c.ps.acks...)
			}
		}
	} else {
		for i := range batch {
			w := &batch[i]
			c := w.owner
			live := c != nil && c == e.byID[w.id]
			for _, a := range w.acks {
				current := live && a.gen == c.gen && c.state.connected()
				switch {
				case a.anyConn:
					e.send(ob, a.to, a.msg)
				case current:
					e.sendc(ob, c, a.msg)
				}
				e.afterReply(ob, c, a.msg, a.then, current)
			}
		}
	}
	if e.fl != nil {
		for i := range batch {
			e.forgetOwned(batch[i].id)
		}
	}
	more := err == nil && len(e.ps.dirty) > 0 // marked meanwhile, or waiting for this commit
	e.mu.Unlock()
	e.flush(ob)
	if more {
		select {
		case e.ps.kick <- struct{}{}:
		default:
		}
	}
	if err != nil {
		e.ps.failed.Add(uint64(len(ops)))
		if !errors.Is(err, store.ErrClosed) {
			if ok, suppressed := e.ps.log.allow(time.Now()); ok {
				e.log.Error("mqttsn: persistent sessions not written: retrying; their answers wait", zap.Int("records", len(ops)),
					zap.Int("suppressed_before", suppressed), zap.Error(err))
			}
		}
		return false
	}
	e.ps.writes.Add(uint64(puts))
	e.ps.deletes.Add(uint64(len(ops) - puts))
	return true
}

// snapshot copies what c's record holds; e.mu is held. Payloads are shared,
// not copied: messages are never changed once made.
func (e *Engine) snapshot(c *client) sessionRecord {
	if c.ps == nil {
		c.ps = &clientPersist{}
	}
	r := sessionRecord{ID: c.id, Clean: c.clean, Duration: c.connSig.duration, NextMsgID: c.nextMsgID, NextTopic: c.topics.next}
	switch {
	case c.lostPending:
		r.State = c.ps.lostAs // as restored, until the registry has lost it
	case c.state == stateActive:
		r.State = recActive
	case c.state == stateAsleep || c.state == stateAwake:
		r.State = recAsleep
	default:
		r.State, r.Since, r.LastSeen = recDisconnected, c.since, c.since
	}
	if s := c.sess; s != nil && r.State != recDisconnected {
		p := s.Peer()
		r.Addr, r.Node = p.Addr, p.Node
		r.LastSeen, r.Keepalive, r.Will = s.LastSeen(), s.Keepalive(), s.OwnWill()
		c.ps.seenBy = math.MaxInt64
		if r.Keepalive > 0 {
			c.ps.seenBy = r.LastSeen.Add(r.Keepalive / 2).UnixNano()
		}
	}
	c.topics.each(func(t topicEntry) { r.Topics = append(r.Topics, recordTopic{ID: t.id, Name: t.name, Origin: t.origin}) })
	slices.SortFunc(r.Topics, func(a, b recordTopic) int { return cmp.Compare(a.ID, b.ID) })
	for f, s := range c.subs {
		r.Subs = append(r.Subs, recordSub{Filter: f, QoS: s.qos, IDType: s.idType})
	}
	slices.SortFunc(r.Subs, func(a, b recordSub) int { return strings.Compare(a.Filter, b.Filter) })
	for id, st := range c.uplink {
		if st.awaitsRelease() {
			r.AwaitRel = append(r.AwaitRel, id)
		}
	}
	slices.Sort(r.AwaitRel)
	if c.state != stateActive { // the downlink of a client that does not take it now
		if o := c.out; o != nil {
			r.Out = &recordOut{Stage: o.stage, MsgID: o.msgID, TopicID: o.topicID, IDType: o.idType, Reregistered: o.reregistered, Msg: o.msg}
		}
		for i := range c.queue.n {
			r.Queue = append(r.Queue, c.queue.buf[(c.queue.head+i)%len(c.queue.buf)])
		}
	}
	return r
}

// restoreCounts are what restore found, for its log line.
type restoreCounts struct {
	active, asleep, disconnected, lost, expired, unreadable, overLimit int
}

// restore reads the listener's records and puts their clients back, before
// Serve reads a datagram (see the persistence notes above). A record that does
// not decode (damaged, or from a newer mqttgw) is logged and left alone.
func (e *Engine) restore() error {
	var (
		recs     []sessionRecord
		n        restoreCounts
		firstBad error
	)
	err := e.ps.st.Range(store.KindMQTTSNSession, func(key string, v []byte) bool {
		id, ok := strings.CutPrefix(key, e.ps.prefix)
		if !ok {
			return true // another listener's
		}
		r, err := decodeSessionRecord(v)
		if err == nil && r.ID != id {
			err = errors.New("client id is not the key's")
		}
		if err != nil {
			n.unreadable++
			if firstBad == nil {
				firstBad = err
				e.log.Warn("mqttsn: persistent session record not readable: left in the store, not restored", zap.String("client", id), zap.Error(err))
			}
			return true
		}
		recs = append(recs, r)
		return true
	})
	if err != nil {
		return err
	}
	now := e.env.Now()
	e.mu.Lock()
	for i := range recs {
		e.restoreClient(&recs[i], now, &n)
	}
	e.mu.Unlock()
	if len(recs) > 0 || n.unreadable > 0 {
		e.log.Info("persistent sessions restored", zap.Int("active", n.active), zap.Int("asleep", n.asleep),
			zap.Int("disconnected", n.disconnected), zap.Int("lost_while_down", n.lost), zap.Int("unreadable", n.unreadable),
			zap.Int("expired", n.expired), zap.Int("over_max_clients", n.overLimit))
	}
	return nil
}

// restoreClient makes r's client again; e.mu is held.
func (e *Engine) restoreClient(r *sessionRecord, now time.Time, n *restoreCounts) {
	if r.Clean || e.byID[r.ID] != nil || (r.State == recDisconnected && now.Sub(r.Since) > e.o.SessionExpiry) {
		// A persistent session past SessionExpiry (or a clean one, never
		// written so): deleted, not restored.
		n.expired++
		e.ps.dirty[r.ID] = struct{}{}
		return
	}
	if len(e.byID) >= e.o.MaxClients {
		n.overLimit++ // left in the store: a later start with a larger max_clients takes it
		return
	}
	c := &client{id: r.ID, stored: true, nextMsgID: r.NextMsgID, ps: &clientPersist{seenBy: math.MaxInt64}, gen: 1}
	c.topics.next = r.NextTopic
	for _, t := range r.Topics {
		c.topics.put(topicEntry{name: t.Name, id: t.ID, origin: t.Origin})
	}
	for _, s := range r.Subs {
		if c.subs == nil {
			c.subs = make(map[string]*sub, len(r.Subs))
		}
		c.subs[s.Filter] = &sub{qos: s.QoS, idType: s.IDType}
	}
	for _, id := range r.AwaitRel {
		if c.uplink == nil {
			c.uplink = make(map[uint16]uplinkState, len(r.AwaitRel))
		}
		c.uplink[id] = upReceived
	}
	if o := r.Out; o != nil {
		c.out = &outbound{msg: o.Msg, stage: o.Stage, msgID: o.MsgID, topicID: o.TopicID, idType: o.IDType, reregistered: o.Reregistered}
	}
	for _, m := range r.Queue {
		c.queue.pushBack(m)
	}
	e.byID[c.id] = c
	switch r.State {
	case recDisconnected:
		c.state, c.since = stateDisconnected, r.Since
		e.parked[c] = struct{}{} // Tick drops it once SessionExpiry has passed
		n.disconnected++
	default:
		// Its session again, at its last-seen time: the registry's clock
		// runs on from there. Restore, not Touch: the gateway's Restored
		// hook gives it its class, without a second birth.
		k, p := c.key(e.env.Name), session.Peer{Addr: r.Addr, Node: r.Node}
		s := e.env.Sessions.Restore(k, session.Saved{Peer: p, Created: r.LastSeen, LastSeen: r.LastSeen})
		if s == nil { // a live session of the client's is there already
			s, _ = e.env.Sessions.Touch(k, p, r.LastSeen)
		}
		if e.dtls != nil {
			s.SetUser(c.id) // mqttsns: the PSK identity it proved, its client id
		}
		s.SetKeepalive(r.Keepalive)
		s.SetWill(r.Will)
		s.SetAsleep(r.State == recAsleep)
		c.sess = s
		c.connSig = connectSig{duration: r.Duration, will: r.Will != nil}
		lostAt := r.LastSeen.Add(r.Keepalive * 3 / 2)
		switch {
		case r.Keepalive > 0 && now.After(lostAt):
			// Lost while the gateway was down: the registry's driver loses
			// its session (the will goes out there) and SessionEnded parks
			// it. Meanwhile it is not served.
			c.state, c.lostPending = stateDisconnected, true
			c.ps.lostAs, c.ps.lostAt = r.State, lostAt
			n.lost++
		case r.State == recAsleep:
			c.state = stateAsleep
			n.asleep++
		default:
			c.state = stateActive
			if c.out != nil {
				e.retrying[c] = struct{}{}
			}
			n.active++
		}
	}
	// Its subscriptions again at the broker; no SUBACK: the client has had it.
	for f, s := range c.subs {
		e.enqueueOp(c, op{kind: opSubscribe, restore: true, filter: f, qos: mqttsn.QoS(s.qos), idType: s.idType}, true)
	}
}

// resubscribed completes a restored subscription; e.mu is held. One the
// broker side now refuses for good (the ACL changed) is dropped, and logged.
func (e *Engine) resubscribed(c *client, o op, res result) {
	s := c.subs[o.filter]
	if s == nil {
		return // unsubscribed meanwhile
	}
	if res.err == nil {
		s.qos = min(s.qos, res.granted)
		return
	}
	if code, _ := returnCode(res.err); code == mqttsn.Congestion {
		// The broker side keeps it and subscribes once connected.
		e.clog(c).Warn("restored subscription not confirmed by the broker", zap.String("filter", o.filter), zap.Error(res.err))
		return
	}
	delete(c.subs, o.filter)
	e.save(c)
	e.clog(c).Warn("restored subscription refused by the broker side: dropped", zap.String("filter", o.filter), zap.Error(res.err))
}

// pendingWrites is the number of records waiting for a commit.
func (e *Engine) pendingWrites() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := len(e.ps.inflight)
	for id := range e.ps.dirty {
		if _, ok := e.ps.inflight[id]; !ok {
			n++
		}
	}
	return n
}

// buffered is the number of messages waiting for their clients.
func (e *Engine) buffered() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, c := range e.byID {
		n += c.queue.len()
		if c.out != nil {
			n++
		}
	}
	return n
}
