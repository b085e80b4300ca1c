package natsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"

	"github.com/mqttgw/mqttgw/store"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// deviceToken is the last token of a message's subject: 16 hex digits of
// the FNV-1a hash of its order key (proxy.OrderKey: its listener and device,
// or its topic when it has no device), so that what one device left in a
// queue can be found by subject (QueueBacklog, DeviceBacklog): a device that
// moved to another instance waits for it (gateway/fence.go). Two keys of
// one token only make one of them wait longer.
func deviceToken(listener, device, topic string) string {
	h := fnv.New64a()
	if device != "" {
		h.Write([]byte(listener))
		h.Write([]byte{0, 0})
		h.Write([]byte(device))
	} else {
		h.Write([]byte{0})
		h.Write([]byte(topic))
	}
	return fmt.Sprintf("%016x", h.Sum64())
}

// tokenLen is a deviceToken's length.
const tokenLen = 16

// ackParallel bounds the message deletions one Ack has in flight.
const ackParallel = 32

// fileStoreFraming is what JetStream's file store adds to every message
// besides its subject, header and data: record length 4, sequence 8, time 8,
// subject length 2, header length 4 (when there is a header), hash 8
// (nats-server server/filestore.go, fileStoreMsgSizeRaw). Its stream info
// counts bytes this way, and so do MaxBytes's checks.
const fileStoreFraming = 4 + 8 + 8 + 2 + 4 + 8

// queue is the Queue face of a Store: one stream per gateway instance, one
// subject per device (deviceToken), file storage, DiscardNew limits. A
// message's stream sequence is its Seq; Append is a publish with a unique
// message id, Ack deletes by sequence, Range reads by sequence from the
// stream leader.
type queue struct {
	s       *Store
	stream  jetstream.Stream
	name    string // the stream's
	subject string // the base of its messages' subjects: subject.<deviceToken>
	// overhead is what JetStream counts per message beyond the record:
	// subject, the message id header, framing. Len subtracts it. hdrLen is
	// the header's part, which counts against the server's payload limit.
	overhead, hdrLen int64

	// refreshMu serializes refreshes; it is held across the stream info
	// request, and nothing but another refresh waits for it.
	refreshMu sync.Mutex
	// lenMu guards the fields below. A leaf.
	lenMu      sync.Mutex
	msgs       int        // stored messages: the last refresh's, plus appends acknowledged since
	bytes      int64      // their records' bytes
	infoLast   uint64     // the stream's last sequence in the last refresh's info: appends up to it are counted there
	first      uint64     // the stream's first sequence in the last refresh's info (Ack's purge)
	refreshing bool       // a refresh's stream info request is under way
	during     []appended // appends acknowledged meanwhile
	sending    int        // appends sent and not yet answered
	sendBytes  int64      // their records' bytes
}

// appended is one acknowledged append, remembered while a refresh runs.
type appended struct {
	seq  uint64
	size int64
}

// newQueue is the queue of instance's stream, without the stream.
func newQueue(s *Store, instance string) *queue {
	q := &queue{s: s, name: QueueStream(s.opts.Name, instance), subject: QueueSubject(s.opts.Name, instance)}
	q.hdrLen = int64(headerLen(nats.Header{hdrMsgID: {newID()}}))
	q.overhead = int64(len(q.subject)+1+tokenLen) + q.hdrLen + fileStoreFraming
	return q
}

