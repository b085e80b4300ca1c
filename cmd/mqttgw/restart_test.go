package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/observation"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

// TestCoAPObserveKill9Restart: CoAP observations survive a SIGKILL of the
// gateway (issue 10, "Restarts"; RFC 7641). Two observers register before
// the kill, one made of go-coap's codec over a plain socket (so the test sees
// every token and Observe number) and libcoap's coap-client; after the kill
// and a restart on the same [store] dir, a message published on Mosquitto
// reaches both without their registering again: to the same address, with
// the same token, with an Observe number the client takes as newer than the
// last one it got (RFC 7641 §3.4, go-coap's own check), the first one
// Confirmable (§4.5).
func TestCoAPObserveKill9Restart(t *testing.T) {
	mosquittotest.RequireTools(t, "coap-client-notls", "stdbuf")
	b := mosquittotest.Start(t, mosquittotest.Options{Users: map[string]string{"mqttgw": "gw-secret", "reader": "reader-secret"}})
	coapPort, metricsPort := freePort(t, "udp"), freePort(t, "tcp")
	cfgFile := filepath.Join(t.TempDir(), "config.toml")
	writeTestFile(t, cfgFile, fmt.Sprintf(`
[upstream]
url = %q
username = "mqttgw"
password = "gw-secret"
[store]
dir = %q
[metrics]
listen = "127.0.0.1:%d"
[[listener]]
name = "coap"
type = "coap"
bind = "127.0.0.1:%d"
`, b.URL, t.TempDir(), metricsPort, coapPort))
	bin := buildBinary(t)
	r := startBinary(t, bin, "run", "--config", cfgFile)
	r.waitLog(t, "connected to broker")
	gw := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: coapPort}
	metrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
	pub := func(payload string) {
		b.Publish(t, mosquittotest.PubOptions{Username: "reader", Password: "reader-secret", Topic: "k9c/t", Payload: []byte(payload), QoS: 1})
	}

	// The go-coap device proves its address first (it answers the ping that
	// follows its first request: unproven.go), so its registration is made
	// over a connection and its one record holds the proven address.
	obs := newCoAPDev(t, gw)
	if resp := obs.exchange(t, obs.request(codes.PUT, "/ps/k9c/hello?c=watcher", "p1", -1)); resp.Code() != codes.Changed {
		t.Fatalf("PUT: %v", resp.Code())
	}
	waitCond(t, "the device's address proven", func() bool {
		return scrapeMetric(metrics, "mqttgw_sources_proven_total", `listener="coap"`) == 1
	})
	const token = "k9tok"
	resp := obs.exchange(t, obs.request(codes.GET, "/ps/k9c/t?c=watcher", token, 0))
	if resp.Code() != codes.Content {
		t.Fatalf("registration: %v", resp.Code())
	}
	last := observeOf(t, resp)
	// libcoap registers from an address not yet proven: a first record
	// without it, a second once it answered the gateway's ping.
	lib := startLibcoapObserver(t, fmt.Sprintf("coap://127.0.0.1:%d/ps/k9c/t?c=libcoap", coapPort))
	waitCond(t, "two observations, written to the store with their proven addresses", func() bool {
		return scrapeMetric(metrics, "mqttgw_coap_observations", `listener="coap"`) == 2 &&
			scrapeMetric(metrics, "mqttgw_coap_observation_writes_total", `result="put"`) == 3 &&
			scrapeMetric(metrics, "mqttgw_coap_observation_writes_pending", `listener="coap"`) == 0 &&
			scrapeUnlabelled(metrics, "mqttgw_session_writes_pending") == 0
	})
	pub("before;")
	m := obs.notification(t, token, 10*time.Second)
	if body, _ := m.ReadBody(); string(body) != "before;" || !newerObserve(last, observeOf(t, m)) {
		t.Fatalf("notification before the kill: %q Observe %d after %d", body, observeOf(t, m), last)
	}
	last = observeOf(t, m)
	lib.waitOutput(t, "before;")

	if err := r.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	err := <-r.exited
	r.exited <- err

	r2 := startBinary(t, bin, "run", "--config", cfgFile)
	r2.waitLog(t, "connected to broker")
	r2.waitLog(t, `observations restored`)
	if !strings.Contains(r2.logs.String(), `"restored": 2`) {
		t.Fatalf("restart did not restore both observations; log:\n%s", r2.logs.String())
	}
	// The restored subscription is made at start, and again by the broker
	// connection once it is up: publish until the first one arrives.
	var after *pool.Message
	tries := 0
	for ; after == nil; tries++ {
		if tries == 15 {
			t.Fatal("no notification within 15 s of publishing after the restart")
		}
		pub(fmt.Sprintf("after-%d;", tries))
		after = obs.tryNotification(t, token, time.Second)
	}
	body, _ := after.ReadBody()
	seq := observeOf(t, after)
	if !strings.HasPrefix(string(body), "after-") || !newerObserve(last, seq) || after.Type() != message.Confirmable {
		t.Fatalf("first notification after the restart: %q Observe %d (last before: %d) type %v; want a newer Observe, Confirmable", body, seq, last, after.Type())
	}
	t.Logf("Observe %d before the kill, %d after the restart (%d publishes)", last, seq, tries)
	lib.waitOutput(t, string(body))
	pub("next;")
	m = obs.notification(t, token, 10*time.Second)
	for b, _ := m.ReadBody(); string(b) != "next;"; b, _ = m.ReadBody() {
		// a later copy of the "after-" messages published while polling
		if !newerObserve(seq, observeOf(t, m)) {
			t.Fatalf("Observe %d after %d", observeOf(t, m), seq)
		}
		seq = observeOf(t, m)
		m = obs.notification(t, token, 10*time.Second)
	}
	if !newerObserve(seq, observeOf(t, m)) {
		t.Fatalf("Observe %d after %d", observeOf(t, m), seq)
	}
	lib.waitOutput(t, "next;")
}

