package mqttsn

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/store"
)

// TestFleetLoadOnConnect: two engines share one State, as two instances of
// a fleet share the JetStream store. A persistent session made at A is
// continued at B by a CONNECT with CleanSession false: its topic id is valid
// (PUBACK accepted), its subscription is made again at B's broker, and B
// restored nothing at start.
func TestFleetLoadOnConnect(t *testing.T) {
	st := openTestStore(t)
	tbl := newOwnerTable(st)
	a := startStored(t, st, withOwners(tbl, "A"))
	b := startStored(t, st, withOwners(tbl, "B")) // before A has written anything: nothing to restore
	da := a.device(t)
	da.connect("dev", 60, false)
	id := da.register("t/up")
	da.subscribe("t/cmd", 1)

	db := b.device(t)
	db.connect("dev", 60, false)
	db.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: id, MsgID: 7, Data: []byte("x")})
	if pa := recv[*mqttsn.Puback](db); pa.ReturnCode != mqttsn.Accepted {
		t.Fatalf("PUBACK %v at B on the topic id registered at A, want accepted", pa.ReturnCode)
	}
	waitUntil(t, "the subscription made again at B's broker", func() bool { return slices.Contains(b.b.callList(), "sub t/cmd") })
	if n := b.reg.Get("mqttgw_mqttsn_session_loads_total", "listener", "sn", "result", "loaded"); n != 1 {
		t.Errorf("loads %v, want 1", n)
	}

	// A clean CONNECT reads nothing, and deletes what another instance
	// wrote; an unknown persistent client finds none.
	dc := a.device(t)
	dc.connect("other", 60, false)
	dc.register("t/other")
	dc2 := b.device(t)
	dc2.connect("other", 60, true)
	waitUntil(t, "the record of the clean session deleted", func() bool {
		_, ok, err := st.Get(store.KindMQTTSNSession, "sn\x00other")
		return err == nil && !ok
	})
	dd := b.device(t)
	dd.connect("nobody", 60, false)
	if n := b.reg.Get("mqttgw_mqttsn_session_loads_total", "listener", "sn", "result", "missing"); n != 1 {
		t.Errorf("missing %v, want 1 (the clean CONNECT reads nothing)", n)
	}
}

// withOwners makes an engine instance inst of a fleet whose ownership is tbl.
func withOwners(tbl *ownerTable, inst string) func(*Options) {
	return func(o *Options) { o.Owners = &memOwners{tbl, inst} }
}

// memOwners is the fleet's ownership in memory, shared by the engines of a
// test as natsstore's owner keys are by a fleet's instances: one view per
// instance (instance), one table (owners).
type memOwners struct {
	*ownerTable
	instance string
}

type ownerTable struct {
	st store.State
	mu sync.Mutex
	// Guarded by mu.
	rev      uint64
	owner    map[string]string
	revs     map[string]uint64
	watchers []func(key, instance string, rev uint64)
	applies  map[string]int  // ApplyOwned calls per instance
	dead     map[string]bool // instances not alive (all others are)
	ranges   int             // RangeOwners calls
}

func newOwnerTable(st store.State) *ownerTable {
	return &ownerTable{st: st, owner: map[string]string{}, revs: map[string]uint64{}, applies: map[string]int{}, dead: map[string]bool{}}
}

// kill makes instance dead for Instances.
func (o *ownerTable) kill(instance string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dead[instance] = true
}

// Instances is the instances that own a key, but for the dead ones.
func (o *memOwners) Instances() ([]string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	alive := []string{o.instance}
	for _, inst := range o.owner {
		if !o.dead[inst] && !slices.Contains(alive, inst) {
			alive = append(alive, inst)
		}
	}
	return alive, nil
}

func (o *memOwners) RangeOwners(fn func(key, instance string, rev uint64) bool) error {
	o.mu.Lock()
	o.ranges++
	owners, revs := maps.Clone(o.owner), maps.Clone(o.revs)
	o.mu.Unlock()
	for k, inst := range owners {
		if !fn(k, inst, revs[k]) {
			break
		}
	}
	return nil
}

func (o *memOwners) TakeFrom(_ context.Context, key string, rev uint64) (uint64, bool, error) {
	o.mu.Lock()
	if o.revs[key] != rev {
		o.mu.Unlock()
		return 0, false, nil
	}
	o.rev++
	rev = o.rev
	o.owner[key], o.revs[key] = o.instance, rev
	ws := slices.Clone(o.watchers)
	o.mu.Unlock()
	for _, w := range ws {
		w(key, o.instance, rev)
	}
	return rev, true, nil
}

func (o *memOwners) Instance() string { return o.instance }

func (o *memOwners) Take(_ context.Context, key string) (uint64, string, error) {
	o.mu.Lock()
	prev := o.owner[key]
	if prev == o.instance {
		defer o.mu.Unlock()
		return o.revs[key], prev, nil
	}
	o.rev++
	rev := o.rev
	o.owner[key], o.revs[key] = o.instance, rev
	ws := slices.Clone(o.watchers)
	o.mu.Unlock()
	for _, w := range ws {
		w(key, o.instance, rev)
	}
	return rev, prev, nil
}

func (o *memOwners) ApplyOwned(ctx context.Context, ops []store.Op, revs []uint64) ([]int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.applies[o.instance]++
	var lost []int
	var keep []store.Op
	for i, op := range ops {
		if revs[i] != 0 && o.revs[op.Key] != revs[i] {
			lost = append(lost, i)
			continue
		}
		keep = append(keep, op)
	}
	return lost, o.st.Apply(ctx, keep...)
}

