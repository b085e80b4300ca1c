// Package session is the device registry: one small record per device, whatever
// its protocol, holding its identity, class, last address, liveness, will and the
// downlinks queued for it. MQTT-SN sessions follow the CONNECT; CoAP and
// plain-datagram sessions are synthetic, created on the first valid datagram and
// kept alive by any traffic. Engines keep only protocol state (topic ids,
// observations, exchanges in flight) and look the device up here; they never keep
// their own copy of its address or will.
//
// It starts no goroutines and does no I/O: the gateway calls Expire(now) from its
// one periodic driver, so 100 000 idle devices cost memory, not timers or
// scheduler work (ARCHITECTURE.md rule 7). A session that ends is reported once:
// Expire reports a lost session to the caller (which publishes the will) and then
// to the Owner of its listener; an engine that ends a session itself (End) is not
// called back.
//
// A listener may have a Saver, which keeps a durable copy of its sessions across
// a restart (the gateway's store, for the synthetic sessions of CoAP and plain-UDP
// devices): the registry tells it which sessions changed, coarsely (see Saver),
// and Restore puts them back at start.
//
// The table is sharded by key, the address index by address. Lock order: a shard
// lock, then a session's lock; never the other way round, and never two shard
// locks at once. Callbacks run with no lock held.
package session

import (
	"hash/maphash"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Key names a device: its identity within one listener.
type Key struct {
	Listener string
	Device   string // client id, PSK identity, rule's device id, or an address
}

// Peer is where a device's datagrams come from: a UDP address and, behind an
// MQTT-SN forwarder, the wireless node id of the encapsulation (MQTT-SN 1.2 §5.5).
type Peer struct {
	Addr netip.AddrPort
	Node string // "" when the device talks to the gateway directly
}

// Message is a will or a birth message. A device's own will (MQTT-SN WILLTOPIC) is
// in the device's topic space; the gateway maps it when it publishes it. A class's
// will and birth are broker-side topics already.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
}

// State is where a session stands.
type State uint8

const (
	// StateActive: the device is talking to the gateway.
	StateActive State = iota
	// StateAsleep: an MQTT-SN client sleeping (MQTT-SN 1.2 §6.14); downlinks wait.
	StateAsleep
	// StateLost: silent for 1.5 keepalives; its will went out. The record stays,
	// for GET /devices, until LostRetention passes or the device speaks again.
	StateLost
)