// TestDeviceSessionsKill9Restart: the synthetic sessions of plain-UDP devices
// survive a SIGKILL of the gateway (issue 10, "Restarts"). A device heard
// again after the restart, within its keepalive, continues its session: no
// second birth, no will, its first contact unchanged. A device whose 1.5
// keepalives ran out while the gateway was down is lost at start: its class's
// will is published exactly once.
func TestDeviceSessionsKill9Restart(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{Users: map[string]string{"mqttgw": "gw-secret", "reader": "reader-secret"}})
	status := b.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1, Topics: []string{"devices/#"}})
	data := b.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1, Topics: []string{"data/#"}})
	udpPort, metricsPort := freePort(t, "udp"), freePort(t, "tcp")
	cfgFile := filepath.Join(t.TempDir(), "config.toml")
	class := func(name, keepalive string) string {
		return fmt.Sprintf(`
[[class]]
name = %q
match = "%s*"
keepalive = %q
will  = { topic = "devices/{device}/status", payload = "offline", qos = 1 }
birth = { topic = "devices/{device}/status", payload = "online", qos = 1 }
`, name, name, keepalive)
	}
	writeTestFile(t, cfgFile, fmt.Sprintf(`
[upstream]
url = %q
username = "mqttgw"
password = "gw-secret"
[store]
dir = %q
[metrics]
listen = "127.0.0.1:%d"
[[listener]]
name = "sensors"
type = "udp"
bind = "127.0.0.1:%d"
[[rule]]
name = "json"
listener = "sensors"
match = { json = true }
device = { json = "/id" }
fields.v = { json = "/v" }
[[rule.publish]]
topic = "data/{device}"
qos = 1
`, b.URL, t.TempDir(), metricsPort, udpPort)+class("stay", "60s")+class("mortal", "4s"))
	bin := buildBinary(t)
	r := startBinary(t, bin, "run", "--config", cfgFile)
	r.waitLog(t, "connected to broker")
	gw := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: udpPort}
	metricsBase := fmt.Sprintf("http://127.0.0.1:%d", metricsPort)
	stay, mortal := newRawDev(t, gw), newRawDev(t, gw)
	send := func(d *rawDev, text string) {
		t.Helper()
		if _, err := d.c.WriteToUDP([]byte(text), gw); err != nil {
			t.Fatal(err)
		}
	}

	send(stay, `{"id":"stay1","v":1}`)
	send(mortal, `{"id":"mortal1","v":1}`)
	lastMortal := time.Now()
	births := map[string]bool{}
	for range 2 {
		m := status.Next(t, 10*time.Second)
		if string(m.Payload) != "online" {
			t.Fatalf("before the kill: %v, want births", m)
		}
		births[m.Topic] = true
	}
	if !births["devices/stay1/status"] || !births["devices/mortal1/status"] {
		t.Fatalf("births %v", births)
	}
	// Both sessions on disk, and the births and datagrams out of the store's
	// queue (else its replay after the restart would send them again: at
	// least once).
	waitCond(t, "both sessions written to the store, its queue empty", func() bool {
		return scrapeMetric(metricsBase+"/metrics", "mqttgw_session_writes_total", `result="put"`) >= 2 &&
			scrapeUnlabelled(metricsBase+"/metrics", "mqttgw_session_writes_pending") == 0 &&
			scrapeUnlabelled(metricsBase+"/metrics", "mqttgw_upstream_queue_length") == 0
	})
	before := deviceList(t, metricsBase)["stay1"]

	if err := r.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	err := <-r.exited
	r.exited <- err
	// The premise: the gateway died before mortal1's keepalive ran out, so
	// it could not publish the will itself.
	if since := time.Since(lastMortal); since >= 6*time.Second {
		t.Fatalf("the kill came %v after mortal1's last datagram, past its 1.5 × 4 s: the test cannot tell who published its will", since)
	}
	waitCond(t, "mortal1's keepalive (1.5 × 4 s) to run out while the gateway is down", func() bool {
		return time.Since(lastMortal) > 6*time.Second
	})

	r2 := startBinary(t, bin, "run", "--config", cfgFile)
	r2.waitLog(t, `"active": 1, "lost_while_down": 1`)
	status.Expect(t, 10*time.Second, "devices/mortal1/status", "offline")
	r2.waitLog(t, "connected to broker")

	send(stay, `{"id":"stay1","v":2}`)
	for m := data.Next(t, 10*time.Second); string(m.Payload) != `{"device":"stay1","v":2}`; m = data.Next(t, 10*time.Second) {
		// the datagrams before the kill
	}
	// Neither a second birth for stay1 nor a second will for mortal1.
	status.None(t, time.Second)
	after := deviceList(t, metricsBase)["stay1"]
	if after.State != "active" || !after.FirstSeen.Equal(before.FirstSeen) {
		t.Fatalf("stay1 after the restart: %+v, before: %+v (want the same session, active)", after, before)
	}
	if n := scrapeMetric(metricsBase+"/metrics", "mqttgw_births_published_total", `listener="sensors"`); n > 0 {
		t.Fatalf("%v births published after the restart", n)
	}
}

