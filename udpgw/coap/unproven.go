package coap

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/noresponse"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/udpgw"
)

// The unproven path (plain CoAP). Nothing in a UDP datagram proves its source
// address, so a spoofed request could make the gateway send a victim far more
// than the attacker sent (RFC 7252 §11.3) and make it keep state for sources
// that do not exist. Until a source has proven that it receives at its address,
// its datagrams are handled here, without a go-coap connection:
//
//   - Its entry in l.sources (udpgw.Sources) is its only state: the
//     anti-amplification budget (3 × the bytes it sent), a rate limit, and a
//     srcState: its last Message ID and the answer to it (RFC 7252 §4.5
//     deduplication), and the challenge it was sent. At most MaxUnproven
//     entries, the least recently heard evicted first, each forgotten
//     UnprovenTTL after its last datagram.
//   - A request is decoded with go-coap's codec and served on a goroutine of
//     its own (a publish may wait for the broker; at most maxUnprovenInflight at
//     once), and its answer goes out only within the budget. An answer that
//     does not fit, or that needs per-peer state (block-wise transfers), is
//     replaced by a small 4.01 Unauthorized with an Echo option (RFC 9175 §2.3,
//     §2.4 item 3): the client repeats its request with the Echo value, which
//     proves the address. A plain GET leaves no state at all: no session.
//   - A client that does not know Echo proves its address by answering a CoAP
//     ping (RFC 7252 §4.3: any endpoint answers an empty Confirmable message
//     with a Reset of the same Message ID, here a random one): the gateway
//     pings an unproven source after each request it served (at most once per
//     AckTimeout), with a 4.01 Echo answer, when it exceeds its rate, and when
//     a notification to it does not fit its budget. An ACK to a
//     Confirmable notification (whose Message ID the gateway chose) proves it
//     too.
//
// Once proven (for Keepalive × 1.5 after it was last used), a source's next
// datagrams take the proven path (fast.go), still without a connection and
// now without a budget; its last requests answered here are carried over so
// that a retransmission of one of them is not served twice.

// srcState is the engine's state of one unproven source, in its
// udpgw.Sources entry.
type srcState struct {
	// recent are its latest requests handled here, for deduplication (RFC
	// 7252 §4.5): a reordered or duplicated copy of any of them is not served
	// again. As many as requests may be in flight at once, so that a copy of
	// an earlier one arriving after later ones is still recognised.
	recent       [maxInflight]midEntry
	next         uint8  // the entry the next request takes
	served       uint8  // requests that reached a device, saturating
	inflight     uint8  // its requests being handled, at most maxInflight
	challenge    uint16 // Message ID of the last CoAP ping sent to it
	challengedAt int64  // when (Unix ns); 0: never
}

// midEntry is one request of an unproven source: its Message ID, whether it
// is being handled or done, and its answer when that fits.
type midEntry struct {
	mid      uint16
	midState uint8    // midNone, midBusy or midDone
	respLen  uint8    // bytes of resp in use; 0: the answer was not kept
	resp     [24]byte // the answer, when it fits: header, token, an option
}

// find returns the entry of request mid, or nil.
func (s *srcState) find(mid uint16) *midEntry {
	for i := range s.recent {
		if e := &s.recent[i]; e.midState != midNone && e.mid == mid {
			return e
		}
	}
	return nil
}

// take gives request mid the oldest entry.
func (s *srcState) take(mid uint16) {
	s.recent[s.next] = midEntry{mid: mid, midState: midBusy}
	s.next = (s.next + 1) % maxInflight
}

const (
	midNone = iota
	midBusy
	midDone
)

