package gateway

import (
	"strings"
	"testing"
	"time"
)

func (env *coapEnv) dropped(reason string) float64 {
	return env.metric("mqttgw_coap_datagrams_dropped_total", "listener", "coap", "reason", reason)
}

func (env *coapEnv) answered(method, code string) float64 {
	return env.metric("mqttgw_coap_requests_total", "listener", "coap", "method", method, "code", code)
}

// TestCoAPBadInput sends raw datagrams that are not valid CoAP or not valid
// requests: each gets a clear answer (or, where RFC 7252 says so, silence), is
// counted, and an observing device next to it is not disturbed.
func TestCoAPBadInput(t *testing.T) {
	env := startCoAP(t, coapOpts{coap: "max_payload = 100"})
	obs := observe(t, 60, env.url("/ps/calm/t?c=bystander"))
	env.waitObservations(t, "coap", 1)
	env.mqttPub(t, "calm/t", "a;", false)
	obs.waitOutput(t, 10*time.Second, "a;")
	p := dialCoAP(t, env.addr)

	t.Run("truncated option: RST", func(t *testing.T) {
		// CON GET, MID 0x1234, no token, then an option header promising 5
		// bytes of Uri-Path with only 1 present (RFC 7252 §3.1).
		p.send([]byte{0x40, 0x01, 0x12, 0x34, 0xb5, 'p'})
		r, err := decodeCoAP(p.recv(5 * time.Second))
		if err != nil || r.typ != coapRST || r.mid != 0x1234 {
			t.Fatalf("want RST for MID 0x1234 (RFC 7252 §4.2), got %+v, %v", r, err)
		}
		waitFor(t, 5*time.Second, "malformed counted", func() bool { return env.dropped("malformed") >= 1 })
	})
	t.Run("unknown critical option: bare 4.02, no amplification", func(t *testing.T) {
		// CON GET, MID 0x2345, no token, option 9 (critical, unassigned): RFC 7252
		// §5.4.1 wants 4.02; its diagnostic text would make the answer 7× larger.
		req := []byte{0x40, 0x01, 0x23, 0x45, 0x90}
		p.send(req)
		b := p.recv(5 * time.Second)
		r, err := decodeCoAP(b)
		if err != nil || r.typ != coapACK || r.mid != 0x2345 || r.code != 0x82 || len(b) > len(req) {
			t.Fatalf("want a bare ACK 4.02 for MID 0x2345 no larger than %d bytes, got % x (%+v, %v)", len(req), b, r, err)
		}
		waitFor(t, 5*time.Second, "bad option counted", func() bool { return env.dropped("bad_option") >= 1 })
	})
	t.Run("token length 9: RST", func(t *testing.T) {
		// TKL 9 to 15 are reserved: a message format error (§3).
		p.send([]byte{0x49, 0x01, 0x00, 0x07, 1, 2, 3, 4, 5, 6, 7, 8, 9})
		r, err := decodeCoAP(p.recv(5 * time.Second))
		if err != nil || r.typ != coapRST || r.mid != 7 {
			t.Fatalf("want RST for MID 7, got %+v, %v", r, err)
		}
	})
	t.Run("unknown version: silence", func(t *testing.T) {
		before := env.dropped("bad_version")
		p.send([]byte{0x80, 0x01, 0x00, 0x01}) // version 2
		if b := p.recv(300 * time.Millisecond); b != nil {
			t.Fatalf("answered a version-2 message (RFC 7252 §3: silently ignore): % x", b)
		}
		waitFor(t, 5*time.Second, "bad version counted", func() bool { return env.dropped("bad_version") == before+1 })
	})
	t.Run("shorter than a header: silence", func(t *testing.T) {
		before := env.dropped("malformed")
		p.send([]byte{0x40, 0x01})
		if b := p.recv(300 * time.Millisecond); b != nil {
			t.Fatalf("answered a 2-byte datagram: % x", b)
		}
		waitFor(t, 5*time.Second, "short datagram counted", func() bool { return env.dropped("malformed") == before+1 })
	})
	t.Run("unknown path: 4.04", func(t *testing.T) {
		r := p.do(coapRequest(coapCON, codeGET, 0x2001, "t1", "/nowhere/x", nil))
		if codeStr(r.code) != "4.04" || r.typ != coapACK {
			t.Fatalf("got %s type %d, want piggybacked 4.04", codeStr(r.code), r.typ)
		}
		r = p.do(coapRequest(coapCON, codeGET, 0x2002, "t2", "/ps", nil))
		if codeStr(r.code) != "4.04" {
			t.Fatalf("GET /ps: %s, want 4.04", codeStr(r.code))
		}
		if env.answered("GET", "4.04") < 2 {
			t.Errorf("4.04 not counted")
		}
	})
	t.Run("DELETE: 4.05", func(t *testing.T) {
		r := p.do(coapRequest(coapCON, 0x04, 0x2003, "t3", "/ps/calm/t", nil))
		if codeStr(r.code) != "4.05" {
			t.Fatalf("DELETE: %s, want 4.05", codeStr(r.code))
		}
	})
	t.Run("bad query: 4.00", func(t *testing.T) {
		r := p.do(coapRequest(coapCON, codePUT, 0x2004, "t4", "/ps/calm/q?qos=7", []byte("x")))
		if codeStr(r.code) != "4.00" {
			t.Fatalf("qos=7: %s, want 4.00", codeStr(r.code))
		}
		r = p.do(coapRequest(coapCON, codePUT, 0x2005, "t5", "/ps/calm/q?c=10.0.0.1:5683", []byte("x")))
		if codeStr(r.code) != "4.00" {
			t.Fatalf("address as client id: %s, want 4.00", codeStr(r.code))
		}
		r = p.do(coapRequest(coapCON, codePUT, 0x2006, "t6", "/ps/calm/+", []byte("x")))
		if codeStr(r.code) != "4.00" {
			t.Fatalf("publish to a wildcard: %s, want 4.00", codeStr(r.code))
		}
		r = p.do(coapRequest(coapCON, codeGET, 0x2007, "t7", "/ps/calm/#", nil))
		if codeStr(r.code) != "4.00" {
			t.Fatalf("read a wildcard: %s, want 4.00", codeStr(r.code))
		}
	})
	t.Run("oversize payload: 4.13 with Size1", func(t *testing.T) {
		r := p.do(coapRequest(coapCON, codePUT, 0x2010, "t8", "/ps/calm/big", []byte(strings.Repeat("x", 101))))
		if codeStr(r.code) != "4.13" || r.uintOpt(optSize1) != 100 {
			t.Fatalf("got %s Size1 %d, want 4.13 with Size1 100", codeStr(r.code), r.uintOpt(optSize1))
		}
		// A block-wise upload announcing 4 KiB in Size1 is refused at its first
		// block (RFC 7959 §2.9.3), before anything is buffered.
		m := coapRequest(coapCON, codePUT, 0x2011, "t9", "/ps/calm/big", []byte(strings.Repeat("x", 16)))
		m.opts = append(m.opts, coapOpt{optBlock1, []byte{0x08}}, coapOpt{optSize1, []byte{0x10, 0x00}}) // NUM 0, M, SZX 0 (16 bytes)
		r = p.do(m)
		if codeStr(r.code) != "4.13" || r.uintOpt(optSize1) != 100 {
			t.Fatalf("block-wise: got %s Size1 %d, want 4.13 with Size1 100", codeStr(r.code), r.uintOpt(optSize1))
		}
		// And so is the block that passes the limit without a Size1.
		out := coapClient(t, "-m", "put", "-b", "16", "-e", strings.Repeat("y", 120), env.url("/ps/calm/big"))
		if !strings.Contains(out, "4.13") {
			t.Fatalf("libcoap block-wise 120 bytes: %q, want 4.13", out)
		}
	})

	// The observing device saw none of this.
	env.mqttPub(t, "calm/t", "b;", false)
	obs.waitOutput(t, 10*time.Second, "a;b;")
	if got := env.ended("reset") + env.ended("timeout"); got != 0 {
		t.Errorf("observations ended: %v", got)
	}
}