var stateNames = [...]string{"active", "asleep", "lost"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// ParseState is the inverse of State.String.
func ParseState(s string) (State, bool) {
	for i, n := range stateNames {
		if n == s {
			return State(i), true
		}
	}
	return 0, false
}

// EndReason says why a session ended.
type EndReason uint8

const (
	// EndLost: no traffic for 1.5 keepalives; the will is published.
	EndLost EndReason = iota
	// EndDisconnected: the device ended its session itself (MQTT-SN DISCONNECT); no will.
	EndDisconnected
	// EndTakenOver: another connection took the device's identity or address; no will.
	EndTakenOver
	// EndForgotten: a lost session's record was dropped after LostRetention.
	EndForgotten
	numEndReasons
)

var endNames = [numEndReasons]string{"lost", "disconnected", "taken_over", "forgotten"}

func (r EndReason) String() string {
	if r < numEndReasons {
		return endNames[r]
	}
	return "unknown"
}

// Owner is the engine serving one listener's sessions.
type Owner interface {
	// SessionEnded is called once, with no lock held, for each session of the
	// owner's listener the registry ended (EndLost), after the registry's caller
	// queued its will. The engine drops its protocol state for the device there,
	// unless s is no longer the device's session (it came back meanwhile).
	SessionEnded(s *Session, why EndReason)
}

// Saver keeps a durable copy of one listener's sessions. The registry calls
// SessionDirty, with no lock held, when a session of the listener was created,
// moved to another address, changed its user or class, ended (End, or lost in
// Expire), or when its traffic went past its save mark. The Saver reads the
// session later, off the datagram's path (Session.Save), and writes its copy or,
// once the session is no longer live, deletes it. SessionDirty must not block:
// it records the session and returns.
//
// The save mark keeps a busy device from costing a write per datagram: Save
// moves it SaveEvery(keepalive) past the saved last-seen time, so the copy's
// last-seen time is at most that much older than the real one (plus the time
// the write takes).
type Saver interface {
	SessionDirty(s *Session)
}

// SaveEvery is how much newer a session's traffic must be than its saved
// last-seen time before it is saved again: a quarter of its keepalive (never,
// for a session that is never lost). A restored session is lost 1.5 keepalives
// after its saved last-seen time, so at least 1.25 keepalives after the device's
// real last datagram: a device that sends at least once per keepalive, as its
// keepalive says it will, is never lost because of a restart, while a write per
// device costs at most one per quarter keepalive, however often it sends.
func SaveEvery(keepalive time.Duration) time.Duration {
	if keepalive <= 0 {
		return math.MaxInt64
	}
	return keepalive / 4
}

// Listener is what the registry knows of one listener: its protocol and
// defaults, the engine that owns its sessions, and what keeps them durable.
type Listener struct {
	Protocol  string        // "udp", "mqttsn", "coap", "coaps"
	Keepalive time.Duration // a new session's keepalive until a class or the device sets one; 0: never lost
	Owner     Owner         // nil: nobody to tell (plain UDP has no protocol state)
	Saver     Saver         // nil: the sessions are not kept across a restart (or the engine keeps its own)
}

// Options configure a Registry.
type Options struct {
	// LostRetention is how long a lost session stays listed (StateLost) before
	// it is forgotten; default 1h.
	LostRetention time.Duration
	// Created is called once, with no lock held, for each session Touch creates
	// (first contact, or a lost device come back), before Touch returns: the
	// gateway sets the device's class there and publishes its birth.
	Created func(s *Session)
	// Restored is called, with no lock held, for each session Restore puts
	// back, before Restore returns: the gateway gives the device its class
	// again, and no birth (the device had its first contact before).
	Restored func(s *Session)
}

// Session is one device's record.
type Session struct {
	Key      Key
	Protocol string
	// Created is the device's first contact. Read it under mu (Info, Save):
	// SetCreated may move it back once the session exists.
	Created time.Time

	mu        sync.Mutex // guards the fields below, and Created
	peer      Peer
	lastSeen  time.Time
	keepalive time.Duration // 0: never lost
	state     State
	ended     bool     // removed from the table (End, or replaced after a loss)
	will      *Message // the device's own, in its topic space
	class     string
	classWill *Message // broker-side
	user      string   // the username the device proved (password file, PSK identity); "" anonymous
	queue     []Queued // downlinks waiting for the device's next datagram, oldest first
	// saveBy (Unix ns): traffic at or after it is worth a save (Saver);
	// MaxInt64 while a save is already due and not yet taken.
	saveBy int64

	saver *saverBox // the listener's Saver, set at creation; nil: not kept
}

// Queued is one downlink waiting for its device.
type Queued struct {
	Data    []byte
	Expires time.Time
}

// SetCreated moves the session's first contact to t, when t is earlier: a
// session another gateway instance served before (Touch created it here, the
// fleet's record of it says since when the device is in contact).
func (s *Session) SetCreated(t time.Time) {
	s.mu.Lock()
	if !t.IsZero() && t.Before(s.Created) {
		s.Created = t
	}
	s.mu.Unlock()
}

// Peer is the device's last source (NAT rebinding moves it).
func (s *Session) Peer() Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peer
}

// Addr is the device's last source address.
func (s *Session) Addr() netip.AddrPort { return s.Peer().Addr }

// LastSeen is when the device last sent anything valid.
func (s *Session) LastSeen() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastSeen
}

// State is the session's state.
func (s *Session) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// SetAsleep marks an MQTT-SN client asleep or awake again (MQTT-SN 1.2 §6.14).
func (s *Session) SetAsleep(asleep bool) {
	s.mu.Lock()
	if s.state != StateLost {
		s.state = StateActive
		if asleep {
			s.state = StateAsleep
		}
	}
	s.mu.Unlock()
}