// fromUnproven handles a datagram from a source without a go-coap connection.
// It reports true when the source is proven (before or by this datagram),
// which the caller then hands to the proven path (fromProven); false when the
// datagram was taken care of here. It runs on the reader and never blocks.
func (l *Listener) fromUnproven(d []byte, from netip.AddrPort) (proven bool) {
	now := l.env.Now()
	typ := message.Type(d[0] >> 4 & 0x3)
	code := codes.Code(d[1])
	mid := binary.BigEndian.Uint16(d[2:4])
	var st srcState
	switch l.sources.Received(from, len(d), now, func(s *srcState) { st = *s }) {
	case udpgw.Proven:
		return true
	case udpgw.RateLimited:
		// Counted by the table. A real client above the rate proves itself:
		// the answer to a challenge is never limited.
		if code != codes.Empty || (typ != message.Acknowledgement && typ != message.Reset) {
			l.challenge(from, now)
			return false
		}
	}
	if code == codes.Empty {
		switch typ {
		case message.Acknowledgement, message.Reset:
			switch {
			case st.challengedAt != 0 && st.challenge == mid:
				l.prove(from, now) // the Reset to our ping (RFC 7252 §4.3)
			case l.ackOrReset(from, int32(mid), typ == message.Reset):
				l.prove(from, now) // an ACK or RST to a notification we sent it
			}
		case message.Confirmable:
			// A CoAP ping: Reset, no larger than the ping (RFC 7252 §4.3).
			_ = l.sendTo(from, []byte{0x70, 0x00, d[2], d[3]})
		}
		return false
	}
	if !isRequestCode(code) || (typ != message.Confirmable && typ != message.NonConfirmable) {
		return false // a response to a request the gateway never sent
	}
	r := l.pool.AcquireMessage(l.ctx)
	if _, err := r.UnmarshalWithDecoder(coder.DefaultCoder, d); err != nil {
		l.pool.ReleaseMessage(r)
		l.ctr.malformed.Inc()
		if ce := l.log.Check(zap.DebugLevel, "malformed datagram"); ce != nil {
			ce.Write(zap.Stringer("from", from), zap.Int("bytes", len(d)), zap.Error(err))
		}
		if typ == message.Confirmable {
			// RFC 7252 §4.2: rejected with a Reset, 4 bytes.
			_ = l.sendTo(from, []byte{0x70, 0x00, d[2], d[3]})
		}
		return false
	}
	if v, err := r.GetOptionBytes(message.Echo); err == nil && l.echo.valid(v, from, now) {
		l.pool.ReleaseMessage(r)
		l.prove(from, now) // RFC 9175 §2.4 item 3
		return true
	}
	if e := st.find(mid); e != nil {
		// A duplicate (RFC 7252 §4.5): a Confirmable one gets the same answer.
		l.pool.ReleaseMessage(r)
		if e.midState == midDone && e.respLen > 0 && typ == message.Confirmable {
			_ = l.sendTo(from, e.resp[:e.respLen])
		}
		return false
	}
	if code, opt, reject := l.rejectEarly(&connState{addr: from}, r); reject {
		l.answerUnproven(from, r, response{code: code, observe: -1, maxAge: -1}, opt...)
		l.pool.ReleaseMessage(r)
		return false
	}
	if r.HasOption(message.Block1) || r.HasOption(message.Block2) {
		// Block-wise transfers keep state per peer: a proven source's.
		l.needProof(from, r, now)
		l.pool.ReleaseMessage(r)
		return false
	}
	busy := false
	if !l.sources.Unproven(from, now, func(s *srcState) {
		if busy = s.inflight >= maxInflight; !busy {
			s.take(mid)
			s.inflight++
		}
	}) {
		l.pool.ReleaseMessage(r)
		return false
	}
	if busy {
		l.ctr.busy.Inc() // as for a connection with maxInflight in flight
		l.pool.ReleaseMessage(r)
		return false
	}
	select {
	case l.unprovenSlots <- struct{}{}:
	default:
		l.ctr.unprovenBusy.Inc()
		l.done(from, mid)
		l.pool.ReleaseMessage(r)
		return false
	}
	if !l.goStart(func() {
		defer func() { <-l.unprovenSlots }()
		defer l.pool.ReleaseMessage(r)
		l.serveUnproven(r, from, mid)
	}) {
		<-l.unprovenSlots
		l.done(from, mid)
		l.pool.ReleaseMessage(r)
	}
	return false
}