func (s *Store) openQueue(ctx context.Context) (*queue, error) {
	o := s.opts
	maxMsgs, maxBytes := int64(o.MaxMessages), o.MaxBytes
	if maxMsgs < 0 {
		maxMsgs = -1
	}
	if maxBytes < 0 {
		maxBytes = -1
	}
	q := newQueue(s, o.Instance)
	var err error
	q.stream, err = s.ensureStream(ctx, jetstream.StreamConfig{
		Name:        q.name,
		Description: "mqttgw upstream queue of gateway " + o.Instance + " in fleet " + o.Name,
		Subjects:    []string{q.subject + ".*", q.subject}, // and the base: an earlier build's appends
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		MaxMsgs:     maxMsgs,
		MaxBytes:    maxBytes,
		// A full queue refuses (store.ErrFull), never drops what it holds.
		Discard:    jetstream.DiscardNew,
		Duplicates: DefaultDuplicateWindow,
		Metadata:   map[string]string{metaFormat: formatVersion, metaRole: "queue", metaInstance: o.Instance},
	})
	if err != nil {
		return nil, err
	}
	if err := q.refresh(); err != nil {
		return nil, err
	}
	return q, nil
}

// Append implements store.Queue. The message is published with a unique
// message id and acknowledged by JetStream once a quorum of replicas stored
// it; its stream sequence is its Seq. A request that times out or finds no
// leader is sent again with the same id, so JetStream stores it once and
// answers with the first sequence; ctx is checked before the first send only.
func (q *queue) Append(ctx context.Context, m store.Message) (uint64, error) {
	s := q.s
	rec, err := store.AppendMessage(nil, m)
	if err != nil {
		return 0, fmt.Errorf("store: %s: append: %w", s.label, err)
	}
	size := int64(len(rec))
	if o := s.opts; o.MaxBytes > 0 && size+q.overhead > o.MaxBytes || size+q.hdrLen > s.nc.MaxPayload() {
		return 0, fmt.Errorf("store: %s: append: %d-byte record, limit %d, server payload limit %d: %w",
			s.label, size, o.MaxBytes, s.nc.MaxPayload(), store.ErrTooLarge)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("store: %s: append: %w", s.label, err)
	}
	release, err := s.enter()
	if err != nil {
		return 0, fmt.Errorf("store: %s: append: %w", s.label, err)
	}
	defer release()
	id := newID()
	subject := q.subject + "." + deviceToken(m.Listener, m.Device, m.Topic)
	q.lenMu.Lock()
	q.sending++
	q.sendBytes += size
	q.lenMu.Unlock()
	var ack *pubAck
	err = s.retry(ctx, true, func(actx context.Context) error {
		msg := &nats.Msg{Subject: subject, Header: nats.Header{hdrMsgID: {id}}, Data: rec}
		var err error
		ack, err = s.publish(actx, msg)
		return err
	})
	q.lenMu.Lock()
	q.sending--
	q.sendBytes -= size
	if err == nil {
		q.countLocked(ack.Seq, size)
	}
	q.lenMu.Unlock()
	if err != nil {
		ae := apiCode(err)
		switch {
		case isFull(ae):
			err = fmt.Errorf("%s: %w", ae.Description, store.ErrFull)
		case ae != nil && ae.ErrorCode == codeMsgExceedsMaximum:
			err = fmt.Errorf("%s: %w", ae.Description, store.ErrTooLarge)
		}
		return 0, fmt.Errorf("store: %s: append: %w", s.label, err)
	}
	return ack.Seq, nil
}

// countLocked counts an acknowledged append (a duplicate answer too: it
// means an earlier attempt of the same Append was stored and its answer
// lost), unless the last refresh's info holds it already.
func (q *queue) countLocked(seq uint64, size int64) {
	if seq > q.infoLast {
		q.msgs++
		q.bytes += size
	}
	if q.refreshing {
		q.during = append(q.during, appended{seq, size})
	}
}