func (o *memOwners) WatchOwners(fn func(key, instance string, rev uint64)) (func(), error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.watchers = append(o.watchers, fn)
	return func() {}, nil
}

// TestFleetOwnership: with Owners, a client that connects at B while A
// serves it is taken by B, and A lets it go: its session ends at A as taken
// over (no will), its subscriptions go at A's broker, a datagram from its
// old address gets DISCONNECT, and A writes nothing of it any more, so the
// registration made at B stays in the record.
func TestFleetOwnership(t *testing.T) {
	st := openTestStore(t)
	tbl := newOwnerTable(st)
	a := startStored(t, st, withOwners(tbl, "A"))
	b := startStored(t, st, withOwners(tbl, "B"))
	da := a.device(t)
	da.connect("dev", 60, false)
	id1 := da.register("t/up")
	da.subscribe("t/cmd", 1)

	db := b.device(t)
	db.connect("dev", 60, false)
	waitUntil(t, "A lets the client go", func() bool {
		return a.reg.Get("mqttgw_mqttsn_clients_let_go_total", "listener", "sn", "reason", "taken") == 1
	})
	waitUntil(t, "A's subscriptions of the client removed", func() bool { return slices.Contains(a.b.callList(), "unsuball dev") })
	if n := a.sessions.Ended(session.EndTakenOver); n != 1 {
		t.Errorf("sessions ended as taken over at A: %d, want 1", n)
	}
	id2 := db.register("t/b")
	da.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: id1, MsgID: 9, Data: []byte("stale")})
	recv[*mqttsn.Disconnect](da)
	tbl.mu.Lock()
	writesA := tbl.applies["A"]
	tbl.mu.Unlock()
	a.tick(time.Second) // A's timed work: nothing of the client is written
	waitUntil(t, "B's record of the client with its registration", func() bool {
		v, ok, err := st.Get(store.KindMQTTSNSession, "sn\x00dev")
		if err != nil || !ok {
			return false
		}
		r, err := decodeSessionRecord(v)
		return err == nil && slices.ContainsFunc(r.Topics, func(tp recordTopic) bool { return tp.ID == id2 && tp.Name == "t/b" })
	})
	tbl.mu.Lock()
	defer tbl.mu.Unlock()
	if tbl.applies["A"] != writesA {
		t.Errorf("A wrote %d times after letting the client go", tbl.applies["A"]-writesA)
	}
	if a.reg.Get("mqttgw_mqttsn_clients_let_go_total", "listener", "sn", "reason", "fenced") != 0 {
		t.Error("A's writes were fenced: it should not have tried")
	}
}

// TestFleetAdoptsDeadInstancesClients: a persistent client of instance A,
// which dies (its lease runs out) while the client is silent, is adopted by
// B: B takes its owner key, makes its subscription again at its broker and
// holds its session, which B's registry loses (the will goes out there) once
// 1.5 keepalives have passed since the client was last heard. A client A
// still serves, alive, is not taken.
func TestFleetAdoptsDeadInstancesClients(t *testing.T) {
	st := openTestStore(t)
	tbl := newOwnerTable(st)
	fast := func(inst string) func(*Options) {
		return func(o *Options) {
			withOwners(tbl, inst)(o)
			o.AdoptEvery = 20 * time.Millisecond
		}
	}
	a := startStored(t, st, fast("A"))
	b := startStored(t, st, fast("B"))
	da := a.device(t)
	da.connect("dev", 60, false)
	da.subscribe("t/cmd", 1)
	waitUntil(t, "A's record of the client", func() bool {
		_, ok, err := st.Get(store.KindMQTTSNSession, "sn\x00dev")
		return err == nil && ok
	})
	tbl.mu.Lock()
	before := tbl.ranges
	tbl.mu.Unlock()
	waitUntil(t, "two full passes of the adopters with A alive", func() bool {
		tbl.mu.Lock()
		defer tbl.mu.Unlock()
		return tbl.ranges >= before+2
	})
	if n := b.reg.Get("mqttgw_mqttsn_clients_adopted_total", "listener", "sn"); n != 0 {
		t.Fatalf("B adopted %v clients of a live instance", n)
	}
	tbl.mu.Lock()
	owner := tbl.owner["sn\x00dev"]
	tbl.mu.Unlock()
	if owner != "A" {
		t.Fatalf("owner %q, want A", owner)
	}

	a.Close() // A's record stays; A is gone
	tbl.kill("A")
	waitUntil(t, "B adopts the client", func() bool {
		return b.reg.Get("mqttgw_mqttsn_clients_adopted_total", "listener", "sn") == 1
	})
	waitUntil(t, "B subscribes again", func() bool { return slices.Contains(b.b.callList(), "sub t/cmd") })
	tbl.mu.Lock()
	owner = tbl.owner["sn\x00dev"]
	tbl.mu.Unlock()
	if owner != "B" {
		t.Errorf("owner after the adoption %q, want B", owner)
	}
	if lost := b.expire(30 * time.Second); len(lost) != 0 {
		t.Fatalf("B lost %d sessions before 1.5 keepalives", len(lost))
	}
	lost := b.expire(91 * time.Second)
	if len(lost) != 1 || lost[0].Key.Device != "dev" {
		t.Fatalf("B lost %v after 1.5 keepalives, want the client's session", lost)
	}
}