// Live reports whether the session is still the registry's live record of its
// device: neither ended nor lost.
func (s *Session) Live() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.ended && s.state != StateLost
}

// SetKeepalive sets the liveness period; the session is lost after 1.5 times it
// of silence (MQTT-SN 1.2 §6.14), and never when it is 0. An MQTT-SN client's
// CONNECT Duration, or its sleep duration, is set here.
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

// SetWill sets (nil: clears) the device's own will, in its topic space. A will
// with an empty topic holds a will message that came before its topic (MQTT-SN
// 1.2 §6.4) and is never published.
func (s *Session) SetWill(w *Message) {
	s.mu.Lock()
	s.will = w
	s.mu.Unlock()
}

// OwnWill returns the device's own will, or nil.
func (s *Session) OwnWill() *Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.will
}

// SetClass records the device's class and the class's will (broker-side; nil:
// none), which is the fallback when the device has no will of its own.
func (s *Session) SetClass(name string, will *Message) {
	s.mu.Lock()
	save := s.saver != nil && s.class != name
	s.class, s.classWill = name, will
	s.mu.Unlock()
	if save {
		s.saver.SessionDirty(s)
	}
}

// SetUser records the username the device authenticated as ("" anonymous): its
// %u in ACL patterns. A CoAP device's every request sets it: only a change is
// worth telling the Saver.
func (s *Session) SetUser(u string) {
	s.mu.Lock()
	save := s.saver != nil && s.user != u
	s.user = u
	s.mu.Unlock()
	if save {
		s.saver.SessionDirty(s)
	}
}

// User is the username the device authenticated as, "" when anonymous.
func (s *Session) User() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.user
}

// Class is the device's class name, "" when none.
func (s *Session) Class() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.class
}

// Will returns the will to publish when the session is lost: the device's own
// (own is true: its topic is in the device's topic space), else its class's, else
// nil.
func (s *Session) Will() (m *Message, own bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.will != nil && s.will.Topic != "" {
		return s.will, true
	}
	return s.classWill, false
}

// Enqueue queues a downlink for the device's next datagram; when max are
// queued already the oldest is dropped (dropped is true).
func (s *Session) Enqueue(q Queued, max int) (dropped bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if max > 0 && len(s.queue) >= max {
		copy(s.queue, s.queue[1:])
		s.queue = s.queue[:len(s.queue)-1]
		dropped = true
	}
	s.queue = append(s.queue, q)
	return dropped
}

// TakeQueued removes and returns the queued downlinks still valid at now, oldest
// first, and counts the ones that expired.
func (s *Session) TakeQueued(now time.Time) (due [][]byte, expired int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range s.queue {
		if now.After(q.Expires) {
			expired++
			continue
		}
		due = append(due, q.Data)
	}
	s.queue = nil
	return due, expired
}

// QueuedLen counts the queued downlinks.
func (s *Session) QueuedLen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// expireQueuedLocked drops the queued downlinks past their expiry; s.mu is held.
func (s *Session) expireQueuedLocked(now time.Time) int {
	n := 0
	kept := s.queue[:0]
	for _, q := range s.queue {
		if now.After(q.Expires) {
			n++
			continue
		}
		kept = append(kept, q)
	}
	for i := len(kept); i < len(s.queue); i++ {
		s.queue[i] = Queued{}
	}
	s.queue = kept
	if len(kept) == 0 {
		s.queue = nil
	}
	return n
}

// Info is a snapshot of a session, for GET /devices.
type Info struct {
	Listener  string
	Protocol  string
	Device    string
	Class     string
	Addr      netip.AddrPort
	FirstSeen time.Time
	LastSeen  time.Time
	State     State
	Queued    int
	User      string
}

// Info snapshots the session.
func (s *Session) Info() Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Info{Listener: s.Key.Listener, Protocol: s.Protocol, Device: s.Key.Device, Class: s.class,
		Addr: s.peer.Addr, FirstSeen: s.Created, LastSeen: s.lastSeen, State: s.state, Queued: len(s.queue), User: s.user}
}

