package mqttsn

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// These tests look at the device registry the engine shares with the gateway:
// the session is the one record of a client's address, sleep and will.

func (d *device) peer() session.Peer {
	a := d.c.LocalAddr().(*net.UDPAddr).AddrPort()
	return session.Peer{Addr: netip.AddrPortFrom(a.Addr().Unmap(), a.Port())}
}

func (te *testEngine) session(id string) *session.Session {
	return te.sessions.Lookup(session.Key{Listener: "sn", Device: id})
}

// TestTakeoverEndsSession: a CONNECT with the same client id from another
// address ends the old session (taken over, no will) and the client is at the
// new address; a CONNECT with another client id from the same address ends the
// first client's session too.
func TestTakeoverEndsSession(t *testing.T) {
	te := startEngine(t, nil)
	r1, r2 := te.device(t), te.device(t)
	r1.connect("twin", 60, false)
	first := te.session("twin")
	if first == nil || first.Peer() != r1.peer() || first.Keepalive() != 60*time.Second {
		t.Fatalf("session after CONNECT: %+v", first)
	}
	r2.connect("twin", 30, false)
	recv[*mqttsn.Disconnect](r1)
	s := te.session("twin")
	if s == nil || s == first || s.Peer() != r2.peer() || s.Keepalive() != 30*time.Second || first.Live() {
		t.Fatalf("session after take-over: %+v (first live %v)", s, first.Live())
	}
	if n := te.sessions.Ended(session.EndTakenOver); n != 1 {
		t.Fatalf("%d sessions taken over, want 1", n)
	}
	r1.send(&mqttsn.Pingreq{})
	recv[*mqttsn.Disconnect](r1)
	r2.send(&mqttsn.Pingreq{})
	recv[*mqttsn.Pingresp](r2)
	if te.reg.Get("mqttgw_mqttsn_takeovers_total", "listener", "sn") != 1 {
		t.Error("take-over not counted")
	}

	// Another client id from r2's address: twin's connection ends.
	r2.connect("other", 60, true)
	if te.session("twin") != nil || te.session("other") == nil {
		t.Fatal("one address, one client: twin's session should be gone")
	}
	if n := te.sessions.Ended(session.EndTakenOver); n != 2 {
		t.Fatalf("%d sessions taken over, want 2", n)
	}
}

// TestWakeMovesSession: a sleeping client is asleep in the registry with its
// sleep duration as keepalive; a PINGREQ(ClientId) from a new address moves
// the session there (NAT rebinding) and the buffered message follows it.
func TestWakeMovesSession(t *testing.T) {
	te := startEngine(t, nil)
	r := te.device(t)
	r.connect("nat", 60, false)
	sa := r.subscribe("nat/cmd", 1)
	r.send(&mqttsn.Disconnect{Duration: 10, HasDuration: true})
	recv[*mqttsn.Disconnect](r)
	s := te.session("nat")
	if s.State() != session.StateAsleep || s.Keepalive() != 10*time.Second {
		t.Fatalf("asleep: state %v keepalive %v", s.State(), s.Keepalive())
	}
	te.b.send(t, "nat", "nat/cmd", udpgw.Message{Topic: "nat/cmd", Payload: []byte("open"), QoS: 1})
	r.none(50 * time.Millisecond)

	r2 := te.device(t)
	r2.send(&mqttsn.Pingreq{ClientID: "nat"})
	p := recv[*mqttsn.Publish](r2)
	if string(p.Data) != "open" || p.TopicID != sa.TopicID {
		t.Fatalf("PUBLISH %+v", p)
	}
	if s.Peer() != r2.peer() || s.State() != session.StateActive || te.session("nat") != s {
		t.Fatalf("awake: peer %v state %v", s.Peer(), s.State())
	}
	r2.send(&mqttsn.Puback{TopicID: p.TopicID, MsgID: p.MsgID, ReturnCode: mqttsn.Accepted})
	recv[*mqttsn.Pingresp](r2)
	if s.State() != session.StateAsleep {
		t.Fatalf("after PINGRESP: state %v, want asleep", s.State())
	}
	if te.reg.Get("mqttgw_mqttsn_rebinds_total", "listener", "sn") != 1 {
		t.Error("rebind not counted")
	}
	r.none(50 * time.Millisecond)
	// CONNECT wakes fully, with the CONNECT's Duration.
	r2.connect("nat", 60, false)
	if s.State() != session.StateActive || s.Keepalive() != 60*time.Second {
		t.Fatalf("after CONNECT: state %v keepalive %v", s.State(), s.Keepalive())
	}
}

