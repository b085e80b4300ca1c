package mqttsn

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/mqttgw/mqttgw/metrics"
	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// dtlsKeys are the PSKs of the DTLS tests (a psk_file's identity:hexkey).
var dtlsKeys = map[string][]byte{"dev1": []byte("secret-one"), "dev2": []byte("secret-two")}

// dtlsEngine is an engine serving MQTT-SN over DTLS on 127.0.0.1:0.
type dtlsEngine struct {
	*Engine
	b        *fakeBroker
	sessions *session.Registry
	reg      *metrics.Registry
	stop     func() // Close and wait for Serve
}

func startDTLSEngine(t *testing.T, tune func(*Options)) *dtlsEngine {
	t.Helper()
	te := &dtlsEngine{b: newFakeBroker(), sessions: session.New(session.Options{}), reg: metrics.New()}
	env := udpgw.Env{Name: "sns", Logger: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)), Metrics: te.reg,
		Broker: te.b, Sessions: te.sessions}
	o := Options{Bind: "127.0.0.1:0", RetryInterval: 50 * time.Millisecond, MaxRetries: 2, DrainTimeout: time.Second,
		DTLS: &DTLSOptions{
			PSK: func(id string) ([]byte, bool) {
				k, ok := dtlsKeys[id]
				return k, ok
			},
			HandshakeTimeout: 2 * time.Second,
		}}
	if tune != nil {
		tune(&o)
	}
	e, err := New(env, o)
	if err != nil {
		t.Fatal(err)
	}
	te.sessions.AddListener("sns", session.Listener{Protocol: "mqttsns", Owner: e})
	te.Engine = e
	done := make(chan error, 1)
	go func() { done <- e.Serve(context.Background()) }()
	stopped := false
	te.stop = func() {
		if stopped {
			return
		}
		stopped = true
		e.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after Close")
		}
	}
	t.Cleanup(te.stop)
	return te
}

func (te *dtlsEngine) handshakes(result string) float64 {
	return te.reg.Get("mqttgw_mqttsn_dtls_handshakes_total", "listener", "sns", "result", result)
}

// dialDTLS makes a DTLS 1.2 PSK client connection to addr, handshake done.
func dialDTLS(t *testing.T, addr, identity string, key []byte) (*piondtls.Conn, error) {
	return dialDTLSWithin(t, 5*time.Second, addr, identity, key)
}