// TestCoAPUnauthenticated: with allow_anonymous = false a request without
// credentials gets 4.01 and nothing more — the response is never larger than
// the request (RFC 7252 §11.3) — whatever it asked for; a password from the
// password file lets it in.
func TestCoAPUnauthenticated(t *testing.T) {
	env := startCoAP(t, coapOpts{auth: "allow_anonymous = false", users: map[string]string{"dev": "pw-1"}})
	sub := env.reader(t, "auth/#")
	p := dialCoAP(t, env.addr)
	for i, path := range []string{"/ps/auth/t", "/nowhere", "/ps/auth/t?u=dev&p=wrong", "/ps/auth/t?u=nobody&p=pw-1", "/ps/auth/t?c=dev"} {
		req := coapRequest(coapCON, codePUT, uint16(0x3000+i), "", path, []byte("let me in"))
		req.payload = nil
		b := req.encode()
		p.send(b)
		resp := p.recv(5 * time.Second)
		r, err := decodeCoAP(resp)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if codeStr(r.code) != "4.01" {
			t.Errorf("%s: %s, want 4.01", path, codeStr(r.code))
		}
		if len(resp) > len(b) || len(r.payload) > 0 {
			t.Errorf("%s: response %d bytes (payload %q) to a %d-byte request", path, len(resp), r.payload, len(b))
		}
	}
	// The smallest possible request: 4.01 in as many bytes.
	b := []byte{0x40, codeGET, 0x31, 0x00}
	p.send(b)
	if resp := p.recv(5 * time.Second); len(resp) > len(b) {
		t.Errorf("bare GET: %d-byte response to a %d-byte request", len(resp), len(b))
	}
	// An unauthenticated block-wise upload is refused at its first block.
	out := coapClient(t, "-m", "put", "-b", "16", "-e", strings.Repeat("z", 64), env.url("/ps/auth/t"))
	if !strings.Contains(out, "4.01") {
		t.Errorf("unauthenticated block-wise upload: %q, want 4.01", out)
	}
	sub.None(t, 300*time.Millisecond)
	if n := env.g.sessions.Len(); n != 0 {
		t.Errorf("unauthenticated requests made %d sessions", n)
	}

	out = coapClient(t, "-m", "put", "-e", "welcome", env.url("/ps/auth/t?u=dev&p=pw-1"))
	if strings.TrimSpace(out) != "" {
		t.Fatalf("with password: %q", out)
	}
	sub.Expect(t, 5*time.Second, "auth/t", "welcome")
	if got := env.answered("PUT", "4.01"); got < 5 {
		t.Errorf("4.01 counted %v times, want at least 5", got)
	}
}

