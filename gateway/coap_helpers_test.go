package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

// coapEnv is a real Mosquitto and a gateway with a CoAP listener "coap" (and,
// with coapOpts.dtls, a coaps listener "coaps").
type coapEnv struct {
	b     *mosquittotest.Broker
	g     *runningGateway
	addr  string // the coap listener's HOST:PORT
	daddr string // the coaps listener's HOST:PORT, or ""
	dir   string // holds the PSK and password files
}

// coapOpts tune the environment's config.
type coapOpts struct {
	coap   string // extra [listener.coap] keys of the coap listener
	auth   string // extra [auth] keys
	dtls   bool   // add a coaps listener with the PSK file
	psk    string // PSK file contents (identity:hexkey lines)
	users  map[string]string
	extra  string // extra top-level text (rules)
	listen string // extra keys of the coap [[listener]]
}

// coapPSKIdentity and coapPSKKey are the test device's DTLS credentials; the PSK
// file holds the key in hex, coap-client-openssl -k takes it as text.
const (
	coapPSKIdentity = "sensor-psk"
	coapPSKKey      = "secret-psk-key-1"
)

// startCoAP starts Mosquitto and the gateway.
func startCoAP(t *testing.T, o coapOpts) *coapEnv {
	t.Helper()
	mosquittotest.RequireTools(t, "coap-client-notls", "coap-client-openssl", "stdbuf", "mosquitto_passwd")
	b := startMosquitto(t, false)
	dir := t.TempDir()
	authText := o.auth + "\n"
	if o.dtls || o.psk != "" {
		psk := o.psk
		if psk == "" {
			psk = fmt.Sprintf("# test devices\n%s:%x\n", coapPSKIdentity, coapPSKKey)
		}
		writeFile(t, filepath.Join(dir, "psk"), psk)
		authText += fmt.Sprintf("psk_file = %q\n", filepath.Join(dir, "psk"))
	}
	if len(o.users) > 0 {
		path := filepath.Join(dir, "passwd")
		create := true
		for _, u := range slices.Sorted(maps.Keys(o.users)) {
			args := []string{"-b", path, u, o.users[u]}
			if create {
				args = append([]string{"-c"}, args...)
				create = false
			}
			if out, err := exec.Command("mosquitto_passwd", args...).CombinedOutput(); err != nil {
				t.Fatalf("mosquitto_passwd: %v: %s", err, out)
			}
		}
		authText += fmt.Sprintf("password_file = %q\n", path)
	}
	dtlsText := ""
	if o.dtls {
		// A free port rather than port 0: the config refuses two listeners with
		// the same bind text, even "127.0.0.1:0".
		dtlsText = fmt.Sprintf(`
[[listener]]
name = "coaps"
type = "coaps"
bind = "127.0.0.1:%s"
[listener.coap]
handshake_timeout = "3s"
`, freeUDPPort(t))
	}
	cfg := upstreamTOML(b) + fmt.Sprintf(`
[auth]
%s

[[listener]]
name = "coap"
type = "coap"
bind = "127.0.0.1:0"
%s
[listener.coap]
retry_after = "7s"
%s
%s
%s
`, authText, o.listen, o.coap, dtlsText, o.extra)
	g := startGateway(t, cfg)
	env := &coapEnv{b: b, g: g, addr: g.ListenerAddr("coap").String(), dir: dir}
	if o.dtls {
		env.daddr = g.ListenerAddr("coaps").String()
	}
	return env
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (env *coapEnv) url(path string) string  { return "coap://" + env.addr + path }
func (env *coapEnv) surl(path string) string { return "coaps://" + env.daddr + path }

// reader subscribes a mosquitto_sub as the broker's "reader" user.
func (env *coapEnv) reader(t *testing.T, topics ...string) *mosquittotest.Sub {
	t.Helper()
	return env.b.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1, Topics: topics})
}

// mqttPub publishes on the broker as "reader".
func (env *coapEnv) mqttPub(t *testing.T, topic, payload string, retain bool) {
	t.Helper()
	env.b.Publish(t, mosquittotest.PubOptions{Username: "reader", Password: "reader-secret", Topic: topic, Payload: []byte(payload), QoS: 1, Retain: retain})
}

func (env *coapEnv) metric(name string, labels ...string) float64 {
	return env.g.Metrics().Get(name, labels...)
}