// Saved is the durable copy of a session that a Saver keeps: what a restart
// needs to continue it. Its class's keepalive, will and birth come from the
// config again; its downlink queue is not kept.
type Saved struct {
	Peer     Peer
	Created  time.Time
	LastSeen time.Time
	Class    string
	User     string
}

// Save snapshots s for its Saver and moves its save mark (see Saver). live is
// false when s has ended or was lost: its copy is to be deleted.
func (s *Session) Save() (v Saved, live bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v = Saved{Peer: s.peer, Created: s.Created, LastSeen: s.lastSeen, Class: s.class, User: s.user}
	s.saveBy = math.MaxInt64
	if every := SaveEvery(s.keepalive); every < math.MaxInt64 {
		s.saveBy = s.lastSeen.Add(every).UnixNano()
	}
	return v, !s.ended && s.state != StateLost
}

// dueLocked reports whether traffic at now passed s's save mark, and marks the
// save taken; s.mu is held.
func (s *Session) dueLocked(now time.Time) bool {
	if s.saver == nil || now.UnixNano() < s.saveBy {
		return false
	}
	s.saveBy = math.MaxInt64 // until the Saver's next Save
	return true
}

const shards = 64

type addrKey struct {
	listener string
	peer     Peer
}

// Registry holds every session, sharded by key, with an index by address.
type Registry struct {
	o    Options
	seed maphash.Seed

	lmu       sync.RWMutex // guards listeners and savers
	listeners map[string]Listener
	savers    map[string]*saverBox // the listeners' that have one

	shards [shards]shard
	addrs  [shards]addrShard

	ends [numEndReasons]atomic.Uint64
}

type shard struct {
	mu sync.Mutex // guards m
	m  map[Key]*Session
}

type addrShard struct {
	mu sync.Mutex // guards m
	m  map[addrKey]*Session
}

// New returns an empty registry.
func New(o Options) *Registry {
	if o.LostRetention <= 0 {
		o.LostRetention = time.Hour
	}
	r := &Registry{o: o, seed: maphash.MakeSeed(), listeners: map[string]Listener{}, savers: map[string]*saverBox{}}
	for i := range r.shards {
		r.shards[i].m = map[Key]*Session{}
		r.addrs[i].m = map[addrKey]*Session{}
	}
	return r
}

// AddListener declares a listener's protocol, defaults and owner; call it
// before the listener serves.
func (r *Registry) AddListener(name string, l Listener) {
	r.lmu.Lock()
	r.listeners[name] = l
	delete(r.savers, name)
	if l.Saver != nil {
		r.savers[name] = &saverBox{l.Saver}
	}
	r.lmu.Unlock()
}

func (r *Registry) listener(name string) Listener {
	r.lmu.RLock()
	defer r.lmu.RUnlock()
	return r.listeners[name]
}

// saverBox holds a listener's Saver, so that a session refers to it in one
// word (a session is kept small: many are idle).
type saverBox struct{ Saver }

func (r *Registry) listenerSaver(name string) (Listener, *saverBox) {
	r.lmu.RLock()
	defer r.lmu.RUnlock()
	return r.listeners[name], r.savers[name]
}

func (r *Registry) shard(k Key) *shard {
	var h maphash.Hash
	h.SetSeed(r.seed)
	h.WriteString(k.Listener)
	h.WriteByte(0)
	h.WriteString(k.Device)
	return &r.shards[h.Sum64()%shards]
}

func (r *Registry) addrShard(k addrKey) *addrShard {
	var h maphash.Hash
	h.SetSeed(r.seed)
	h.WriteString(k.listener)
	b := k.peer.Addr.Addr().As16()
	h.Write(b[:])
	h.WriteByte(byte(k.peer.Addr.Port()))
	h.WriteByte(byte(k.peer.Addr.Port() >> 8))
	h.WriteString(k.peer.Node)
	return &r.addrs[h.Sum64()%shards]
}