// TestCoAPBrokerDown: while the broker is away a Confirmable publish gets 5.03
// with Max-Age = retry_after, so the device retries later (RFC 7252 §5.9.3.4).
func TestCoAPBrokerDown(t *testing.T) {
	env := startCoAP(t, coapOpts{})
	env.b.Stop()
	waitFor(t, 10*time.Second, "gateway disconnected", func() bool { return !env.g.proxy.Connected() })
	p := dialCoAP(t, env.addr)
	r := p.do(coapRequest(coapCON, codePUT, 0x4001, "d1", "/ps/down/t", []byte("x")))
	if codeStr(r.code) != "5.03" || r.uintOpt(optMaxAge) != 7 {
		t.Fatalf("got %s Max-Age %d, want 5.03 with Max-Age 7", codeStr(r.code), r.uintOpt(optMaxAge))
	}
	env.b.Restart()
	waitFor(t, 10*time.Second, "gateway reconnected", env.g.proxy.Connected)
	sub := env.reader(t, "down/t")
	r = p.do(coapRequest(coapCON, codePUT, 0x4002, "d2", "/ps/down/t", []byte("y")))
	if codeStr(r.code) != "2.04" {
		t.Fatalf("after the broker came back: %s", codeStr(r.code))
	}
	sub.Expect(t, 5*time.Second, "down/t", "y")
}
