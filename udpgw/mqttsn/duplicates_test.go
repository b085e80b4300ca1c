package mqttsn

import (
	"testing"
	"time"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
)

// TestNetworkDuplicatesPublishedOnce: a link that duplicates datagrams delivers
// a PUBLISH again, DUP clear, after its exchange ended. A QoS 2 copy after
// PUBCOMP is dropped unanswered, a QoS 1 copy after PUBACK is acknowledged
// again; neither reaches the broker twice. The same MsgId with another payload
// is a new message.
func TestNetworkDuplicatesPublishedOnce(t *testing.T) {
	te := startEngine(t, nil)
	d := te.device(t)
	d.connect("dup", 60, true)
	id := d.register("a")

	q2 := &mqttsn.Publish{Flags: mqttsn.Flags{QoS: 2}, TopicID: id, MsgID: 7, Data: []byte("two")}
	d.send(q2)
	recv[*mqttsn.Pubrec](d)
	d.send(&mqttsn.Pubrel{MsgID: 7})
	recv[*mqttsn.Pubcomp](d)
	d.send(q2) // the network's copy
	d.none(200 * time.Millisecond)

	q1 := &mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: id, MsgID: 8, Data: []byte("one")}
	d.send(q1)
	recv[*mqttsn.Puback](d)
	d.send(q1)
	if pa := recv[*mqttsn.Puback](d); pa.MsgID != 8 || pa.ReturnCode != mqttsn.Accepted {
		t.Fatalf("PUBACK of the copy %+v", pa)
	}
	if p := te.b.pubs(); len(p) != 2 {
		t.Fatalf("broker got %d publishes, want 2 (one each): %+v", len(p), p)
	}

	// MsgId 8 again with another payload: a new message.
	d.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: id, MsgID: 8, Data: []byte("new")})
	recv[*mqttsn.Puback](d)
	if p := te.b.pubs(); len(p) != 3 || string(p[2].Payload) != "new" {
		t.Fatalf("broker got %+v", p)
	}
	// Past the window the same message is new again (MsgIds wrap).
	te.clock.advance(te.dupWindow() + time.Second)
	d.send(q1)
	recv[*mqttsn.Puback](d)
	if p := te.b.pubs(); len(p) != 4 {
		t.Fatalf("after the window: broker got %d publishes, want 4", len(p))
	}
}

// TestDuplicatedConnectKeepsSession: a copy of the clean CONNECT that made the
// connection, from the same address, is answered with CONNACK and wipes
// nothing, so the topic ids registered since stay valid. After the window the
// same CONNECT is a new one and cleans the session.
func TestDuplicatedConnectKeepsSession(t *testing.T) {
	te := startEngine(t, nil)
	d := te.device(t)
	d.connect("twice", 60, true)
	id := d.register("a")
	d.connect("twice", 60, true) // the network's copy, right after
	d.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: id, MsgID: 1, Data: []byte("x")})
	if pa := recv[*mqttsn.Puback](d); pa.ReturnCode != mqttsn.Accepted {
		t.Fatalf("PUBACK after a duplicated CONNECT: %v (the session was wiped)", pa.ReturnCode)
	}
	// Another CONNECT (other Duration) is a real one: clean session.
	d.connect("twice", 30, true)
	d.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: id, MsgID: 2, Data: []byte("y")})
	if pa := recv[*mqttsn.Puback](d); pa.ReturnCode != mqttsn.InvalidTopicID {
		t.Fatalf("PUBACK after a new clean CONNECT: %v, want invalid topic id", pa.ReturnCode)
	}
	id = d.register("a")
	te.clock.advance(te.connectDupWindow() + time.Millisecond)
	d.connect("twice", 30, true) // same as the last, but late: a new one
	d.send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: id, MsgID: 3, Data: []byte("z")})
	if pa := recv[*mqttsn.Puback](d); pa.ReturnCode != mqttsn.InvalidTopicID {
		t.Fatalf("PUBACK after a late CONNECT: %v, want invalid topic id", pa.ReturnCode)
	}
}
