package store

import (
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Queue is the store's upstream queue.
func (b *Bolt) Queue() Queue { return boltQueue{b} }

// State is the store's state records.
func (b *Bolt) State() State { return boltState{b} }

// boltQueue and boltState are the two faces of one Bolt.
type (
	boltQueue struct{ b *Bolt }
	boltState struct{ b *Bolt }
)

// Append implements Queue.
func (q boltQueue) Append(ctx context.Context, m Message) (uint64, error) {
	b := q.b
	rec, err := appendMessage(nil, m)
	if err != nil {
		return 0, fmt.Errorf("store: %s: append: %w", b.path, err)
	}
	size := int64(len(rec))
	if (b.opts.MaxBytes > 0 && size > b.opts.MaxBytes) || size > bolt.MaxValueSize {
		return 0, fmt.Errorf("store: %s: append: %d-byte record, limit %d: %w", b.path, size, b.opts.MaxBytes, ErrTooLarge)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("store: %s: append: %w", b.path, err)
	}
	r := &request{ops: []op{{kind: opAppend, value: rec}}}
	b.mu.Lock()
	if err := b.acceptLocked(); err != nil {
		b.mu.Unlock()
		return 0, fmt.Errorf("store: %s: append: %w", b.path, err)
	}
	if b.opts.MaxMessages > 0 && b.messages+1 > b.opts.MaxMessages ||
		b.opts.MaxBytes > 0 && b.bytes+size > b.opts.MaxBytes {
		msgs, bytes := b.messages, b.bytes
		b.mu.Unlock()
		return 0, fmt.Errorf("store: %s: append: %d messages, %d bytes held, limits %d, %d: %w",
			b.path, msgs, bytes, b.opts.MaxMessages, b.opts.MaxBytes, ErrFull)
	}
	seq := b.nextSeq
	b.nextSeq++
	r.ops[0].seq = seq
	r.msgs, r.size = 1, size
	b.messages++
	b.bytes += size
	b.queueLocked(r)
	b.mu.Unlock()
	if err := b.wait(ctx, r); err != nil {
		return 0, fmt.Errorf("store: %s: append: %w", b.path, err)
	}
	return seq, nil
}

// Ack implements Queue.
func (q boltQueue) Ack(ctx context.Context, seqs ...uint64) error {
	b := q.b
	if len(seqs) == 0 {
		return nil
	}
	r := &request{ops: []op{{kind: opAck, seqs: seqs}}}
	if err := b.submit(ctx, r); err != nil {
		return fmt.Errorf("store: %s: ack: %w", b.path, err)
	}
	return nil
}

// Range implements Queue.
func (q boltQueue) Range(after uint64, fn func(Message) bool) error {
	b := q.b
	for after < ^uint64(0) {
		var chunk []Message
		err := b.view(func(tx *bolt.Tx) error {
			chunk = chunk[:0]
			var size int
			c := tx.Bucket(bucketQueue).Cursor()
			start := seqKey(after + 1)
			for k, v := c.Seek(start[:]); k != nil && len(chunk) < rangeChunk && size < rangeChunkBytes; k, v = c.Next() {
				m, err := queueRecord(k, v)
				if err != nil {
					return err
				}
				chunk = append(chunk, m)
				size += len(v)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("store: %s: range: %w", b.path, err)
		}
		if len(chunk) == 0 {
			return nil
		}
		for _, m := range chunk {
			if !fn(m) {
				return nil
			}
			after = m.Seq
		}
	}
	return nil
}

// Len implements Queue.
func (q boltQueue) Len() (messages int, bytes int64) {
	b := q.b
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.messages, b.bytes
}
