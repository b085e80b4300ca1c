package gateway

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/options"

	"github.com/mqttgw/mqttgw/mqttsn"
)

// udpRelay stands between one client and a gateway listener like a NAT: the
// client sends to relay.addr(); the relay sends on to the server from its
// outbound socket and brings the answers back. rebind replaces the outbound
// socket, so that the client's datagrams reach the server from a new source
// port (NAT rebinding). It records every datagram, in order.
type udpRelay struct {
	t      *testing.T
	in     *net.UDPConn // the client's side
	server *net.UDPAddr
	wg     sync.WaitGroup

	mu     sync.Mutex // guards the fields below
	out    *net.UDPConn
	client *net.UDPAddr
	log    []relayed
	closed bool
}

// relayed is one datagram the relay passed: up (client → server) or down.
type relayed struct {
	up bool
	b  []byte
}

func startRelay(t *testing.T, server string) *udpRelay {
	t.Helper()
	sa, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	in, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &udpRelay{t: t, in: in, server: sa}
	r.rebind()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, from, err := in.ReadFromUDP(buf)
			if err != nil {
				return
			}
			b := bytes.Clone(buf[:n])
			r.mu.Lock()
			r.client = from
			r.log = append(r.log, relayed{up: true, b: b})
			out := r.out
			r.mu.Unlock()
			_, _ = out.WriteToUDP(b, sa)
		}
	}()
	t.Cleanup(r.close)
	return r
}

func (r *udpRelay) addr() string { return r.in.LocalAddr().String() }

// rebind moves the relay's outbound side to a new socket (a new source port)
// and closes the old one: what a NAT does when its mapping expires.
func (r *udpRelay) rebind() {
	r.t.Helper()
	out, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	old := r.out
	r.out = out
	r.mu.Unlock()
	if old != nil {
		old.Close()
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, err := out.Read(buf)
			if err != nil {
				return
			}
			b := bytes.Clone(buf[:n])
			r.mu.Lock()
			r.log = append(r.log, relayed{b: b})
			client := r.client
			r.mu.Unlock()
			if client != nil {
				_, _ = r.in.WriteToUDP(b, client)
			}
		}
	}()
}

// outPort is the relay's current source port towards the server.
func (r *udpRelay) outPort() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.LocalAddr().(*net.UDPAddr).Port
}

func (r *udpRelay) datagrams() []relayed {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]relayed(nil), r.log...)
}

// clientHellos counts the DTLS ClientHello records the client sent: a record
// of type handshake (22) whose message is a ClientHello (1). RFC 6347 §4.1,
// §4.2.2. A handshake has two (the second with the cookie).
func (r *udpRelay) clientHellos() int {
	n := 0
	for _, d := range r.datagrams() {
		if d.up && len(d.b) > 13 && d.b[0] == 22 && d.b[13] == 1 {
			n++
		}
	}
	return n
}

func (r *udpRelay) close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	out := r.out
	r.mu.Unlock()
	r.in.Close()
	out.Close()
	r.wg.Wait()
}