// TestWillLivesInSession: the will exchange's will goes into the session at
// CONNACK, unmapped; WILLTOPICUPD and WILLMSGUPD change it there; a will
// message before any topic is held but never published; DISCONNECT ends the
// session without it.
func TestWillLivesInSession(t *testing.T) {
	te := startEngine(t, nil)
	d := te.device(t)
	d.send(&mqttsn.Connect{Flags: mqttsn.Flags{CleanSession: true, Will: true}, Duration: 10, ClientID: "w"})
	recv[*mqttsn.WillTopicReq](d)
	d.send(&mqttsn.WillTopic{Flags: mqttsn.Flags{QoS: 1}, Topic: "status/w"})
	recv[*mqttsn.WillMsgReq](d)
	if te.session("w") != nil {
		t.Fatal("session before CONNACK")
	}
	d.send(&mqttsn.WillMsg{WillMsg: []byte("gone")})
	recv[*mqttsn.Connack](d)
	s := te.session("w")
	want := func(topic, payload string, qos byte, retain bool) {
		t.Helper()
		w := s.OwnWill()
		if w == nil || w.Topic != topic || !bytes.Equal(w.Payload, []byte(payload)) || w.QoS != qos || w.Retain != retain {
			t.Fatalf("will %+v, want %q %q QoS %d retain %v", w, topic, payload, qos, retain)
		}
	}
	want("status/w", "gone", 1, false)
	d.send(&mqttsn.WillTopicUpd{Flags: mqttsn.Flags{QoS: 2, Retain: true}, Topic: "status/new"})
	recv[*mqttsn.WillTopicResp](d)
	want("status/new", "gone", 2, true)
	d.send(&mqttsn.WillMsgUpd{WillMsg: []byte("really gone")})
	recv[*mqttsn.WillMsgResp](d)
	want("status/new", "really gone", 2, true)
	d.send(&mqttsn.WillTopicUpd{Topic: "bad/#"})
	if r := recv[*mqttsn.WillTopicResp](d); r.ReturnCode != mqttsn.NotSupported {
		t.Fatalf("WILLTOPICRESP %+v", r)
	}
	want("status/new", "really gone", 2, true)
	d.send(&mqttsn.WillTopicUpd{}) // deletes the will
	recv[*mqttsn.WillTopicResp](d)
	if w := s.OwnWill(); w != nil {
		t.Fatalf("will %+v after delete", w)
	}
	d.send(&mqttsn.WillMsgUpd{WillMsg: []byte("early")})
	recv[*mqttsn.WillMsgResp](d)
	want("", "early", 0, false)
	if w, _ := s.Will(); w != nil {
		t.Fatalf("a will without topic is due: %+v", w)
	}
	// A CONNECT again without will clears it.
	d.connect("w", 10, false)
	if te.session("w") != s || s.OwnWill() != nil {
		t.Fatalf("after CONNECT without will: same session %v, will %+v", te.session("w") == s, s.OwnWill())
	}
	d.send(&mqttsn.Disconnect{})
	recv[*mqttsn.Disconnect](d)
	if te.session("w") != nil || te.sessions.Ended(session.EndDisconnected) != 1 || te.sessions.Ended(session.EndLost) != 0 {
		t.Fatal("DISCONNECT did not end the session cleanly")
	}
}