// done ends the handling of request mid of an unproven source that was not
// served: its retransmission may try again.
func (l *Listener) done(from netip.AddrPort, mid uint16) {
	l.sources.Unproven(from, l.env.Now(), func(s *srcState) {
		if s.inflight > 0 {
			s.inflight--
		}
		if e := s.find(mid); e != nil && e.midState == midBusy {
			e.midState = midNone
		}
	})
}

// serveUnproven serves one request of an unproven source and answers it
// within the source's budget. It runs on a goroutine of its own.
func (l *Listener) serveUnproven(r *pool.Message, from netip.AddrPort, mid uint16) {
	res := l.serve(nil, &connState{addr: from}, r)
	now := l.env.Now()
	if res.proof {
		// Transparent mode: it would make a broker connection.
		l.done(from, mid)
		l.needProof(from, r, now)
		return
	}
	b, err := l.encodeAnswer(r, res)
	fits := false
	switch {
	case err != nil:
		l.log.Debug("answer not encoded", zap.Stringer("to", from), zap.Error(err))
	case b == nil: // no response of this class wanted (RFC 7967)
	case len(res.payload) > blockSize:
		// It would go block-wise (RFC 7959): per-peer state, so only once
		// the source proved its address.
		l.sources.Hold(len(b))
	default:
		fits = l.sources.Spend(from, len(b), now) // counts what it holds
	}
	// The answer is recorded before it leaves, so that a retransmission that
	// overtakes the record is not mistaken for a request still in progress.
	l.sources.Unproven(from, now, func(s *srcState) {
		if s.inflight > 0 {
			s.inflight--
		}
		if e := s.find(mid); e != nil && e.midState == midBusy {
			e.midState = midDone
			if fits && len(b) <= len(e.resp) {
				e.respLen = uint8(copy(e.resp[:], b))
			}
		}
		if res.served && s.served < 255 {
			s.served++
		}
	})
	sent := false
	switch {
	case fits:
		_, err := l.conn.WriteToUDPAddrPort(b, from)
		sent = err == nil
	case b != nil && err == nil:
		l.needProof(from, r, now)
	}
	if res.served {
		// A device: prove it, to serve it on the proven path (deduplication
		// over EXCHANGE_LIFETIME, block-wise transfers, no budget). The ping
		// goes before an observation is armed, so before its first
		// notification.
		l.challenge(from, now)
	}
	switch {
	case sent && res.after != nil:
		res.after()
		if res.registered != nil {
			// An observer: it must prove its address before its notifications
			// outgrow the budget, and soon, or the observation ends.
			l.watchObserver(from, res.dev, res.registered, now)
		}
	case res.cancel != nil:
		res.cancel()
	}
	if sent || b == nil {
		l.ctr.response(r.Code(), res.code)
	}
}

// pendingObserver is an observation registered from an unproven address,
// which must prove it receives (answer a ping) before deadline.
type pendingObserver struct {
	d        *device
	addr     netip.AddrPort
	deadline time.Time
}

// watchObserver puts an observation registered from an unproven address on
// the list sweepObservers walks: a spoofed registration must not live on.
func (l *Listener) watchObserver(addr netip.AddrPort, d *device, o *observation, now time.Time) {
	l.mu.Lock()
	l.pendingObs[o] = pendingObserver{d: d, addr: addr, deadline: now.Add(l.opts.UnprovenTTL)}
	l.mu.Unlock()
}