// Ack implements store.Queue: it deletes each message from the stream (its
// leader answers once a quorum applied the deletion), up to ackParallel at a
// time. Sequences that are not there are ignored. A replayed queue is
// acknowledged from its front, so a run of seqs from the stream's first
// message on is removed with one purge of everything below the run's end
// instead (every message there is in the run). Then it reads the stream's
// counts again for Len.
func (q *queue) Ack(ctx context.Context, seqs ...uint64) error {
	s := q.s
	if len(seqs) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: %s: ack: %w", s.label, err)
	}
	release, err := s.enter()
	if err != nil {
		return fmt.Errorf("store: %s: ack: %w", s.label, err)
	}
	defer release()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		sem   = make(chan struct{}, ackParallel)
	)
	uniq := slices.Compact(slices.Sorted(slices.Values(seqs)))
	if len(uniq) > 0 && uniq[0] == 0 {
		uniq = uniq[1:]
	}
	q.lenMu.Lock()
	front := q.first
	q.lenMu.Unlock()
	run := 0
	for front > 0 && run < len(uniq) && uniq[run] == front+uint64(run) {
		run++
	}
	if run > 1 {
		err := s.retry(ctx, true, func(actx context.Context) error {
			return q.stream.Purge(actx, jetstream.WithPurgeSequence(front+uint64(run)))
		})
		if err != nil {
			return fmt.Errorf("store: %s: ack: purge below seq %d: %w", s.label, front+uint64(run), err)
		}
		uniq = uniq[run:]
	}
	for _, seq := range uniq {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := s.retry(ctx, true, func(actx context.Context) error {
				err := q.deleteMsg(actx, seq)
				if absent(apiCode(err)) {
					return nil // acknowledged before, or never given
				}
				return err
			})
			if err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("seq %d: %w", seq, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	rerr := q.refresh()
	if first != nil {
		return fmt.Errorf("store: %s: ack: %w", s.label, first)
	}
	if rerr != nil {
		return fmt.Errorf("store: %s: ack: %w", s.label, rerr)
	}
	return nil
}

// deleteMsg asks the stream leader to delete the message seq (without
// overwriting its bytes). It speaks the JetStream API itself, unlike
// jetstream.Stream.DeleteMsg, which flattens the API error to a string that
// absent and transient could not read.
func (q *queue) deleteMsg(ctx context.Context, seq uint64) error {
	req, _ := json.Marshal(struct {
		Seq     uint64 `json:"seq"`
		NoErase bool   `json:"no_erase"`
	}{seq, true})
	resp, err := q.s.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.DELETE."+q.name, req)
	if err != nil {
		return err
	}
	var r struct {
		Success bool                `json:"success"`
		Error   *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return fmt.Errorf("delete seq %d: answer %q: %w", seq, resp.Data, err)
	}
	if r.Error != nil {
		return r.Error
	}
	if !r.Success {
		return fmt.Errorf("delete seq %d: answer %q", seq, resp.Data)
	}
	return nil
}

// absent reports whether a deletion failed because the message is not there:
// deleted before (JetStream: "sequence not found" or "no message found"), or
// beyond the stream's last sequence ("stream store EOF").
func absent(ae *jetstream.APIError) bool {
	if ae == nil {
		return false
	}
	switch ae.ErrorCode {
	case codeNoMessageFound, codeSequenceNotFound:
		return true
	case codeDeleteFailed:
		return ae.Description == "stream store EOF" || ae.Description == "no message found"
	}
	return false
}

// Range implements store.Queue. It reads from the stream leader, so it sees
// every append acknowledged before it, and holds nothing on the server
// between calls of fn. Each round asks for the first message at or after the
// next sequence number (a "next by subject" get, which skips deleted
// messages), then for the rangeAhead numbers after it at once: a queue is
// mostly contiguous (acks remove it from the front), so a round usually
// yields rangeAhead+1 messages for two round trips. The look-ahead stops at
// the first number that is not there; the next round skips the gap.
func (q *queue) Range(after uint64, fn func(store.Message) bool) error {
	s := q.s
	for next := after + 1; next != 0; {
		first, err := q.get(next, true)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("store: %s: range: %w", s.label, err)
		}
		if !fn(first) {
			return nil
		}
		next = first.Seq + 1
		ahead, err := q.getAhead(next)
		if err != nil {
			return fmt.Errorf("store: %s: range: %w", s.label, err)
		}
		for _, m := range ahead {
			if !fn(m) {
				return nil
			}
			next = m.Seq + 1
		}
	}
	return nil
}

