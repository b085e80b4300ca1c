package coap

import (
	"encoding/binary"
	"maps"
	"net/netip"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
	"go.uber.org/zap"
)

// The proven path (plain CoAP). A source that proved its address (unproven.go)
// is served the way an unproven one is, without a go-coap connection, and
// without a budget:
//
//   - Its state is a fastPeer: its latest requests' Message IDs and, for a
//     Confirmable one, the answer, for deduplication over EXCHANGE_LIFETIME
//     (RFC 7252 §4.5), and the requests it has waiting. It is forgotten
//     EXCHANGE_LIFETIME after its last datagram, when nothing waits; at most
//     MaxPeers of them.
//   - A request is decoded with go-coap's codec on the reader and queued on
//     its peer (at most maxInflight queued or being served; beyond, dropped
//     as busy, as a connection would). A peer with requests waiting is on a
//     ready list that at most maxFastWorkers goroutines serve, each taking a
//     peer's oldest request, started when work comes and exiting when none
//     is left: a peer's requests are served one at a time, in order, and a
//     publish waiting for the broker holds one worker, never the reader.
//   - ACK, RST and CoAP pings are handled on the reader: no queue.
//   - A request of a block-wise transfer (Block1 or Block2) is handed to a
//     go-coap connection for the address, made for it and closed after
//     ConnIdle of silence; the address's datagrams go there while it lives.
//     An answer above one block goes out as its first block (Block2, RFC
//     7959 §2.4), the client fetching the rest with Block2, which takes that
//     path.

// fastPeer is the proven path's state of one source address; its fields are
// guarded by Listener.fastMu.
type fastPeer struct {
	addr     netip.AddrPort
	recent   [maxInflight]fastEntry
	next     uint8 // the entry the next request takes
	inflight uint8 // its requests queued or being served
	queued   bool  // on l.fastReady
	reqs     []*pool.Message
	last     int64 // its last datagram (Unix ns, Env.Now)
}

// fastEntry is one request of a proven source: its Message ID, whether it is
// being handled or done, and the answer to a Confirmable one.
type fastEntry struct {
	mid   uint16
	state uint8 // midNone, midBusy or midDone
	resp  []byte
}

func (p *fastPeer) find(mid uint16) *fastEntry {
	for i := range p.recent {
		if e := &p.recent[i]; e.state != midNone && e.mid == mid {
			return e
		}
	}
	return nil
}

func (p *fastPeer) take(mid uint16) {
	p.recent[p.next] = fastEntry{mid: mid, state: midBusy}
	p.next = (p.next + 1) % maxInflight
}

// maxFastWorkers bounds the goroutines serving proven sources' requests.
const maxFastWorkers = 256

// fromProven handles a datagram of a proven source that has no go-coap
// connection. It runs on the reader and never blocks.
func (l *Listener) fromProven(d []byte, from netip.AddrPort) {
	typ := message.Type(d[0] >> 4 & 0x3)
	code := codes.Code(d[1])
	mid := binary.BigEndian.Uint16(d[2:4])
	if code == codes.Empty {
		switch typ {
		case message.Acknowledgement, message.Reset:
			l.ackOrReset(from, int32(mid), typ == message.Reset)
		case message.Confirmable:
			// A CoAP ping: Reset (RFC 7252 §4.3).
			_, _ = l.conn.WriteToUDPAddrPort([]byte{0x70, 0x00, d[2], d[3]}, from)
		}
		return
	}
	if !isRequestCode(code) || (typ != message.Confirmable && typ != message.NonConfirmable) {
		return // a response to a request the gateway never sent
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
			_, _ = l.conn.WriteToUDPAddrPort([]byte{0x70, 0x00, d[2], d[3]}, from)
		}
		return
	}
	if r.HasOption(message.Block1) || r.HasOption(message.Block2) {
		l.pool.ReleaseMessage(r)
		l.toConn(d, from)
		return
	}
	fp := l.fastPeer(from)
	if fp == nil {
		l.pool.ReleaseMessage(r)
		l.ctr.peersFull.Inc()
		return
	}
	l.fastMu.Lock()
	fp.last = l.env.Now().UnixNano()
	if e := fp.find(mid); e != nil {
		// A duplicate (RFC 7252 §4.5): a Confirmable one gets the same answer.
		var resp []byte
		if e.state == midDone && typ == message.Confirmable {
			resp = e.resp
		}
		l.fastMu.Unlock()
		l.pool.ReleaseMessage(r)
		if resp != nil {
			_, _ = l.conn.WriteToUDPAddrPort(resp, from)
		}
		return
	}
	if fp.inflight >= maxInflight {
		l.fastMu.Unlock()
		l.pool.ReleaseMessage(r)
		l.ctr.busy.Inc()
		return
	}
	fp.take(mid)
	fp.inflight++
	fp.reqs = append(fp.reqs, r)
	start := false
	if !fp.queued {
		fp.queued = true
		l.fastReady = append(l.fastReady, fp)
		if l.fastWorkers < maxFastWorkers {
			l.fastWorkers++
			start = true
		}
	}
	l.fastMu.Unlock()
	if start && !l.goStart(l.fastWorker) {
		l.fastMu.Lock()
		l.fastWorkers--
		l.fastMu.Unlock()
	}
}