func (env *coapEnv) observations(listener string) float64 {
	return env.metric("mqttgw_coap_observations", "listener", listener)
}

func (env *coapEnv) ended(reason string) float64 {
	return env.metric("mqttgw_coap_observations_ended_total", "listener", "coap", "reason", reason)
}

// libcoap runs a libcoap client (coap-client-notls or coap-client-openssl) to
// completion within bound and returns its output; libcoap prints each response
// payload, and the code of error responses ("4.04").
func libcoap(t *testing.T, bound time.Duration, tool string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: no exit within %v; output: %q", tool, strings.Join(args, " "), bound, out)
	}
	if err != nil {
		t.Logf("%s %s: %v", tool, strings.Join(args, " "), err)
	}
	return string(out)
}

func coapClient(t *testing.T, args ...string) string {
	t.Helper()
	return libcoap(t, 30*time.Second, "coap-client-notls", args...)
}

// coapObserver is a running `coap-client-notls -s SECONDS` observing one
// resource; its output (the payloads, unseparated) is collected as it comes.
type coapObserver struct {
	cmd  *exec.Cmd
	done chan struct{}

	mu  sync.Mutex
	out bytes.Buffer
}

// observe starts libcoap observing url for seconds; cleanup kills it.
func observe(t *testing.T, seconds int, args ...string) *coapObserver {
	t.Helper()
	// stdbuf -o0: libcoap writes payloads without newlines, so only an
	// unbuffered stdout shows them as they come.
	// -B: libcoap gives up after 90 s without a response by default, which
	// would end an idle observation on the client side.
	full := append([]string{"-o0", "coap-client-notls", "-m", "get", "-s", fmt.Sprint(seconds), "-B", fmt.Sprint(seconds + 10)}, args...)
	o := &coapObserver{cmd: exec.Command("stdbuf", full...), done: make(chan struct{})}
	r, w := io.Pipe()
	o.cmd.Stdout = w
	o.cmd.Stderr = w
	if err := o.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			o.mu.Lock()
			o.out.Write(buf[:n])
			o.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	go func() {
		_ = o.cmd.Wait()
		w.Close()
		close(o.done)
	}()
	t.Cleanup(o.kill)
	return o
}

func (o *coapObserver) output() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.out.String()
}

