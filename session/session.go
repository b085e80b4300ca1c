// Package session keeps one small record per device, whatever its protocol:
// identity, last address, liveness, keepalive and will. MQTT-SN sessions follow the
// CONNECT; CoAP and plain-datagram sessions are synthetic, created on the first valid
// datagram and kept alive by any traffic.
//
// It starts no goroutines and does no I/O: the owner calls Expire(now) from one
// periodic driver and publishes the wills of the sessions it returns, so 100 000
// idle devices cost memory, not timers or scheduler work (ARCHITECTURE.md rule 7).
// The table is sharded by key; a Session's own fields are guarded by its mutex.
// Lock order: shard lock, then session lock; never the other way round.
package session

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
)

// Key names a device: its identity within one listener.
type Key struct {
	Listener string
	Device   string // client id, PSK identity, or an address for anonymous devices
}

// Will is published when a session is lost (not when it ends cleanly).
type Will struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
}

// Session is one device's record.
type Session struct {
	Key     Key
	Created time.Time

	mu        sync.Mutex // guards the fields below
	addr      netip.AddrPort
	lastSeen  time.Time
	keepalive time.Duration // 0: never expires
	will      *Will
}

// Addr is the device's last source address (NAT rebinding moves it).
func (s *Session) Addr() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// LastSeen is when the device last sent anything valid.
func (s *Session) LastSeen() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastSeen
}

// SetKeepalive sets the liveness period; the session expires after 1.5 times it of
// silence (MQTT-SN 1.2 §6.14), and never when it is 0. An MQTT-SN client going to
// sleep sets its sleep duration here.
func (s *Session) SetKeepalive(d time.Duration) {
	s.mu.Lock()
	s.keepalive = d
	s.mu.Unlock()
}

// Keepalive returns the liveness period.
func (s *Session) Keepalive() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keepalive
}

// SetWill sets (nil: clears) the will.
func (s *Session) SetWill(w *Will) {
	s.mu.Lock()
	s.will = w
	s.mu.Unlock()
}

// Will returns the will, or nil.
func (s *Session) Will() *Will {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.will
}

func (s *Session) expired(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keepalive > 0 && now.Sub(s.lastSeen) > s.keepalive*3/2
}

const shards = 64

// Table holds every session, sharded by key.
type Table struct {
	seed   maphash.Seed
	shards [shards]shard
}

type shard struct {
	mu sync.Mutex // guards m
	m  map[Key]*Session
}

// NewTable returns an empty table.
func NewTable() *Table {
	t := &Table{seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].m = map[Key]*Session{}
	}
	return t
}

func (t *Table) shard(k Key) *shard {
	var h maphash.Hash
	h.SetSeed(t.seed)
	h.WriteString(k.Listener)
	h.WriteByte(0)
	h.WriteString(k.Device)
	return &t.shards[h.Sum64()%shards]
}

// Touch records traffic from the device at addr: it creates the session on first
// contact (created is true then) and moves its address when it changed.
func (t *Table) Touch(k Key, addr netip.AddrPort, now time.Time) (s *Session, created bool) {
	sh := t.shard(k)
	sh.mu.Lock()
	s, ok := sh.m[k]
	if !ok {
		s = &Session{Key: k, Created: now}
		sh.m[k] = s
	}
	sh.mu.Unlock()
	s.mu.Lock()
	s.addr = addr
	s.lastSeen = now
	s.mu.Unlock()
	return s, !ok
}

// Get returns the session for k, or nil.
func (t *Table) Get(k Key) *Session {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.m[k]
}

// Delete removes the session for k (a clean end: no will) and returns it, or nil.
func (t *Table) Delete(k Key) *Session {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.m[k]
	delete(sh.m, k)
	return s
}

// Len counts the sessions.
func (t *Table) Len() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// Expire removes and returns every session silent for longer than 1.5 times its
// keepalive at now; the caller publishes their wills.
func (t *Table) Expire(now time.Time) []*Session {
	var lost []*Session
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for k, s := range sh.m {
			if s.expired(now) {
				delete(sh.m, k)
				lost = append(lost, s)
			}
		}
		sh.mu.Unlock()
	}
	return lost
}