func dialDTLSWithin(t *testing.T, bound time.Duration, addr, identity string, key []byte) (*piondtls.Conn, error) {
	t.Helper()
	ra, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := piondtls.DialWithOptions("udp", ra,
		piondtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		piondtls.WithPSKIdentityHint([]byte(identity)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
		piondtls.WithFlightInterval(100*time.Millisecond),
	)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// TestDTLSPublishAsIdentity: a client that proved its PSK identity connects
// with that identity as its client id, publishes (the broker gets it), and
// its session's user is the identity. A client id other than the identity is
// refused with CONNACK "not supported", and so is a PINGREQ waking another
// client; a wrong key fails the handshake. Close leaves no goroutine behind:
// neither the engine's nor pion's.
func TestDTLSPublishAsIdentity(t *testing.T) {
	before := runtime.NumGoroutine()
	var mu sync.Mutex
	var refused []string
	te := startDTLSEngine(t, func(o *Options) {
		o.DTLS.Refused = func(from netip.AddrPort, identity, reason string) {
			mu.Lock()
			refused = append(refused, identity+": "+reason)
			mu.Unlock()
		}
	})
	addr := te.Addr().String()

	conn, err := dialDTLS(t, addr, "dev1", dtlsKeys["dev1"])
	if err != nil {
		t.Fatal(err)
	}
	c := mqttsn.DialConn(conn, mqttsn.ClientOptions{ClientID: "dev1", RetryInterval: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, "d/dev1/t", 1, false, []byte("21.5")); err != nil {
		t.Fatal(err)
	}
	if p := te.b.pubs(); len(p) != 1 || p[0].Topic != "d/dev1/t" || !bytes.Equal(p[0].Payload, []byte("21.5")) {
		t.Fatalf("published %+v", p)
	}
	if s := te.sessions.Lookup(session.Key{Listener: "sns", Device: "dev1"}); s == nil || s.User() != "dev1" {
		t.Fatalf("session %+v: want user dev1 (the PSK identity)", s)
	}

	// dev2's key, but CONNECT as dev1: refused, dev1 keeps its session.
	conn2, err := dialDTLS(t, addr, "dev2", dtlsKeys["dev2"])
	if err != nil {
		t.Fatal(err)
	}
	c2 := mqttsn.DialConn(conn2, mqttsn.ClientOptions{ClientID: "dev1", RetryInterval: 200 * time.Millisecond})
	if err := c2.Connect(ctx); !errors.Is(err, mqttsn.NotSupported) {
		t.Fatalf("CONNECT as another identity: %v, want rejected: not supported", err)
	}
	if v := te.reg.Get("mqttgw_mqttsn_refused_total", "listener", "sns", "reason", "psk_identity"); v != 1 {
		t.Errorf("refused psk_identity = %v, want 1", v)
	}
	// Nor may it wake dev1 (which would move dev1's session to it).
	b, _ := mqttsn.Append(nil, &mqttsn.Pingreq{ClientID: "dev1"})
	if _, err := conn2.Write(b); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the PINGREQ dropped", func() bool { return te.dropped("identity_mismatch") == 1 })
	if err := c.Publish(ctx, "d/dev1/t", 1, false, []byte("still mine")); err != nil {
		t.Fatalf("dev1 after the impostor: %v", err)
	}

	// A wrong key or an unknown identity fails the handshake, counted.
	// The client gives up soon after the engine's HandshakeTimeout: pion drops
	// its Finished, which it cannot decrypt, so it never hears a refusal.
	if _, err := dialDTLSWithin(t, 2500*time.Millisecond, addr, "dev1", []byte("guess")); err == nil {
		t.Fatal("handshake with a wrong key succeeded")
	}
	waitUntil(t, "the failed handshake counted", func() bool { return te.handshakes("failed") == 1 })
	if _, err := dialDTLS(t, addr, "dev9", []byte("secret-one")); err == nil {
		t.Fatal("handshake with an unknown identity succeeded")
	}
	waitUntil(t, "the failed handshake counted", func() bool { return te.handshakes("failed") == 2 })
	mu.Lock()
	got := strings.Join(refused, "; ")
	mu.Unlock()
	if want := "dev2: client id is not the PSK identity; dev1: wrong PSK key (no valid Finished); dev9: unknown PSK identity"; got != want {
		t.Errorf("refused:\n got %s\nwant %s", got, want)
	}
	if v := te.handshakes("ok"); v != 2 {
		t.Errorf("handshakes ok = %v, want 2", v)
	}

	te.stop()
	c.Close()
	c2.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after Close:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (te *dtlsEngine) dropped(reason string) float64 {
	return te.reg.Get("mqttgw_mqttsn_dropped_total", "listener", "sns", "reason", reason)
}

// TestDTLSIdleConnectionClosed: a connection that never CONNECTs is closed
// after IdleCheck (the client reads close_notify); one whose client is
// connected stays.
func TestDTLSIdleConnectionClosed(t *testing.T) {
	te := startDTLSEngine(t, func(o *Options) { o.DTLS.IdleCheck = 100 * time.Millisecond })
	addr := te.Addr().String()
	idle, err := dialDTLS(t, addr, "dev2", dtlsKeys["dev2"])
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	conn, err := dialDTLS(t, addr, "dev1", dtlsKeys["dev1"])
	if err != nil {
		t.Fatal(err)
	}
	c := mqttsn.DialConn(conn, mqttsn.ClientOptions{ClientID: "dev1", RetryInterval: 200 * time.Millisecond})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Read(make([]byte, 100)); err == nil {
		t.Fatal("the idle connection carried data")
	}
	waitUntil(t, "one connection left", func() bool {
		return te.reg.Get("mqttgw_mqttsn_dtls_connections", "listener", "sns") == 1
	})
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("the connected client after idle checks: %v", err)
	}
}

// TestDTLSMaxHandshakes: with one handshake slot taken by a ClientHello that
// never completes its cookie exchange, a second client is dropped (counted
// busy) until the first times out; its retransmitted ClientHello then gets
// through.
func TestDTLSMaxHandshakes(t *testing.T) {
	te := startDTLSEngine(t, func(o *Options) {
		o.DTLS.MaxHandshakes = 1
		o.DTLS.HandshakeTimeout = 500 * time.Millisecond
	})
	hello := clientHello(t)
	stuck, err := net.Dial("udp", te.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	if _, err := stuck.Write(hello); err != nil {
		t.Fatal(err)
	}
	// Its HelloVerifyRequest says it holds the slot.
	_ = stuck.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := stuck.Read(make([]byte, 1500)); err != nil {
		t.Fatal(err)
	}
	conn, err := dialDTLS(t, te.Addr().String(), "dev1", dtlsKeys["dev1"])
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if v := te.handshakes("busy"); v < 1 {
		t.Errorf("busy = %v, want at least 1", v)
	}
	if v := te.handshakes("failed"); v != 1 {
		t.Errorf("failed = %v, want 1 (the stuck one timed out)", v)
	}
}

// clientHello returns the first datagram a pion DTLS client sends: a
// ClientHello without cookie (RFC 6347 §4.2.1).
func clientHello(t testing.TB) []byte {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	cc, err := piondtls.DialWithOptions("udp", pc.LocalAddr().(*net.UDPAddr),
		piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte("k"), nil }),
		piondtls.WithPSKIdentityHint([]byte("dev1")),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
	)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = cc.HandshakeContext(ctx) }()
	defer func() { cancel(); cc.Close() }()
	_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// TestDTLSNewClose: an engine closed without serving releases its DTLS
// listener and every goroutine pion started; ADVERTISE over DTLS is refused.
func TestDTLSNewClose(t *testing.T) {
	before := runtime.NumGoroutine()
	psk := func(string) ([]byte, bool) { return nil, false }
	env := udpgw.Env{Name: "sns", Broker: newFakeBroker()}
	e, err := New(env, Options{Bind: "127.0.0.1:0", DTLS: &DTLSOptions{PSK: psk}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "pion's goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
	if _, err := New(env, Options{Bind: "127.0.0.1:0", AdvertiseInterval: time.Minute, AdvertiseAddr: "255.255.255.255:1884",
		DTLS: &DTLSOptions{PSK: psk}}); err == nil {
		t.Fatal("ADVERTISE over DTLS accepted")
	}
}

// dialDTLSFrom is dialDTLS from a given local address.
func dialDTLSFrom(t *testing.T, local *net.UDPAddr, addr, identity string, key []byte) *piondtls.Conn {
	t.Helper()
	pc, err := net.ListenUDP("udp", local)
	if err != nil {
		t.Fatal(err)
	}
	ra, _ := net.ResolveUDPAddr("udp", addr)
	c, err := piondtls.ClientWithOptions(pc, ra,
		piondtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		piondtls.WithPSKIdentityHint([]byte(identity)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
		piondtls.WithFlightInterval(100*time.Millisecond),
	)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestDTLSAddressReusedByAnotherIdentity: a peer is known by the address of
// its handshake. When dev1's connection has ended (its session still live)
// and dev2 handshakes from the same address, dev2's datagrams do not act for
// dev1: its PUBLISH with dev1's topic id is answered with DISCONNECT, and
// nothing reaches the broker.
func TestDTLSAddressReusedByAnotherIdentity(t *testing.T) {
	te := startDTLSEngine(t, nil)
	addr := te.Addr().String()
	local := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	a := dialDTLSFrom(t, local, addr, "dev1", dtlsKeys["dev1"])
	local = a.LocalAddr().(*net.UDPAddr)
	ca := mqttsn.DialConn(a, mqttsn.ClientOptions{ClientID: "dev1", RetryInterval: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ca.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	id, err := ca.Register(ctx, "d/dev1/t")
	if err != nil {
		t.Fatal(err)
	}
	ca.Close() // close_notify: the gateway closes its side; dev1's session stays
	waitUntil(t, "dev1's connection gone", func() bool {
		return te.reg.Get("mqttgw_mqttsn_dtls_connections", "listener", "sns") == 0
	})

	b := dialDTLSFrom(t, local, addr, "dev2", dtlsKeys["dev2"])
	defer b.Close()
	pub, _ := mqttsn.Append(nil, &mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: id, MsgID: 1, Data: []byte("forged")})
	if _, err := b.Write(pub); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := mqttsn.Decode(buf[:n]); err != nil || m.Type() != mqttsn.MsgDisconnect {
		t.Fatalf("answer %v %v, want DISCONNECT", m, err)
	}
	if p := te.b.pubs(); len(p) != 0 {
		t.Fatalf("published %+v", p)
	}
}