// TestMQTTSNSConnectionID: an MQTT-SN client over DTLS that sends the
// gateway's connection id (RFC 9146) keeps its DTLS session and its MQTT-SN
// session when its datagrams start coming from a new source port (a NAT
// rebinding between it and the gateway): no new handshake, no new CONNECT,
// and its publishes still reach Mosquitto, acknowledged at its new address
// (RFC 9146 §6).
func TestMQTTSNSConnectionID(t *testing.T) {
	env := startSNS(t, "")
	sub := env.reader(t, 1, "sns/#")
	relay := startRelay(t, env.addr)
	conn, err := dialSNSWith(t, relay.addr(), "node7", snsKeys["node7"], 5*time.Second,
		piondtls.WithConnectionIDGenerator(piondtls.OnlySendCIDGenerator()))
	if err != nil {
		t.Fatal(err)
	}
	c := snsClient(t, conn, "node7")
	ctx := snCtx(t)
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, "sns/node7/t", 1, false, []byte("before")); err != nil {
		t.Fatal(err)
	}
	sub.Expect(t, 5*time.Second, "sns/node7/t", "before")
	hellos, port := relay.clientHellos(), relay.outPort()

	relay.rebind()
	if relay.outPort() == port {
		t.Fatal("the relay kept its source port")
	}
	if err := c.Publish(ctx, "sns/node7/t", 1, false, []byte("after")); err != nil {
		t.Fatalf("publish after the rebinding: %v", err)
	}
	sub.Expect(t, 5*time.Second, "sns/node7/t", "after")
	if n := relay.clientHellos(); n != hellos {
		t.Errorf("%d ClientHellos after the rebinding, %d before: a new handshake", n, hellos)
	}
	if v := env.metric("mqttgw_mqttsn_dtls_handshakes_total", "listener", "sns", "result", "ok"); v != 1 {
		t.Errorf("handshakes = %v, want 1", v)
	}
	for _, name := range []string{"mqttgw_mqttsn_takeovers_total", "mqttgw_mqttsn_rebinds_total"} {
		if v := env.metric(name, "listener", "sns"); v != 0 {
			t.Errorf("%s = %v, want 0: the session stayed where it was", name, v)
		}
	}
	if v := env.metric("mqttgw_mqttsn_messages_total", "listener", "sns", "direction", "in", "type", "CONNECT"); v != 1 {
		t.Errorf("CONNECTs = %v, want 1", v)
	}
}

// TestCoAPSConnectionID: a coaps client (go-coap's, with pion) that sends the
// gateway's connection id keeps its DTLS session across a NAT rebinding: its
// POST after the rebinding is answered (2.04, at its new address) without a
// new handshake and reaches Mosquitto.
func TestCoAPSConnectionID(t *testing.T) {
	env := startCoAP(t, coapOpts{dtls: true})
	sub := env.reader(t, "secure/#")
	relay := startRelay(t, env.daddr)
	key := []byte(coapPSKKey)
	cc, err := dtls.Dial(relay.addr(), dtls.NewDTLSClientOptions(
		piondtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		piondtls.WithPSKIdentityHint([]byte(coapPSKIdentity)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
		piondtls.WithConnectionIDGenerator(piondtls.OnlySendCIDGenerator()),
	), options.WithErrors(func(error) {}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	post := func(payload string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := cc.Post(ctx, "/ps/secure/t", message.TextPlain, bytes.NewReader([]byte(payload)))
		if err != nil {
			t.Fatalf("POST %s: %v", payload, err)
		}
		defer cc.ReleaseMessage(resp)
		if resp.Code() != codes.Changed {
			t.Fatalf("POST %s: %v, want 2.04", payload, resp.Code())
		}
	}
	post("before")
	sub.Expect(t, 5*time.Second, "secure/t", "before")
	hellos, port := relay.clientHellos(), relay.outPort()

	relay.rebind()
	if relay.outPort() == port {
		t.Fatal("the relay kept its source port")
	}
	post("after")
	sub.Expect(t, 5*time.Second, "secure/t", "after")
	if n := relay.clientHellos(); n != hellos {
		t.Errorf("%d ClientHellos after the rebinding, %d before: a new handshake", n, hellos)
	}
	if v := env.metric("mqttgw_coap_dtls_handshakes_total", "listener", "coaps"); v != 1 {
		t.Errorf("handshakes = %v, want 1", v)
	}
	if v := env.metric("mqttgw_coap_dtls_handshake_failures_total", "listener", "coaps"); v != 0 {
		t.Errorf("handshake failures = %v, want 0", v)
	}
}

// snsClient runs an MQTT-SN client over an established DTLS connection,
// closed by t.Cleanup.
func snsClient(t *testing.T, conn net.Conn, clientID string) *mqttsn.Client {
	t.Helper()
	c := mqttsn.DialConn(conn, mqttsn.ClientOptions{ClientID: clientID, RetryInterval: 300 * time.Millisecond, MaxRetries: 5})
	t.Cleanup(func() { c.Close() })
	return c
}