// waitOutput waits until the output contains want.
func (o *coapObserver) waitOutput(t *testing.T, bound time.Duration, want string) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !strings.Contains(o.output(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for observer output %q; got %q", bound, want, o.output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wait waits for libcoap to exit on its own.
func (o *coapObserver) wait(t *testing.T, bound time.Duration) {
	t.Helper()
	select {
	case <-o.done:
	case <-time.After(bound):
		t.Fatalf("coap-client did not exit within %v; output %q", bound, o.output())
	}
}

func (o *coapObserver) kill() {
	_ = o.cmd.Process.Kill()
	<-o.done
}

// A minimal CoAP codec (RFC 7252 §3) for raw datagrams in tests: the gateway
// package must not import go-coap.

const (
	coapCON = 0
	coapNON = 1
	coapACK = 2
	coapRST = 3

	codeGET  = 0x01
	codePOST = 0x02
	codePUT  = 0x03

	optObserve  = 6
	optURIPath  = 11
	optMaxAge   = 14
	optURIQuery = 15
	optBlock1   = 27
	optSize1    = 60
)

type coapOpt struct {
	num   int
	value []byte
}

type coapMsg struct {
	typ     int
	code    byte // class<<5 | detail
	mid     uint16
	token   []byte
	opts    []coapOpt
	payload []byte
}

// codeStr renders a code as "2.04".
func codeStr(c byte) string { return fmt.Sprintf("%d.%02d", c>>5, c&0x1f) }

// coapRequest builds a request for path "/a/b?x=1&y".
func coapRequest(typ int, code byte, mid uint16, token string, path string, payload []byte) coapMsg {
	m := coapMsg{typ: typ, code: code, mid: mid, token: []byte(token), payload: payload}
	p, q, _ := strings.Cut(path, "?")
	for _, seg := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		m.opts = append(m.opts, coapOpt{optURIPath, []byte(seg)})
	}
	if q != "" {
		for _, kv := range strings.Split(q, "&") {
			m.opts = append(m.opts, coapOpt{optURIQuery, []byte(kv)})
		}
	}
	return m
}

func (m coapMsg) encode() []byte {
	b := []byte{0x40 | byte(m.typ)<<4 | byte(len(m.token)), m.code, byte(m.mid >> 8), byte(m.mid)}
	b = append(b, m.token...)
	opts := slices.Clone(m.opts)
	slices.SortStableFunc(opts, func(a, b coapOpt) int { return a.num - b.num })
	prev := 0
	for _, o := range opts {
		delta, n := o.num-prev, len(o.value)
		prev = o.num
		nib := func(v int) (byte, []byte) {
			switch {
			case v < 13:
				return byte(v), nil
			case v < 269:
				return 13, []byte{byte(v - 13)}
			}
			return 14, binary.BigEndian.AppendUint16(nil, uint16(v-269))
		}
		dn, dx := nib(delta)
		ln, lx := nib(n)
		b = append(b, dn<<4|ln)
		b = append(b, dx...)
		b = append(b, lx...)
		b = append(b, o.value...)
	}
	if len(m.payload) > 0 {
		b = append(b, 0xff)
		b = append(b, m.payload...)
	}
	return b
}

func decodeCoAP(b []byte) (coapMsg, error) {
	var m coapMsg
	if len(b) < 4 || b[0]>>6 != 1 {
		return m, fmt.Errorf("not CoAP: % x", b)
	}
	m.typ = int(b[0] >> 4 & 3)
	tkl := int(b[0] & 0xf)
	m.code = b[1]
	m.mid = binary.BigEndian.Uint16(b[2:])
	if len(b) < 4+tkl {
		return m, fmt.Errorf("short token")
	}
	m.token = b[4 : 4+tkl]
	b = b[4+tkl:]
	num := 0
	for len(b) > 0 {
		if b[0] == 0xff {
			m.payload = b[1:]
			break
		}
		d, l := int(b[0]>>4), int(b[0]&0xf)
		b = b[1:]
		ext := func(v int) (int, error) {
			switch v {
			case 13:
				if len(b) < 1 {
					return 0, io.ErrUnexpectedEOF
				}
				v = int(b[0]) + 13
				b = b[1:]
			case 14:
				if len(b) < 2 {
					return 0, io.ErrUnexpectedEOF
				}
				v = int(binary.BigEndian.Uint16(b)) + 269
				b = b[2:]
			}
			return v, nil
		}
		var err error
		if d, err = ext(d); err != nil {
			return m, err
		}
		if l, err = ext(l); err != nil {
			return m, err
		}
		if len(b) < l {
			return m, io.ErrUnexpectedEOF
		}
		num += d
		m.opts = append(m.opts, coapOpt{num, b[:l]})
		b = b[l:]
	}
	return m, nil
}

// uintOpt returns the value of an unsigned option, or -1.
func (m coapMsg) uintOpt(num int) int {
	for _, o := range m.opts {
		if o.num == num {
			v := 0
			for _, c := range o.value {
				v = v<<8 | int(c)
			}
			return v
		}
	}
	return -1
}

// coapPeer is a raw UDP socket talking to a listener.
type coapPeer struct {
	t    *testing.T
	conn *net.UDPConn
}

func dialCoAP(t *testing.T, addr string) *coapPeer {
	t.Helper()
	ra, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, ra)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &coapPeer{t: t, conn: c}
}

func (p *coapPeer) send(b []byte) {
	p.t.Helper()
	if _, err := p.conn.Write(b); err != nil {
		p.t.Fatal(err)
	}
}

// recv returns the next datagram within d, or nil.
func (p *coapPeer) recv(d time.Duration) []byte {
	_ = p.conn.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 2048)
	n, err := p.conn.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

// do sends m and returns the decoded response, failing the test without one.
func (p *coapPeer) do(m coapMsg) coapMsg {
	p.t.Helper()
	p.send(m.encode())
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		b := p.recv(time.Until(deadline))
		if b == nil {
			break
		}
		r, err := decodeCoAP(b)
		if err != nil {
			p.t.Fatalf("response: %v", err)
		}
		if bytes.Equal(r.token, m.token) && (r.typ != coapACK || r.mid == m.mid) {
			return r
		}
	}
	p.t.Fatalf("no response to %s within 10s", codeStr(m.code))
	return coapMsg{}
}
