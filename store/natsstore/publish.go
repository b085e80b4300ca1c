package natsstore

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mqttgw/mqttgw/store"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStream's message headers used here (nats-server server/stream.go).
const (
	hdrMsgID       = "Nats-Msg-Id"         // deduplication within the stream's duplicate window
	hdrTTL         = "Nats-TTL"            // per-message TTL (2.11)
	hdrBatchID     = "Nats-Batch-Id"       // atomic batch publish (2.12)
	hdrBatchSeq    = "Nats-Batch-Sequence" // 1, 2, ... within the batch
	hdrBatchCommit = "Nats-Batch-Commit"   // "1" on the last message
	hdrKVOperation = "KV-Operation"        // "DEL" marks a deleted key-value key
)

// JetStream API error codes this backend tells apart
// (nats-server server/jetstream_errors_generated.go).
const (
	codeClusterNotAvail    = 10008 // no meta leader: temporarily unavailable
	codeClusterNotLeader   = 10009 // asked a server that is no longer leader
	codeNoMessageFound     = 10037
	codeSequenceNotFound   = 10043
	codeMsgExceedsMaximum  = 10054
	codeDeleteFailed       = 10057 // with the store's error: "stream store EOF", "no message found"
	codeStoreFailed        = 10077 // "maximum messages exceeded", "maximum bytes exceeded", or a write error
	codeStreamOffline      = 10118 // a replica recovering
	codeExpectedLastNotRdy = 10163
	codeTooManyRequests    = 10167
	codeBatchIncomplete    = 10176 // a message of the batch did not arrive (or a leader changed)
	codeBatchTooMany       = 10210 // too many batches in flight on the stream
)

// MaxApplyOps is the most ops one State.Apply may hold: nats-server's default
// limit of messages in one atomic batch (max_batch_size).
const MaxApplyOps = 1000

// pubAck is JetStream's answer to a publish: the stored message's stream and
// sequence, or an error; for an atomic batch, its id and size.
type pubAck struct {
	Stream    string              `json:"stream"`
	Seq       uint64              `json:"seq"`
	Duplicate bool                `json:"duplicate,omitempty"`
	BatchID   string              `json:"batch,omitempty"`
	BatchSize int                 `json:"count,omitempty"`
	Error     *jetstream.APIError `json:"error,omitempty"`
}

// newID returns 22 random base64url characters: message and batch ids.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// apiCode returns err's JetStream API error, or nil.
func apiCode(err error) *jetstream.APIError {
	var ae *jetstream.APIError
	if errors.As(err, &ae) {
		return ae
	}
	return nil
}

// isFull reports whether err is the stream refusing a message because of its
// MaxMsgs or MaxBytes with DiscardNew.
func isFull(ae *jetstream.APIError) bool {
	return ae != nil && ae.ErrorCode == codeStoreFailed &&
		(strings.Contains(ae.Description, "maximum messages") || strings.Contains(ae.Description, "maximum bytes"))
}

// transient reports whether a request that failed with err may succeed when
// sent again: no answer in time, no responder (a stream without a leader
// during an election), a reconnect under way, or an answer saying the
// cluster is busy or electing.
func transient(err error) bool {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected):
		return true
	}
	ae := apiCode(err)
	if ae == nil {
		return false
	}
	switch ae.ErrorCode {
	case codeClusterNotAvail, codeClusterNotLeader, codeStreamOffline, codeExpectedLastNotRdy,
		codeTooManyRequests, codeBatchIncomplete, codeBatchTooMany:
		return true
	case codeStoreFailed:
		return false
	}
	return ae.Code == 503 || ae.Code == 429
}

// retry runs attempt until it succeeds, fails for good, or s.opts.Timeout has
// passed since retry began; each attempt gets a context bounded by
// RequestTimeout. The wait between attempts grows from 50 ms to 1 s. For a
// write, ctx is checked only before the first attempt (see Queue.Append: once
// a write is sent, its answer is waited for), and the error of a last,
// transient attempt wraps ErrUnconfirmed (it may have been stored); for a
// read or Open, ctx bounds every attempt and wait.
func (s *Store) retry(ctx context.Context, write bool, attempt func(ctx context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	parent := ctx
	if write {
		parent = context.Background()
	}
	deadline := time.Now().Add(s.opts.Timeout)
	wait := 50 * time.Millisecond
	for {
		if s.connClosed() {
			return store.ErrClosed
		}
		actx, cancel := context.WithTimeout(parent, min(s.opts.RequestTimeout, time.Until(deadline)))
		err := attempt(actx)
		cancel()
		if err == nil || !transient(err) {
			return err
		}
		if perr := parent.Err(); perr != nil {
			return perr
		}
		if time.Until(deadline) < wait {
			if write {
				return fmt.Errorf("%w: %w", ErrUnconfirmed, err)
			}
			return err
		}
		if err := s.pause(parent, wait); err != nil {
			return err
		}
		wait = min(2*wait, time.Second)
	}
}

// pause waits d between two attempts, or until ctx ends (its error) or the
// connection closes (store.ErrClosed).
func (s *Store) pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.connDone:
		return store.ErrClosed
	}
}

// publish sends m and returns JetStream's acknowledgement, or its error as a
// *jetstream.APIError.
func (s *Store) publish(ctx context.Context, m *nats.Msg) (*pubAck, error) {
	resp, err := s.nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		return nil, err
	}
	var ack pubAck
	if err := json.Unmarshal(resp.Data, &ack); err != nil {
		return nil, fmt.Errorf("publish %s: answer %q: %w", m.Subject, resp.Data, err)
	}
	if ack.Error != nil {
		return nil, ack.Error
	}
	if ack.Stream == "" {
		return nil, fmt.Errorf("publish %s: answer %q is no acknowledgement", m.Subject, resp.Data)
	}
	return &ack, nil
}

// publishBatch stores msgs in one JetStream atomic batch (nats-server 2.12
// ADR-50): each message carries the batch id and its place, the last one the
// commit header; only the commit is a request, so the whole batch costs one
// round trip. JetStream stores all of them or none, replicated as one entry.
// A message lost on the way makes the commit fail as incomplete (transient:
// retry sends a new batch).
func (s *Store) publishBatch(ctx context.Context, msgs []*nats.Msg) (*pubAck, error) {
	id := newID()
	for i, m := range msgs {
		m.Header.Set(hdrBatchID, id)
		m.Header.Set(hdrBatchSeq, strconv.Itoa(i+1))
		m.Header.Del(hdrBatchCommit)
		m.Reply = ""
		if i == len(msgs)-1 {
			m.Header.Set(hdrBatchCommit, "1")
			break
		}
		if err := s.nc.PublishMsg(m); err != nil {
			return nil, err
		}
	}
	ack, err := s.publish(ctx, msgs[len(msgs)-1])
	if err != nil {
		return nil, err
	}
	if ack.BatchID != id || ack.BatchSize != len(msgs) {
		return nil, fmt.Errorf("batch %s of %d: acknowledged as batch %q of %d", id, len(msgs), ack.BatchID, ack.BatchSize)
	}
	return ack, nil
}

// headerLen is the length of m's header as nats.go sends it and JetStream
// stores it: "NATS/1.0\r\n", "Key: value\r\n" per value, "\r\n".
func headerLen(h nats.Header) int {
	if len(h) == 0 {
		return 0
	}
	n := len("NATS/1.0\r\n") + len("\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	return n
}
