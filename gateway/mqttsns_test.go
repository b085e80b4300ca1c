package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"

	"github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/session"
)

// TestACLMQTTSNRegister: a REGISTER of a topic the ACL does not let the client
// write is answered REGACK "rejected: not supported" (0x03) without a topic id
// (MQTT-SN 1.2 §5.4.11, §6.5), and counted as a write denial; a topic it may
// write is registered.
func TestACLMQTTSNRegister(t *testing.T) {
	env := startSN(t, snOpts{top: fmt.Sprintf("[auth]\nacl_file = %q\n", aclFile(t))})
	r := env.raw(t)
	r.connect("sn1", 60, true)
	r.send(&mqttsn.Register{MsgID: 7, TopicName: "d/other/x"})
	ra := snExpect[*mqttsn.Regack](r)
	if ra.ReturnCode != mqttsn.NotSupported || ra.TopicID != 0 || ra.MsgID != 7 {
		t.Fatalf("REGACK %+v, want MsgId 7, no topic id, rejected: not supported", ra)
	}
	if v := env.metric("mqttgw_acl_denied_total", "listener", "sn", "access", "write"); v != 1 {
		t.Errorf("write denials %v, want 1", v)
	}
	if v := env.metric("mqttgw_mqttsn_refused_total", "listener", "sn", "reason", "forbidden"); v != 1 {
		t.Errorf("refused forbidden %v, want 1", v)
	}
	r.send(&mqttsn.Register{MsgID: 8, TopicName: "d/sn1/x"})
	if ra := snExpect[*mqttsn.Regack](r); ra.ReturnCode != mqttsn.Accepted || ra.TopicID == 0 {
		t.Fatalf("REGACK of an allowed topic %+v", ra)
	}
}

// snsKeys are the PSKs of the mqttsns tests, written to the psk_file as
// Mosquitto writes it: identity:hexkey.
var snsKeys = map[string][]byte{"node7": []byte("secret7"), "node8": []byte("secret8")}

// startSNS starts Mosquitto and a gateway with one mqttsns listener "sns"
// (keys snsKeys, handshake_timeout 1s); extra goes in [auth].
func startSNS(t *testing.T, extra string) *snEnv {
	t.Helper()
	b := startMosquitto(t, false)
	psk := filepath.Join(t.TempDir(), "psk")
	text := "# mqttsns test devices\n"
	for id, k := range snsKeys {
		text += fmt.Sprintf("%s:%x\n", id, k)
	}
	writeFile(t, psk, text)
	g := startGateway(t, upstreamTOML(b)+fmt.Sprintf(`
[auth]
psk_file = %q
%s
[[listener]]
name = "sns"
type = "mqttsns"
bind = "127.0.0.1:0"
[listener.mqttsn]
retry_interval = "200ms"
handshake_timeout = "1s"
`, psk, extra))
	return &snEnv{b: b, g: g, addr: g.ListenerAddr("sns").String()}
}

// dialSNS makes a DTLS 1.2 PSK connection to addr, its handshake done within
// bound.
func dialSNS(t *testing.T, addr, identity string, key []byte, bound time.Duration) (*piondtls.Conn, error) {
	t.Helper()
	return dialSNSWith(t, addr, identity, key, bound)
}