// scrapeUnlabelled is scrapeMetric for a series without labels: -1 when
// absent or unreadable.
func scrapeUnlabelled(url, name string) float64 {
	resp, err := http.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return -1
			}
			return f
		}
	}
	return -1
}

// deviceList reads GET /devices, by device id.
func deviceList(t *testing.T, base string) map[string]struct {
	State     string    `json:"state"`
	FirstSeen time.Time `json:"first_seen"`
} {
	t.Helper()
	resp, err := http.Get(base + "/devices")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list []struct {
		Device    string    `json:"device"`
		State     string    `json:"state"`
		FirstSeen time.Time `json:"first_seen"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	out := map[string]struct {
		State     string    `json:"state"`
		FirstSeen time.Time `json:"first_seen"`
	}{}
	for _, d := range list {
		out[d.Device] = struct {
			State     string    `json:"state"`
			FirstSeen time.Time `json:"first_seen"`
		}{d.State, d.FirstSeen}
	}
	return out
}

// newerObserve is RFC 7641 §3.4's test, as go-coap's client applies it, for
// notifications close in time: is v2 newer than v1?
func newerObserve(v1, v2 uint32) bool {
	now := time.Now()
	return observation.ValidSequenceNumber(v1, v2, now, now)
}

func observeOf(t *testing.T, m *pool.Message) uint32 {
	t.Helper()
	v, err := m.Observe()
	if err != nil {
		t.Fatalf("%v without Observe", m)
	}
	return v
}

// coapDev is a CoAP client made of go-coap's codec over an unconnected UDP
// socket: the ICMP errors of a dead gateway do not reach it, and the test
// sees every message as sent. Its reader acknowledges Confirmable messages
// and answers CoAP pings with a Reset (RFC 7252 §4.3) at once, as any
// endpoint does, and hands the rest to msgs.
type coapDev struct {
	c    *net.UDPConn
	gw   *net.UDPAddr
	mid  uint16
	msgs chan *pool.Message
}

func newCoAPDev(t *testing.T, gw *net.UDPAddr) *coapDev {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	d := &coapDev{c: c, gw: gw, mid: 0x4000, msgs: make(chan *pool.Message, 64)}
	done := make(chan struct{})
	go d.read(done)
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return d
}

// read runs until the socket closes.
func (d *coapDev) read(done chan<- struct{}) {
	defer close(done)
	buf := make([]byte, 2048)
	for {
		n, _, err := d.c.ReadFromUDP(buf)
		if err != nil {
			close(d.msgs)
			return
		}
		m := pool.NewMessage(context.Background())
		if _, err := m.UnmarshalWithDecoder(coder.DefaultCoder, buf[:n]); err != nil {
			continue // not CoAP: the test sees a missing message
		}
		if m.Type() == message.Confirmable {
			typ := byte(0x60) // ACK
			if m.Code() == codes.Empty {
				typ = 0x70 // a ping: Reset
			}
			_, _ = d.c.WriteToUDP([]byte{typ, 0x00, buf[2], buf[3]}, d.gw)
			if m.Code() == codes.Empty {
				continue
			}
		}
		select {
		case d.msgs <- m:
		default: // the test is not reading: dropped
		}
	}
}

// request encodes a Confirmable request; observe < 0 leaves the option out.
func (d *coapDev) request(code codes.Code, uri, token string, observe int) []byte {
	m := pool.NewMessage(context.Background())
	m.SetType(message.Confirmable)
	m.SetCode(code)
	d.mid++
	m.SetMessageID(int32(d.mid))
	m.SetToken([]byte(token))
	path, query, _ := strings.Cut(uri, "?")
	_ = m.SetPath(path)
	for q := range strings.SplitSeq(query, "&") {
		if q != "" {
			m.AddQuery(q)
		}
	}
	if observe >= 0 {
		m.SetObserve(uint32(observe))
	}
	b, _ := m.MarshalWithEncoder(coder.DefaultCoder)
	return bytes.Clone(b)
}

func (d *coapDev) send(t *testing.T, b []byte) {
	t.Helper()
	if _, err := d.c.WriteToUDP(b, d.gw); err != nil {
		t.Fatal(err)
	}
}

// recv returns the next message within wait, or nil.
func (d *coapDev) recv(wait time.Duration) *pool.Message {
	tm := time.NewTimer(wait)
	defer tm.Stop()
	select {
	case m := <-d.msgs:
		return m
	case <-tm.C:
		return nil
	}
}

// exchange sends a request until its response arrives, for at most 10 s.
func (d *coapDev) exchange(t *testing.T, req []byte) *pool.Message {
	t.Helper()
	token := req[4 : 4+req[0]&0xf]
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		d.send(t, req)
		for m := d.recv(time.Second); m != nil; m = d.recv(time.Second) {
			if bytes.Equal(m.Token(), token) {
				return m
			}
		}
	}
	t.Fatal("no response within 10 s")
	return nil
}

// tryNotification returns the next notification with token within wait, or nil.
func (d *coapDev) tryNotification(t *testing.T, token string, wait time.Duration) *pool.Message {
	t.Helper()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		m := d.recv(time.Until(deadline))
		if m == nil {
			return nil
		}
		if string(m.Token()) != token {
			t.Fatalf("a message with token %q, want %q: %v", m.Token(), token, m)
		}
		if m.Code() == codes.Content && m.HasOption(message.Observe) {
			return m
		}
	}
	return nil
}

func (d *coapDev) notification(t *testing.T, token string, wait time.Duration) *pool.Message {
	t.Helper()
	m := d.tryNotification(t, token, wait)
	if m == nil {
		t.Fatalf("no notification within %v", wait)
	}
	return m
}

// libcoapObserver is `coap-client-notls -s` observing one resource; its
// output (the payloads, unseparated) is collected as it comes.
type libcoapObserver struct {
	out *syncBuffer
}

func startLibcoapObserver(t *testing.T, url string) *libcoapObserver {
	t.Helper()
	// stdbuf -o0: libcoap writes payloads without newlines. -B: libcoap
	// gives up after 90 s without a response by default.
	cmd := exec.Command("stdbuf", "-o0", "coap-client-notls", "-m", "get", "-s", "120", "-B", "130", url)
	o := &libcoapObserver{out: &syncBuffer{}}
	cmd.Stdout, cmd.Stderr = o.out, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	return o
}

func (o *libcoapObserver) waitOutput(t *testing.T, want string) {
	t.Helper()
	if err := poll(15*time.Second, func() (bool, error) { return strings.Contains(o.out.String(), want), nil }); err != nil {
		t.Fatalf("coap-client did not print %q; it printed %q", want, o.out.String())
	}
}