// sweepObservers ends the observations whose address did not prove it
// receives within UnprovenTTL of their registration (challenging it again
// meanwhile, RFC 7641 §4.5 in spirit: an observer that does not answer is
// removed). The periodic driver calls it.
func (l *Listener) sweepObservers(now time.Time) {
	l.mu.Lock()
	pending := make(map[*observation]pendingObserver, len(l.pendingObs))
	for o, p := range l.pendingObs {
		pending[o] = p
	}
	l.mu.Unlock()
	for o, p := range pending {
		d := p.d
		d.mu.Lock()
		ended := o.ended
		d.mu.Unlock()
		proven := !ended && l.sources.IsProven(p.addr, now)
		switch {
		case ended || proven:
		case now.After(p.deadline):
			l.endObservation(d, o, endUnproven, false)
		default:
			l.challenge(p.addr, now)
			continue
		}
		l.mu.Lock()
		delete(l.pendingObs, o)
		if len(l.pendingObs) == 0 {
			l.pendingObs = map[*observation]pendingObserver{} // let a burst's table go
		}
		l.mu.Unlock()
	}
}

// encodeAnswer encodes the answer res to r: piggybacked on the ACK of a
// Confirmable request, Non-confirmable otherwise (RFC 7252 §5.2), numbered
// in its device's sequence when it has one. A payload above one block goes
// as its first block (Block2 and Size2, RFC 7959 §2.4): the client asks for
// the rest with Block2, which a go-coap connection serves. It returns nil
// when r asked for no response of this class (RFC 7967): then a Confirmable
// request gets an empty ACK.
func (l *Listener) encodeAnswer(r *pool.Message, res response) ([]byte, error) {
	if nr, err := r.GetOptionUint32(message.NoResponse); err == nil && noresponse.IsNoResponseCode(res.code, nr) != nil {
		if r.Type() == message.Confirmable {
			ack := []byte{0x60, 0x00, 0, 0}
			binary.BigEndian.PutUint16(ack[2:], uint16(r.MessageID()))
			return ack, nil
		}
		return nil, nil
	}
	m := l.replyTo(r, res.code)
	defer l.pool.ReleaseMessage(m)
	if r.Type() != message.Confirmable && res.dev != nil {
		m.SetMessageID(int32(res.dev.nextMID()))
	}
	if len(res.payload) > blockSize {
		first := res
		first.payload = res.payload[:blockSize]
		first.apply(m)
		if v, err := blockwise.EncodeBlockOption(blockwise.SZX1024, 0, true); err == nil {
			m.SetOptionUint32(message.Block2, v)
		}
		m.SetOptionUint32(message.Size2, uint32(len(res.payload)))
	} else {
		res.apply(m)
	}
	b, err := m.MarshalWithEncoder(coder.DefaultCoder)
	// b is m's buffer, which the pool hands out again once m is released.
	return bytes.Clone(b), err
}

// replyTo starts the answer to r with code: its token, piggybacked on the ACK
// of a Confirmable request, Non-confirmable with a new Message ID otherwise.
func (l *Listener) replyTo(r *pool.Message, code codes.Code) *pool.Message {
	m := l.pool.AcquireMessage(l.ctx)
	m.SetCode(code)
	m.SetToken(r.Token())
	if r.Type() == message.Confirmable {
		m.SetType(message.Acknowledgement)
		m.SetMessageID(r.MessageID())
	} else {
		m.SetType(message.NonConfirmable)
		m.SetMessageID(message.GetMID())
	}
	return m
}

// answerUnproven answers r from the reader with res (no payload: never larger
// than a few bytes), within the source's budget.
func (l *Listener) answerUnproven(to netip.AddrPort, r *pool.Message, res response, opts ...message.Option) {
	m := l.replyTo(r, res.code)
	defer l.pool.ReleaseMessage(m)
	for _, o := range opts {
		m.SetOptionBytes(o.ID, o.Value)
	}
	res.apply(m)
	b, err := m.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		return
	}
	if l.sendTo(to, b) == nil {
		l.ctr.response(r.Code(), res.code)
	}
}

