package gateway

import (
	"net"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/mqttsn"
)

// TestMQTTSNLimits: each configured limit refuses clearly and counts.
func TestMQTTSNLimits(t *testing.T) {
	env := startSN(t, snOpts{listener: "max_packet = 200", mqttsn: `
max_clients = 2
max_topics = 2
max_buffered = 2
max_keepalive = "60s"
`})
	refused := func(reason string) float64 {
		return env.metric("mqttgw_mqttsn_refused_total", "listener", "sn", "reason", reason)
	}
	t.Run("max_keepalive", func(t *testing.T) {
		c := env.device(t, mqttsn.ClientOptions{ClientID: "lazy", Keepalive: 61 * time.Second})
		if err := c.Connect(snCtx(t)); !snIsCode(err, mqttsn.NotSupported) {
			t.Fatalf("CONNECT with Duration 61s: %v, want not supported", err)
		}
		if refused("keepalive") != 1 {
			t.Error("not counted")
		}
	})
	t.Run("client_id", func(t *testing.T) {
		c := env.device(t, mqttsn.ClientOptions{ClientID: "a-client-id-of-24-octets"})
		if err := c.Connect(snCtx(t)); !snIsCode(err, mqttsn.NotSupported) {
			t.Fatalf("CONNECT with a 24-octet client id: %v, want not supported", err)
		}
	})
	var first *mqttsn.Client
	top := t // clients that outlive a subtest
	t.Run("max_clients", func(t *testing.T) {
		first = env.connect(top, mqttsn.ClientOptions{ClientID: "one", CleanSession: true})
		env.connect(top, mqttsn.ClientOptions{ClientID: "two", CleanSession: true})
		// A client whose address never proved it receives is evicted to make
		// room; these two answer the gateway's probe REGISTER (sent once they
		// have been connected for unproven_ttl/2) and are proven.
		waitFor(t, 15*time.Second, "one and two proven", func() bool {
			return env.metric("mqttgw_mqttsn_address_proofs_total", "listener", "sn", "kind", "probe") == 2
		})
		c := env.device(t, mqttsn.ClientOptions{ClientID: "three"})
		if err := c.Connect(snCtx(t)); !snIsCode(err, mqttsn.Congestion) {
			t.Fatalf("third client: %v, want congestion", err)
		}
		// A known client id may always reconnect.
		if err := first.Connect(snCtx(t)); err != nil {
			t.Fatalf("reconnect of a known client: %v", err)
		}
		if refused("max_clients") != 1 {
			t.Error("not counted")
		}
	})
	t.Run("max_topics", func(t *testing.T) {
		for _, tp := range []string{"t/1", "t/2", "t/1"} {
			if _, err := first.Register(snCtx(t), tp); err != nil {
				t.Fatalf("register %s: %v", tp, err)
			}
		}
		if _, err := first.Register(snCtx(t), "t/3"); !snIsCode(err, mqttsn.NotSupported) {
			t.Fatalf("third topic: %v, want not supported (0x03)", err)
		}
		if _, _, err := first.Subscribe(snCtx(t), "t/4", 0); !snIsCode(err, mqttsn.NotSupported) {
			t.Fatalf("subscribe needing a third id: %v, want not supported", err)
		}
		if _, id, err := first.Subscribe(snCtx(t), "t/#", 0); err != nil || id != 0 {
			t.Fatalf("a wildcard needs no id: %v", err)
		}
		if refused("topic_limit") != 2 {
			t.Errorf("topic_limit = %v", refused("topic_limit"))
		}
	})
	t.Run("max_packet", func(t *testing.T) {
		r := env.raw(t)
		big := make([]byte, 300)
		big[0], big[1], big[2], big[3] = 0x01, 0x01, 0x2c, 0x16 // a long-form PINGREQ of 300 octets
		r.sendBytes(big)
		r.none(200 * time.Millisecond)
		if env.dropped("too_large") != 1 || env.metric("mqttgw_datagrams_dropped_total", "listener", "sn", "reason", "too_large") != 1 {
			t.Error("oversize datagram not counted")
		}
	})
	t.Run("max_buffered", func(t *testing.T) {
		in := newSNInbox()
		c := env.device(t, mqttsn.ClientOptions{ClientID: "two", OnMessage: in.on})
		if err := c.Connect(snCtx(t)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Subscribe(snCtx(t), "buf", 1); err != nil {
			t.Fatal(err)
		}
		if err := c.Sleep(snCtx(t), 30*time.Second); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"1", "2", "3", "4"} {
			env.pub(t, "buf", p, 1, false)
		}
		waitFor(t, 5*time.Second, "two drops", func() bool { return env.dropped("buffer_full") == 2 })
		if err := c.Wake(snCtx(t)); err != nil {
			t.Fatal(err)
		}
		ms := in.list()
		if len(ms) != 2 || ms[0].payload != "3" || ms[1].payload != "4" {
			t.Fatalf("woke to %+v, want the 2 newest", ms)
		}
		// A broker message longer than max_packet cannot go down: dropped, counted.
		if err := c.Connect(snCtx(t)); err != nil {
			t.Fatal(err)
		}
		env.pub(t, "buf", string(make([]byte, 300)), 1, false)
		waitFor(t, 5*time.Second, "the large message dropped", func() bool { return env.dropped("downlink_too_large") == 1 })
	})
}

// TestMQTTSNSearchGWAndAdvertise: SEARCHGW is answered with GWINFO; ADVERTISE
// goes to advertise_addr every advertise_interval.
func TestMQTTSNSearchGWAndAdvertise(t *testing.T) {
	adv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer adv.Close()
	env := startSN(t, snOpts{mqttsn: `gateway_id = 42
advertise_interval = "1s"
advertise_addr = "` + adv.LocalAddr().String() + `"`})
	r := env.raw(t)
	r.send(&mqttsn.SearchGW{Radius: 1})
	if gi := snExpect[*mqttsn.GWInfo](r); gi.GwID != 42 || gi.GwAdd != nil {
		t.Fatalf("GWINFO %+v", gi)
	}
	buf := make([]byte, 64)
	for i := range 2 {
		_ = adv.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := adv.Read(buf)
		if err != nil {
			t.Fatalf("ADVERTISE %d: %v", i, err)
		}
		m, err := mqttsn.Decode(buf[:n])
		if a, ok := m.(*mqttsn.Advertise); err != nil || !ok || a.GwID != 42 || a.Duration != 1 {
			t.Fatalf("ADVERTISE %d: %+v %v", i, m, err)
		}
	}
}
