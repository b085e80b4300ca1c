package mqttsn

import (
	"slices"
	"testing"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/store"
)

// TestFleetLoadOnConnect: two engines share one State, as two instances of
// a fleet share the JetStream store. A persistent session made at A is
// continued at B by a CONNECT with CleanSession false: its topic id is valid
// (PUBACK accepted), its subscription is made again at B's broker, and B
// restored nothing at start.
func TestFleetLoadOnConnect(t *testing.T) {
	st := openTestStore(t)
	shared := func(o *Options) { o.SharedState = true }
	a := startStored(t, st, shared)
	b := startStored(t, st, shared) // before A has written anything: nothing to restore
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