// Touch records valid traffic from the device at p: it creates the session on
// first contact, or when the device's last session was lost (created is true
// then, after Options.Created ran) and moves its address when it changed (NAT
// rebinding). A lost session is replaced by a new one, never revived.
func (r *Registry) Touch(k Key, p Peer, now time.Time) (s *Session, created bool) {
	sh := r.shard(k)
	sh.mu.Lock()
	s = sh.m[k]
	if s != nil && s.State() == StateLost {
		s.mu.Lock()
		s.ended = true
		s.mu.Unlock()
		s = nil
	}
	if s == nil {
		l, sv := r.listenerSaver(k.Listener)
		s = &Session{Key: k, Protocol: l.Protocol, Created: now, keepalive: l.Keepalive, lastSeen: now, peer: p, saver: sv}
		sh.m[k] = s
		created = true
	}
	sh.mu.Unlock()
	s.mu.Lock()
	old := s.peer
	s.peer = p
	s.lastSeen = now
	save := s.dueLocked(now) || s.saver != nil && (created || old != p)
	s.mu.Unlock()
	if created || old != p {
		if !created {
			r.unindex(k.Listener, old, s)
		}
		r.index(k.Listener, p, s)
	}
	if created && r.o.Created != nil {
		r.o.Created(s)
	}
	if save {
		s.saver.SessionDirty(s)
	}
	return s, created
}

// Restore puts back a session kept before (by its listener's Saver, or an
// engine's own record: a gateway restarted, or another instance of a fleet
// served the device), as it was at v.LastSeen, and returns it; nil when k has
// a live session already (a lost one is replaced, as Touch replaces it).
// Unlike Touch it calls Options.Restored, not Created: the device had its
// first contact (and its birth) before. Its keepalive is the listener's until
// Restored or the caller sets one. Restore the sessions before the listeners
// serve, then run Expire once: a session whose keepalive ran out while the
// gateway was down is lost there, its will published, rather than continued by
// the device's next datagram.
func (r *Registry) Restore(k Key, v Saved) *Session {
	l, sv := r.listenerSaver(k.Listener)
	sh := r.shard(k)
	sh.mu.Lock()
	if old := sh.m[k]; old != nil {
		if old.State() != StateLost {
			sh.mu.Unlock()
			return nil
		}
		old.mu.Lock()
		old.ended = true
		old.mu.Unlock()
	}
	s := &Session{Key: k, Protocol: l.Protocol, Created: v.Created, keepalive: l.Keepalive, lastSeen: v.LastSeen, peer: v.Peer,
		class: v.Class, user: v.User, saver: sv}
	sh.m[k] = s
	sh.mu.Unlock()
	r.index(k.Listener, v.Peer, s)
	if r.o.Restored != nil {
		r.o.Restored(s)
	}
	return s
}

func (r *Registry) index(listener string, p Peer, s *Session) {
	ak := addrKey{listener, p}
	as := r.addrShard(ak)
	as.mu.Lock()
	as.m[ak] = s
	as.mu.Unlock()
}

func (r *Registry) unindex(listener string, p Peer, s *Session) {
	ak := addrKey{listener, p}
	as := r.addrShard(ak)
	as.mu.Lock()
	if as.m[ak] == s {
		delete(as.m, ak)
	}
	as.mu.Unlock()
}

// Refresh records traffic from the device of s at p, when s is still its live
// session: it never creates one. It returns false when s ended or was lost
// meanwhile (the engine then treats the device as gone).
func (r *Registry) Refresh(s *Session, p Peer, now time.Time) bool {
	s.mu.Lock()
	if s.ended || s.state == StateLost {
		s.mu.Unlock()
		return false
	}
	old := s.peer
	s.peer, s.lastSeen = p, now
	save := s.dueLocked(now) || s.saver != nil && old != p
	s.mu.Unlock()
	if old != p {
		r.unindex(s.Key.Listener, old, s)
		r.index(s.Key.Listener, p, s)
	}
	if save {
		s.saver.SessionDirty(s)
	}
	return true
}

