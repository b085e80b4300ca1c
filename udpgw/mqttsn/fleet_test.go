package mqttsn

import (
	"context"
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
	applies  map[string]int // ApplyOwned calls per instance
}

func newOwnerTable(st store.State) *ownerTable {
	return &ownerTable{st: st, owner: map[string]string{}, revs: map[string]uint64{}, applies: map[string]int{}}
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