// fastPeer returns from's state, making it (with what the unproven path
// answered it, so that a late copy of one of those requests is not served
// again); nil when MaxPeers are kept.
func (l *Listener) fastPeer(from netip.AddrPort) *fastPeer {
	l.fastMu.Lock()
	fp := l.fast[from]
	l.fastMu.Unlock()
	if fp != nil {
		return fp
	}
	fp = &fastPeer{addr: from}
	l.sources.Unproven(from, l.env.Now(), func(s *srcState) {
		for i, e := range s.recent {
			if e.midState == midNone {
				continue
			}
			fe := fastEntry{mid: e.mid, state: midDone}
			if e.respLen > 0 {
				fe.resp = append([]byte(nil), e.resp[:e.respLen]...)
			}
			fp.recent[i] = fe
		}
		fp.next = s.next
	})
	l.fastMu.Lock()
	defer l.fastMu.Unlock()
	if cur := l.fast[from]; cur != nil {
		return cur
	}
	if len(l.fast) >= l.opts.MaxPeers || l.ctx.Err() != nil {
		return nil
	}
	l.fast[from] = fp
	return fp
}

// fastWorker serves the ready proven sources' requests, one request of one
// peer at a time, until none is left.
func (l *Listener) fastWorker() {
	l.fastMu.Lock()
	for len(l.fastReady) > 0 && l.ctx.Err() == nil {
		fp := l.fastReady[0]
		l.fastReady = popFront(l.fastReady)
		r := fp.reqs[0]
		fp.reqs = popFront(fp.reqs)
		l.fastMu.Unlock()
		l.serveProven(fp, r)
		l.pool.ReleaseMessage(r)
		l.fastMu.Lock()
		if len(fp.reqs) > 0 {
			l.fastReady = append(l.fastReady, fp)
		} else {
			fp.queued = false
		}
	}
	l.fastWorkers--
	l.fastMu.Unlock()
}

// serveProven serves one request of a proven source and answers it from the
// socket. It runs on a worker.
func (l *Listener) serveProven(fp *fastPeer, r *pool.Message) {
	from := fp.addr
	res := l.serve(nil, &connState{addr: from, proven: true}, r)
	b, err := l.encodeAnswer(r, res)
	if err != nil {
		l.log.Debug("answer not encoded", zap.Stringer("to", from), zap.Error(err))
	}
	mid := uint16(r.MessageID())
	// The answer is recorded before it leaves, so that a retransmission that
	// overtakes the record is not mistaken for a request still in progress.
	l.fastMu.Lock()
	if fp.inflight > 0 {
		fp.inflight--
	}
	if e := fp.find(mid); e != nil && e.state == midBusy {
		e.state = midDone
		if err == nil && r.Type() == message.Confirmable {
			e.resp = b
		}
	}
	l.fastMu.Unlock()
	sent := false
	if err == nil && b != nil {
		_, werr := l.conn.WriteToUDPAddrPort(b, from)
		sent = werr == nil
	}
	switch {
	case sent && res.after != nil:
		res.after()
	case res.cancel != nil:
		res.cancel()
	}
	if sent || (err == nil && b == nil) {
		l.ctr.response(r.Code(), res.code)
	}
}

// toConn hands a datagram of a proven source to its go-coap connection, made
// for it (a block-wise transfer), with what the source was answered without
// one.
func (l *Listener) toConn(d []byte, from netip.AddrPort) {
	p, created := l.peer(from)
	if p == nil {
		l.ctr.peersFull.Inc()
		return
	}
	if created {
		l.carryOver(p, from)
	}
	if err := p.cc.Process(nil, d); err != nil {
		l.processError(p, from, created, d, err)
	}
}

// expireFast forgets the proven sources silent for EXCHANGE_LIFETIME with
// nothing waiting: no copy of their requests can come any more. The periodic
// driver calls it.
func (l *Listener) expireFast(now time.Time) {
	cut := now.Add(-exchangeLifetime).UnixNano()
	l.fastMu.Lock()
	defer l.fastMu.Unlock()
	gone := 0
	for a, fp := range l.fast {
		if fp.last < cut && fp.inflight == 0 && !fp.queued {
			delete(l.fast, a)
			gone++
		}
	}
	if gone > len(l.fast) {
		// A map keeps the table of its largest size: one of a burst of
		// sources would outlive them.
		fresh := make(map[netip.AddrPort]*fastPeer, len(l.fast))
		maps.Copy(fresh, l.fast)
		l.fast = fresh
	}
}