// Lookup returns the live session for k, or nil; it never creates one.
func (r *Registry) Lookup(k Key) *Session {
	sh := r.shard(k)
	sh.mu.Lock()
	s := sh.m[k]
	sh.mu.Unlock()
	if s == nil || !s.Live() {
		return nil
	}
	return s
}

// ByPeer returns the live session of the listener whose device was last seen at
// p, or nil.
func (r *Registry) ByPeer(listener string, p Peer) *Session {
	ak := addrKey{listener, p}
	as := r.addrShard(ak)
	as.mu.Lock()
	s := as.m[ak]
	as.mu.Unlock()
	if s == nil || !s.Live() || s.Peer() != p {
		return nil
	}
	return s
}

// End removes s, when it is still k's session, for why; the owner is not called
// back (it ended the session itself) and no will is due. It reports whether s
// was removed.
func (r *Registry) End(s *Session, why EndReason) bool {
	sh := r.shard(s.Key)
	sh.mu.Lock()
	if sh.m[s.Key] != s {
		sh.mu.Unlock()
		return false
	}
	delete(sh.m, s.Key)
	sh.mu.Unlock()
	s.mu.Lock()
	s.ended = true
	p := s.peer
	s.mu.Unlock()
	r.unindex(s.Key.Listener, p, s)
	r.ends[why].Add(1)
	if s.saver != nil {
		s.saver.SessionDirty(s) // its copy goes
	}
	return true
}

// Ended counts the sessions ended for why since the registry was made.
func (r *Registry) Ended(why EndReason) uint64 { return r.ends[why].Load() }

// Expire is the driver's step at now: every session silent for longer than 1.5
// times its keepalive becomes StateLost, lost(s) is called (the caller publishes
// its will) and then its listener's Owner. Queued downlinks past their expiry
// are dropped (counted in expired), and lost sessions older than LostRetention
// are forgotten.
func (r *Registry) Expire(now time.Time, lost func(*Session)) (expired int) {
	var gone []*Session
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for k, s := range sh.m {
			s.mu.Lock()
			if len(s.queue) > 0 {
				expired += s.expireQueuedLocked(now)
			}
			switch {
			case s.state == StateLost:
				if now.Sub(s.lastSeen) > r.o.LostRetention {
					delete(sh.m, k)
					s.ended = true
					gone = append(gone, s)
				}
			case s.keepalive > 0 && now.Sub(s.lastSeen) > s.keepalive*3/2:
				s.state = StateLost
				s.queue = nil // never delivered late
				gone = append(gone, s)
			}
			s.mu.Unlock()
		}
		sh.mu.Unlock()
	}
	for _, s := range gone {
		s.mu.Lock()
		forgotten, p := s.ended, s.peer
		s.mu.Unlock()
		r.unindex(s.Key.Listener, p, s)
		if forgotten {
			r.ends[EndForgotten].Add(1)
			continue
		}
		r.ends[EndLost].Add(1)
		if lost != nil {
			lost(s)
		}
		if s.saver != nil {
			s.saver.SessionDirty(s) // its will is out: its copy goes
		}
		if o := r.listener(s.Key.Listener).Owner; o != nil {
			o.SessionEnded(s, EndLost)
		}
	}
	return expired
}

// Range calls fn for every session, lost ones included, until fn returns false.
// fn runs with no lock held.
func (r *Registry) Range(fn func(*Session) bool) {
	var batch []*Session
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		batch = batch[:0]
		for _, s := range sh.m {
			batch = append(batch, s)
		}
		sh.mu.Unlock()
		for _, s := range batch {
			if !fn(s) {
				return
			}
		}
	}
}

// Len counts the sessions, lost ones included.
func (r *Registry) Len() int {
	n := 0
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// Count counts the sessions of listener in state.
func (r *Registry) Count(listener string, state State) int {
	n := 0
	r.Range(func(s *Session) bool {
		if s.Key.Listener == listener && s.State() == state {
			n++
		}
		return true
	})
	return n
}