// rangeAhead is how many sequence numbers Range asks for at once after the
// first of a round.
const rangeAhead = 32

// get reads the message seq (with next, the first one at or after seq) from
// the stream leader; jetstream.ErrMsgNotFound when there is none.
func (q *queue) get(seq uint64, next bool) (store.Message, error) {
	s := q.s
	release, err := s.enter()
	if err != nil {
		return store.Message{}, err
	}
	defer release()
	var opts []jetstream.GetMsgOpt
	if next {
		opts = append(opts, jetstream.WithGetMsgSubject(">")) // any of the stream's subjects
	}
	var raw *jetstream.RawStreamMsg
	err = s.retry(context.Background(), false, func(actx context.Context) error {
		var err error
		raw, err = q.stream.GetMsg(actx, seq, opts...)
		return err
	})
	if err != nil {
		return store.Message{}, err
	}
	m, err := store.DecodeMessage(raw.Data)
	if err != nil {
		return store.Message{}, fmt.Errorf("seq %d: %w: %w", raw.Sequence, store.ErrCorrupt, err)
	}
	m.Seq = raw.Sequence
	return m, nil
}

// getAhead reads the messages from seq on, rangeAhead requests at once, and
// returns those before the first number that is not there.
func (q *queue) getAhead(seq uint64) ([]store.Message, error) {
	var (
		wg   sync.WaitGroup
		msgs [rangeAhead]store.Message
		errs [rangeAhead]error
	)
	n := rangeAhead
	if left := ^uint64(0) - seq; left < uint64(n) {
		n = int(left)
	}
	for i := range n {
		wg.Go(func() { msgs[i], errs[i] = q.get(seq+uint64(i), false) })
	}
	wg.Wait()
	for i := range n {
		if errors.Is(errs[i], jetstream.ErrMsgNotFound) {
			return msgs[:i], nil
		}
		if errs[i] != nil {
			return nil, errs[i]
		}
	}
	return msgs[:n], nil
}

// Len implements store.Queue. It answers from counters kept by this store,
// without a request: the stream's info at Open and after each Ack, plus the
// appends acknowledged since and those under way (as Bolt counts appends
// whose commit is under way). Another process's deletions (a fleet member
// draining an orphaned queue) show after this store's next Ack.
func (q *queue) Len() (messages int, bytes int64) {
	q.lenMu.Lock()
	defer q.lenMu.Unlock()
	return q.msgs + q.sending, q.bytes + q.sendBytes
}

// refresh sets the counters from the stream's info. It holds every append
// stored before the info request, whenever its answer arrives: an append is
// counted on top only if its sequence is beyond the info's last one
// (countLocked), also when it was answered while the request was under way.
func (q *queue) refresh() error {
	q.refreshMu.Lock()
	defer q.refreshMu.Unlock()
	q.lenMu.Lock()
	q.refreshing, q.during = true, nil
	q.lenMu.Unlock()
	var info *jetstream.StreamInfo
	err := q.s.retry(context.Background(), false, func(actx context.Context) error {
		var err error
		info, err = q.stream.Info(actx)
		return err
	})
	q.lenMu.Lock()
	defer q.lenMu.Unlock()
	q.refreshing = false
	during := q.during
	q.during = nil
	if err != nil {
		return fmt.Errorf("stream info: %w", err)
	}
	q.setLocked(info.State.Msgs, info.State.Bytes, info.State.LastSeq, during)
	q.first = info.State.FirstSeq
	return nil
}

// setLocked sets the counters from a stream info's message count, bytes (as
// JetStream counts them) and last sequence, and adds the appends answered
// while its request was under way that it does not hold.
func (q *queue) setLocked(msgs, bytes, last uint64, during []appended) {
	q.msgs = int(msgs)
	q.bytes = int64(bytes) - int64(msgs)*q.overhead
	q.infoLast = last
	for _, a := range during {
		if a.seq > last {
			q.msgs++
			q.bytes += a.size
		}
	}
}
