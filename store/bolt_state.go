package store

import (
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// stateOp checks one state write and makes it an op.
func stateOp(o Op) (op, error) {
	if !o.Kind.valid() {
		return op{}, fmt.Errorf("%s: %w", o.Kind, ErrUnknownKind)
	}
	if len(o.Key) == 0 || len(o.Key) > MaxKeyLen {
		return op{}, fmt.Errorf("%s: %d-byte key: %w", o.Kind, len(o.Key), ErrBadKey)
	}
	if o.Delete {
		return op{kind: opDelete, bucket: stateBucket(o.Kind), key: []byte(o.Key)}, nil
	}
	if len(o.Value) > bolt.MaxValueSize {
		return op{}, fmt.Errorf("%s %q: %d-byte value: %w", o.Kind, o.Key, len(o.Value), ErrTooLarge)
	}
	// Value is used only until the commit, before Put returns: no copy.
	return op{kind: opPut, bucket: stateBucket(o.Kind), key: []byte(o.Key), value: o.Value}, nil
}

// Put implements State.
func (s boltState) Put(ctx context.Context, kind Kind, key string, value []byte) error {
	return s.b.apply(ctx, "put", Op{Kind: kind, Key: key, Value: value})
}

// Delete implements State.
func (s boltState) Delete(ctx context.Context, kind Kind, key string) error {
	return s.b.apply(ctx, "delete", Op{Kind: kind, Key: key, Delete: true})
}

// Apply implements State.
func (s boltState) Apply(ctx context.Context, ops ...Op) error {
	return s.b.apply(ctx, "apply", ops...)
}

func (b *Bolt) apply(ctx context.Context, what string, ops ...Op) error {
	if len(ops) == 0 {
		return nil
	}
	r := &request{ops: make([]op, len(ops))}
	for i, o := range ops {
		var err error
		if r.ops[i], err = stateOp(o); err != nil {
			return fmt.Errorf("store: %s: %s: %w", b.path, what, err)
		}
	}
	if err := b.submit(ctx, r); err != nil {
		return fmt.Errorf("store: %s: %s: %w", b.path, what, err)
	}
	return nil
}

// Get implements State.
func (s boltState) Get(kind Kind, key string) (value []byte, ok bool, err error) {
	b := s.b
	if !kind.valid() {
		return nil, false, fmt.Errorf("store: %s: get: %s: %w", b.path, kind, ErrUnknownKind)
	}
	err = b.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(stateBucket(kind)).Get([]byte(key)); v != nil {
			value, ok = append([]byte{}, v...), true
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("store: %s: get: %w", b.path, err)
	}
	return value, ok, nil
}

// Range implements State.
func (s boltState) Range(kind Kind, fn func(key string, value []byte) bool) error {
	b := s.b
	if !kind.valid() {
		return fmt.Errorf("store: %s: range: %s: %w", b.path, kind, ErrUnknownKind)
	}
	type kv struct {
		k string
		v []byte
	}
	var after []byte
	for {
		var chunk []kv
		err := b.view(func(tx *bolt.Tx) error {
			var size int
			c := tx.Bucket(stateBucket(kind)).Cursor()
			k, v := c.First()
			if after != nil {
				if k, v = c.Seek(after); k != nil && string(k) == string(after) {
					k, v = c.Next()
				}
			}
			for ; k != nil && len(chunk) < rangeChunk && size < rangeChunkBytes; k, v = c.Next() {
				chunk = append(chunk, kv{string(k), append([]byte{}, v...)})
				size += len(k) + len(v)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("store: %s: range %s: %w", b.path, kind, err)
		}
		if len(chunk) == 0 {
			return nil
		}
		for _, e := range chunk {
			if !fn(e.k, e.v) {
				return nil
			}
		}
		after = []byte(chunk[len(chunk)-1].k)
	}
}
