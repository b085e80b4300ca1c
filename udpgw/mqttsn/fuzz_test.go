package mqttsn

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

var (
	fuzzOnce     sync.Once
	fuzzEngine   *Engine
	fuzzSessions *session.Registry
	fuzzReader   = new(reader) // one reader for every input, as the UDP transport's
)

// FuzzHandle feeds arbitrary datagrams, from three addresses, into one engine
// (whose state accumulates across inputs) through one reader, as the UDP
// transport does (its Decoder reuses its messages from input to input), then
// runs its Tick and the registry's expiry: it must never panic. Seeds are the
// flows the gateway tests use, so the fuzzer starts from connected clients.
func FuzzHandle(f *testing.F) {
	seed := func(ms ...mqttsn.Message) {
		for _, m := range ms {
			b, err := mqttsn.Append(nil, m)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b, uint8(0))
		}
	}
	seed(
		&mqttsn.Connect{Flags: mqttsn.Flags{CleanSession: true}, Duration: 30, ClientID: "fz"}, // connect, clean
		&mqttsn.Connect{Flags: mqttsn.Flags{Will: true}, Duration: 30, ClientID: "fw"},         // will exchange
		&mqttsn.WillTopic{Flags: mqttsn.Flags{QoS: 1}, Topic: "w"},                             // its topic
		&mqttsn.WillMsg{WillMsg: []byte("bye")},                                                // its message
		&mqttsn.Register{MsgID: 1, TopicName: "a/b"},                                           // REGISTER
		&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 2}, TopicID: 1, MsgID: 2, Data: []byte("x")},  // QoS 2
		&mqttsn.Pubrel{MsgID: 2}, // its release
		&mqttsn.Subscribe{Flags: mqttsn.Flags{QoS: 1}, MsgID: 3, TopicName: "a/#"},                                     // wildcard
		&mqttsn.Disconnect{Duration: 10, HasDuration: true},                                                            // sleep
		&mqttsn.Pingreq{ClientID: "fz"},                                                                                // wake
		&mqttsn.Publish{Flags: mqttsn.Flags{QoS: mqttsn.QoSMinusOne, TopicIDType: mqttsn.TopicShort}, TopicID: 0x6162}, // QoS -1
		&mqttsn.Encapsulated{WirelessNodeID: []byte{1}, Inner: &mqttsn.Pingreq{}},                                      // forwarded
		&mqttsn.Regack{TopicID: 1, MsgID: 1},                                                                           // stray REGACK
	)
	f.Add([]byte{0x01, 0x00, 0x05, 0x16, 'x'}, uint8(1)) // long form, length too small
	f.Fuzz(func(t *testing.T, b []byte, from uint8) {
		fuzzOnce.Do(func() {
			fuzzSessions = session.New(session.Options{})
			var err error
			fuzzEngine, err = New(udpgw.Env{Name: "fz", Broker: newFakeBroker(), Sessions: fuzzSessions},
				Options{Bind: "127.0.0.1:0", MaxClients: 50, MaxTopics: 20, MaxBuffered: 5, MaxClientOps: 4,
					Predefined: []Predefined{{ID: 1, Topic: "p/1"}, {ID: 2, Topic: "p/2", ClientID: "fz"}}})
			if err != nil {
				t.Fatal(err)
			}
			fuzzSessions.AddListener("fz", session.Listener{Protocol: "mqttsn", Owner: fuzzEngine})
		})
		// Peers on the discard port: answers go nowhere.
		p := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 9)
		if from%3 == 1 {
			p = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 2}), 9)
		} else if from%3 == 2 {
			p = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 3}), 9)
		}
		fuzzReader.datagram(fuzzEngine, p, b)
		now := time.Now()
		later := now.Add(time.Duration(from) * time.Second)
		fuzzEngine.Tick(later)
		fuzzSessions.Expire(later, nil) // up to 255s: keepalives of 30s expire, SessionEnded runs
		fuzzEngine.deliver("fz", "a/#", udpgw.Message{Topic: "a/c", Payload: b, QoS: from % 3})
	})
}