func dialSNSWith(t *testing.T, addr, identity string, key []byte, bound time.Duration, extra ...piondtls.ClientOption) (*piondtls.Conn, error) {
	t.Helper()
	ra, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	opts := append([]piondtls.ClientOption{
		piondtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		piondtls.WithPSKIdentityHint([]byte(identity)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
		piondtls.WithFlightInterval(200 * time.Millisecond),
	}, extra...)
	c, err := piondtls.DialWithOptions("udp", ra, opts...)
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

// TestMQTTSNSPublish: over an mqttsns listener the right key publishes (a
// Mosquitto subscriber receives it), with the PSK identity as the device's
// user for the ACL (a `user` block grants the topic); a wrong key and an
// unknown identity fail the handshake, publish nothing and are counted; a
// CONNECT whose client id is not the PSK identity is refused with CONNACK
// "not supported".
func TestMQTTSNSPublish(t *testing.T) {
	acl := filepath.Join(t.TempDir(), "acl")
	writeFile(t, acl, "user node7\ntopic write sns/mine/#\n\npattern write sns/%c/#\n")
	env := startSNS(t, fmt.Sprintf("acl_file = %q", acl))
	sub := env.reader(t, 1, "sns/#")

	conn, err := dialSNS(t, env.addr, "node7", snsKeys["node7"], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := snsClient(t, conn, "node7")
	ctx := snCtx(t)
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, "sns/node7/t", 1, false, []byte("sealed")); err != nil {
		t.Fatal(err)
	}
	sub.Expect(t, 5*time.Second, "sns/node7/t", "sealed")
	if err := c.Publish(ctx, "sns/mine/t", 1, false, []byte("as user node7")); err != nil {
		t.Fatalf("publish granted to user node7: %v", err)
	}
	sub.Expect(t, 5*time.Second, "sns/mine/t", "as user node7")
	if s := env.g.sessions.Lookup(session.Key{Listener: "sns", Device: "node7"}); s == nil || s.User() != "node7" || s.Protocol != "mqttsns" {
		t.Fatalf("session %+v: want protocol mqttsns, user node7", s)
	}

	// Refused handshakes: the client gives up soon after the gateway's 1s
	// handshake_timeout (a wrong key shows as a Finished pion cannot decrypt).
	if _, err := dialSNS(t, env.addr, "node7", []byte("guessed"), 2*time.Second); err == nil {
		t.Fatal("handshake with a wrong key succeeded")
	}
	if _, err := dialSNS(t, env.addr, "intruder", snsKeys["node7"], 2*time.Second); err == nil {
		t.Fatal("handshake with an unknown identity succeeded")
	}
	reasons := []string{"wrong PSK key (no valid Finished)", "unknown PSK identity"}
	// The handshake's end and its refusal are counted by different
	// goroutines: wait for both counts before reading either.
	waitFor(t, 10*time.Second, "two failed handshakes and two refusals counted", func() bool {
		refused := 0.0
		for _, reason := range reasons {
			refused += env.metric("mqttgw_auth_failures_total", "listener", "sns", "reason", reason)
		}
		return env.metric("mqttgw_mqttsn_dtls_handshakes_total", "listener", "sns", "result", "failed") == 2 && refused >= 2
	})
	for _, reason := range reasons {
		if v := env.metric("mqttgw_auth_failures_total", "listener", "sns", "reason", reason); v != 1 {
			t.Errorf("auth failures %q = %v, want 1", reason, v)
		}
	}

	// node8's key, CONNECT as node7: refused; node7 is still connected.
	conn8, err := dialSNS(t, env.addr, "node8", snsKeys["node8"], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c8 := snsClient(t, conn8, "node7")
	if err := c8.Connect(ctx); !errors.Is(err, mqttsn.NotSupported) {
		t.Fatalf("CONNECT with another client id than the PSK identity: %v, want rejected: not supported", err)
	}
	if v := env.metric("mqttgw_mqttsn_refused_total", "listener", "sns", "reason", "psk_identity"); v != 1 {
		t.Errorf("refused psk_identity = %v, want 1", v)
	}
	if v := env.metric("mqttgw_auth_failures_total", "listener", "sns", "reason", "client id is not the PSK identity"); v != 1 {
		t.Errorf("auth failures (client id) = %v, want 1", v)
	}
	if err := c.Publish(ctx, "sns/node7/t", 1, false, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	sub.Expect(t, 5*time.Second, "sns/node7/t", "still here")
	sub.None(t, 300*time.Millisecond)
	if v := env.metric("mqttgw_mqttsn_dtls_handshakes_total", "listener", "sns", "result", "ok"); v != 2 {
		t.Errorf("handshakes ok = %v, want 2", v)
	}
}

// TestMQTTSNSNoAmplification: before a client proves it receives at its
// source address, the gateway sends nothing larger than what it received: its
// only answer to a ClientHello without cookie is one HelloVerifyRequest
// carrying a cookie, no larger than the ClientHello (RFC 6347 §4.2.1). A
// counting relay between client and gateway sees every datagram.
func TestMQTTSNSNoAmplification(t *testing.T) {
	env := startSNS(t, "")
	relay := startRelay(t, env.addr)
	conn, err := dialSNS(t, relay.addr(), "node7", snsKeys["node7"], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	// Record header: type(1) version(2) epoch(2) sequence(6) length(2);
	// handshake header: type(1) length(3) message_seq(2) fragment_offset(3)
	// fragment_length(3); then the message (RFC 6347 §4.1, §4.2.2).
	const body = 13 + 12
	isHello := func(b []byte) bool { return len(b) > body+35 && b[0] == 22 && b[13] == 1 }
	helloCookie := func(b []byte) int { // ClientHello: version(2) random(32) session_id<0..32> cookie<0..2^8-1>
		sid := int(b[body+34])
		if len(b) <= body+35+sid {
			return 0
		}
		return int(b[body+35+sid])
	}
	ds := relay.datagrams()
	var up, down int // octets each way before the cookie came back
	var hvrs int
	for _, d := range ds {
		if d.up {
			if !isHello(d.b) {
				t.Fatalf("the client sent % x before its ClientHello with the cookie", d.b)
			}
			if helloCookie(d.b) > 0 {
				break
			}
			up += len(d.b)
			continue
		}
		down += len(d.b)
		// HelloVerifyRequest (3): server_version(2) cookie<0..2^8-1>.
		if len(d.b) < body+3 || d.b[0] != 22 || d.b[13] != 3 {
			t.Fatalf("the gateway sent % x before the cookie came back: want only a HelloVerifyRequest", d.b)
		}
		if c := int(d.b[body+2]); c == 0 || len(d.b) < body+3+c {
			t.Fatalf("HelloVerifyRequest without a cookie: % x", d.b)
		}
		hvrs++
	}
	if hvrs == 0 {
		t.Fatal("no HelloVerifyRequest: the handshake went on without the cookie exchange")
	}
	if down > up {
		t.Fatalf("the gateway sent %d octets for the %d of ClientHellos without cookie: amplification", down, up)
	}
	t.Logf("before the cookie came back: %d octets in, %d out (%d HelloVerifyRequest)", up, down, hvrs)
}