// needProof answers r with 4.01 Unauthorized and an Echo option (RFC 9175
// §2.3), piggybacked or Non-confirmable, never as a separate response (§2.4
// item 3): the client repeats the request with the Echo value, which proves
// its address. The answer is small (4 bytes, the token, 14 bytes of Echo) and
// within the budget the request itself brought. A CoAP ping goes with it, for
// a client that does not know Echo.
func (l *Listener) needProof(to netip.AddrPort, r *pool.Message, now time.Time) {
	opt := message.Option{ID: message.Echo, Value: l.echo.value(to, now)}
	// Counted before it leaves: the client may repeat the request, and be
	// served, before this goroutine runs again.
	l.ctr.echoSent.Inc()
	l.answerUnproven(to, r, response{code: codes.Unauthorized, observe: -1, maxAge: -1}, opt)
	l.challenge(to, now)
}

// challenge sends an unproven source a CoAP ping (an empty Confirmable
// message, RFC 7252 §4.3) with a random Message ID, which the Reset it
// provokes echoes: proof that the source receives. At most one per AckTimeout
// per source, within its budget (4 bytes).
func (l *Listener) challenge(to netip.AddrPort, now time.Time) {
	mid := uint16(message.RandMID())
	send := false
	l.sources.Unproven(to, now, func(s *srcState) {
		if s.challengedAt != 0 && now.UnixNano()-s.challengedAt < int64(l.opts.AckTimeout) {
			return
		}
		s.challenge, s.challengedAt, send = mid, now.UnixNano(), true
	})
	if send && l.sendTo(to, []byte{0x40, 0x00, byte(mid >> 8), byte(mid)}) == nil {
		l.ctr.pingSent.Inc()
	}
}

// sendTo writes one datagram to addr from the plain CoAP socket when it fits
// addr's budget (a proven address has no limit); otherwise it returns
// udpgw.ErrHeld, counted by l.sources.
func (l *Listener) sendTo(addr netip.AddrPort, b []byte) error {
	if !l.sources.Spend(addr, len(b), l.env.Now()) {
		return udpgw.ErrHeld
	}
	_, err := l.conn.WriteToUDPAddrPort(b, addr)
	return err
}

// carryOver gives a source's new connection the requests answered on the
// unproven and proven paths, so that a late copy of any of them gets the same answer
// instead of a second processing, for EXCHANGE_LIFETIME (RFC 7252 §4.8.2).
func (l *Listener) carryOver(p *peer, from netip.AddrPort) {
	st := stateOf(p.cc)
	if st == nil {
		return
	}
	now := l.env.Now()
	l.sources.Unproven(from, now, func(s *srcState) {
		for _, e := range s.recent {
			if e.midState == midNone {
				continue
			}
			pr := priorRequest{mid: e.mid}
			if e.respLen > 0 {
				pr.resp = append([]byte(nil), e.resp[:e.respLen]...)
			}
			st.prior = append(st.prior, pr)
		}
	})
	// And those it was answered since, without a connection (fast.go).
	l.fastMu.Lock()
	if fp := l.fast[from]; fp != nil {
		for _, e := range fp.recent {
			if e.state != midNone {
				st.prior = append(st.prior, priorRequest{mid: e.mid, resp: e.resp})
			}
		}
	}
	l.fastMu.Unlock()
	st.priorUntil = now.Add(exchangeLifetime)
}

// prove records that addr proved it receives, and ends the waits of the
// notifications held for it (notify.go).
func (l *Listener) prove(addr netip.AddrPort, now time.Time) {
	l.sources.Prove(addr, now)
	l.provenSave(addr)
	l.proofMu.Lock()
	ws := l.proofWait[addr]
	delete(l.proofWait, addr)
	l.proofMu.Unlock()
	for _, p := range ws {
		l.proven(p)
	}
}
