package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/mqttsn"
)

// TestMQTTSNKill9Restart: the gateway process is killed (SIGKILL: no chance
// to write anything more) during MQTT-SN QoS 1 and QoS 2 traffic and started
// again on the same [store] dir. Then:
//   - no acknowledged message is lost: every message a device got PUBACK or
//     PUBCOMP for reaches a subscriber that stayed connected;
//   - QoS 2 is delivered exactly once: the QoS 2 device was holding a MsgId
//     the gateway had PUBREC'ed when it died, and its retransmitted PUBLISH
//     after the restart is answered with PUBREC without being published again;
//   - registrations are restored: the devices go on with the topic ids they
//     registered before, without a new CONNECT, and never get "invalid topic
//     ID" (nor an unsolicited DISCONNECT);
//   - a sleeping device's buffered messages survive: it gets them on waking;
//   - a device whose keepalive ran out while the gateway was down is lost at
//     start, and its will published once.
func TestMQTTSNKill9Restart(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{Users: map[string]string{"mqttgw": "gw-secret", "reader": "reader-secret"}})
	sub := b.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 2, Topics: []string{"k9/#"}})
	wills := b.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1, Topics: []string{"will/#"}})
	snPort, metricsPort := freePort(t, "udp"), freePort(t, "tcp")
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
name = "sn"
type = "mqttsn"
bind = "127.0.0.1:%d"
[listener.mqttsn]
retry_interval = "300ms"
`, b.URL, t.TempDir(), metricsPort, snPort))
	bin := buildBinary(t)
	r := startBinary(t, bin, "run", "--config", cfgFile)
	r.waitLog(t, "connected to broker")
	gw := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: snPort}
	metrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
	settled := func(what string, extra func(get func(string) float64) bool) {
		t.Helper()
		waitCond(t, what, func() bool {
			get := func(name string) float64 { return scrapeMetric(metrics, name, `listener="sn"`) }
			return get("mqttgw_mqttsn_session_writes_pending") == 0 && (extra == nil || extra(get))
		})
	}

	// A sleeping device with three messages buffered.
	s := newRawDev(t, gw)
	s.connect(t, "sleeper", 600)
	s.exchange(t, &mqttsn.Subscribe{Flags: mqttsn.Flags{QoS: 1}, MsgID: 1, TopicName: "cmd/sleeper"}, isSuback(1))
	s.exchange(t, &mqttsn.Disconnect{Duration: 600, HasDuration: true}, func(m mqttsn.Message) bool { _, ok := m.(*mqttsn.Disconnect); return ok })
	for i := 1; i <= 3; i++ {
		b.Publish(t, mosquittotest.PubOptions{Username: "reader", Password: "reader-secret", Topic: "cmd/sleeper", Payload: fmt.Appendf(nil, "z%d", i), QoS: 1})
	}
	settled("3 messages buffered and committed", func(get func(string) float64) bool { return get("mqttgw_mqttsn_buffered_messages") == 3 })

	// Traffic: two QoS 1 devices and one QoS 2 device, each with its own
	// registered topic, paced so that the kill comes in the middle.
	const q1Msgs, q2Msgs = 80, 30
	var (
		mu        sync.Mutex
		acked     = map[string]bool{} // PUBACK'ed (QoS 1) and PUBCOMP'ed (QoS 2) payloads
		q2done    = map[string]bool{}
		progress  [3]atomic.Int32
		freeze    = make(chan struct{}) // the QoS 2 device holds its next PUBREC'ed MsgId
		frozen    = make(chan struct{})
		thaw      = make(chan struct{})
		wg        sync.WaitGroup
		ctx, stop = context.WithCancel(context.Background())
	)
	defer stop()
	ack := func(payload string, q2 bool) {
		mu.Lock()
		acked[payload] = true
		if q2 {
			q2done[payload] = true
		}
		mu.Unlock()
	}
	for n := range 2 {
		d := newRawDev(t, gw)
		d.connect(t, fmt.Sprintf("q1-%d", n), 60)
		id := d.register(t, fmt.Sprintf("k9/q1-%d", n))
		wg.Add(1)
		go func() {
			defer wg.Done()
			pace := time.NewTicker(20 * time.Millisecond)
			defer pace.Stop()
			for seq := range q1Msgs {
				select {
				case <-pace.C:
				case <-ctx.Done():
					return
				}
				payload := fmt.Sprintf("q1-%d/%03d", n, seq)
				m, err := d.exchangeErr(ctx, &mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: id, MsgID: uint16(seq + 1), Data: []byte(payload)}, isPuback(uint16(seq+1)))
				if err != nil {
					t.Errorf("%s: %v", payload, err)
					return
				}
				if pa := m.(*mqttsn.Puback); pa.ReturnCode != mqttsn.Accepted {
					t.Errorf("%s: PUBACK %v (a topic id registered before the restart must stay valid)", payload, pa.ReturnCode)
					return
				}
				ack(payload, false)
				progress[n].Add(1)
			}
		}()
	}
	q2 := newRawDev(t, gw)
	q2.connect(t, "q2", 60)
	q2id := q2.register(t, "k9/q2")
	wg.Add(1)
	go func() {
		defer wg.Done()
		held := false
		for seq := range q2Msgs {
			if seq == q2Msgs/2 && !held {
				// Unpaced, this device could finish before the freeze:
				// half-way it waits for it, so one exchange is always held.
				select {
				case <-freeze:
				case <-ctx.Done():
					return
				}
			}
			payload := fmt.Sprintf("q2/%03d", seq)
			msgID := uint16(seq + 1)
			pub := &mqttsn.Publish{Flags: mqttsn.Flags{QoS: 2}, TopicID: q2id, MsgID: msgID, Data: []byte(payload)}
			if _, err := q2.exchangeErr(ctx, pub, isPubrec(msgID)); err != nil {
				t.Errorf("%s: %v", payload, err)
				return
			}
			select {
			case <-freeze:
				if !held {
					held = true
					close(frozen)
					select {
					case <-thaw:
					case <-ctx.Done():
						return
					}
					// As if the PUBREC had been lost: PUBLISH again, with
					// DUP. The restarted gateway must answer without
					// publishing it a second time.
					if _, err := q2.exchangeErr(ctx, pub, isPubrec(msgID)); err != nil {
						t.Errorf("%s after the restart: %v", payload, err)
						return
					}
				}
			default:
			}
			if _, err := q2.exchangeErr(ctx, &mqttsn.Pubrel{MsgID: msgID}, isPubcomp(msgID)); err != nil {
				t.Errorf("%s: %v", payload, err)
				return
			}
			ack(payload, true)
			progress[2].Add(1)
		}
	}()

	waitCond(t, "traffic under way", func() bool {
		return progress[0].Load() >= 15 && progress[1].Load() >= 15 && progress[2].Load() >= 5
	})
	close(freeze)
	waitCond(t, "the QoS 2 device holding a PUBREC'ed MsgId", func() bool {
		select {
		case <-frozen:
			return true
		default:
			return false
		}
	})

	// A device with a will and a keepalive of 2 s that goes silent now.
	l := newRawDev(t, gw)
	l.send(t, &mqttsn.Connect{Flags: mqttsn.Flags{Will: true}, Duration: 2, ClientID: "mortal"})
	l.expect(t, func(m mqttsn.Message) bool { _, ok := m.(*mqttsn.WillTopicReq); return ok })
	l.send(t, &mqttsn.WillTopic{Flags: mqttsn.Flags{QoS: 1}, Topic: "will/mortal"})
	l.expect(t, func(m mqttsn.Message) bool { _, ok := m.(*mqttsn.WillMsgReq); return ok })
	l.send(t, &mqttsn.WillMsg{WillMsg: []byte("died while the gateway was down")})
	l.expect(t, isConnack)
	lastHeard := time.Now()
	settled("the sessions committed", nil)

	before := [3]int32{progress[0].Load(), progress[1].Load(), progress[2].Load()}
	if err := r.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	err := <-r.exited
	r.exited <- err
	waitCond(t, "mortal's keepalive to run out (1.5 × 2 s)", func() bool { return time.Since(lastHeard) > 3500*time.Millisecond })

	r2 := startBinary(t, bin, "run", "--config", cfgFile)
	r2.waitLog(t, "connected to broker")
	r2.waitLog(t, `"active": 3, "asleep": 1, "disconnected": 0, "lost_while_down": 1`)
	close(thaw)
	wills.Expect(t, 10*time.Second, "will/mortal", "died while the gateway was down")

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("traffic did not end; progress %d %d %d", progress[0].Load(), progress[1].Load(), progress[2].Load())
	}
	if t.Failed() {
		return
	}
	t.Logf("acknowledged before the kill: q1-0 %d, q1-1 %d, q2 %d; in all %d %d %d",
		before[0], before[1], before[2], progress[0].Load(), progress[1].Load(), progress[2].Load())
	for i, n := range before {
		if n == 0 || progress[i].Load() == n {
			t.Fatalf("device %d: %d messages before the kill, %d in all: the kill was not during its traffic", i, n, progress[i].Load())
		}
	}

	// The sleeper wakes and gets what was buffered before the kill.
	s.send(t, &mqttsn.Pingreq{ClientID: "sleeper"})
	for i := 1; i <= 3; i++ {
		m := s.expect(t, func(m mqttsn.Message) bool { _, ok := m.(*mqttsn.Publish); return ok }).(*mqttsn.Publish)
		if want := fmt.Sprintf("z%d", i); string(m.Data) != want {
			t.Fatalf("buffered message %q, want %q", m.Data, want)
		}
		s.send(t, &mqttsn.Puback{TopicID: m.TopicID, MsgID: m.MsgID, ReturnCode: mqttsn.Accepted})
	}
	s.expect(t, func(m mqttsn.Message) bool { _, ok := m.(*mqttsn.Pingresp); return ok })

	// Every acknowledged message at the subscriber; QoS 2 ones exactly once.
	got := map[string]int{}
	missing := func() int {
		n := 0
		for p := range acked {
			if got[p] == 0 {
				n++
			}
		}
		return n
	}
	for missing() > 0 {
		m := sub.Next(t, 10*time.Second)
		got[string(m.Payload)]++
	}
	sub.None(t, 500*time.Millisecond)
	dups := 0
	for _, n := range got {
		dups += n - 1
	}
	t.Logf("subscriber: %d distinct messages, %d QoS 1 duplicates", len(got), dups)
	for p := range q2done {
		if got[p] != 1 {
			t.Errorf("QoS 2 %s delivered %d times, want exactly once", p, got[p])
		}
	}
	if len(acked) != 2*q1Msgs+q2Msgs {
		t.Errorf("%d messages acknowledged, want %d", len(acked), 2*q1Msgs+q2Msgs)
	}
	wills.None(t, 500*time.Millisecond) // once
}

// rawDev is an MQTT-SN device on an unconnected UDP socket: the ICMP errors
// of a dead gateway do not reach it, it just retransmits, as a device on a
// radio link would.
type rawDev struct {
	c  *net.UDPConn
	gw *net.UDPAddr
}

func newRawDev(t *testing.T, gw *net.UDPAddr) *rawDev {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawDev{c: c, gw: gw}
}

func (d *rawDev) write(m mqttsn.Message) error {
	b, err := mqttsn.Append(nil, m)
	if err != nil {
		return err
	}
	_, err = d.c.WriteToUDP(b, d.gw)
	return err
}

func (d *rawDev) send(t *testing.T, m mqttsn.Message) {
	t.Helper()
	if err := d.write(m); err != nil {
		t.Fatal(err)
	}
}

// read returns the next message within wait, or nil.
func (d *rawDev) read(wait time.Duration) (mqttsn.Message, error) {
	buf := make([]byte, 2048)
	_ = d.c.SetReadDeadline(time.Now().Add(wait))
	n, _, err := d.c.ReadFromUDP(buf)
	if errors.Is(err, net.ErrClosed) {
		return nil, err
	}
	if err != nil {
		return nil, nil
	}
	m, err := mqttsn.Decode(buf[:n])
	if err != nil {
		return nil, fmt.Errorf("undecodable datagram % x: %w", buf[:n], err)
	}
	return m, nil
}

// exchangeErr sends m until an answer matching want arrives (retransmitting
// a PUBLISH with DUP), for at most 30 s; an unsolicited DISCONNECT (the
// gateway does not know the device) is an error.
func (d *rawDev) exchangeErr(ctx context.Context, m mqttsn.Message, want func(mqttsn.Message) bool) (mqttsn.Message, error) {
	deadline := time.Now().Add(30 * time.Second)
	for first := true; time.Now().Before(deadline); first = false {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if p, ok := m.(*mqttsn.Publish); ok && !first {
			dup := *p
			dup.Flags.DUP = true
			m = &dup
		}
		if err := d.write(m); err != nil {
			return nil, err
		}
		retry := time.Now().Add(300 * time.Millisecond)
		for time.Now().Before(retry) {
			got, err := d.read(time.Until(retry))
			if err != nil {
				return nil, err
			}
			switch {
			case got == nil:
			case want(got):
				return got, nil
			default:
				if _, ok := got.(*mqttsn.Disconnect); ok {
					return nil, fmt.Errorf("unsolicited DISCONNECT answering %T: the gateway lost the session", m)
				}
				// an answer to an earlier retransmission: ignore
			}
		}
	}
	return nil, fmt.Errorf("no answer to %T within 30s", m)
}

func (d *rawDev) exchange(t *testing.T, m mqttsn.Message, want func(mqttsn.Message) bool) mqttsn.Message {
	t.Helper()
	got, err := d.exchangeErr(context.Background(), m, want)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// expect waits for a message matching want, failing after 10 s.
func (d *rawDev) expect(t *testing.T, want func(mqttsn.Message) bool) mqttsn.Message {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		m, err := d.read(time.Until(deadline))
		if err != nil {
			t.Fatal(err)
		}
		if m != nil && want(m) {
			return m
		}
		if m != nil {
			t.Fatalf("got %T %+v", m, m)
		}
	}
	t.Fatal("no answer within 10s")
	return nil
}

func (d *rawDev) connect(t *testing.T, id string, duration uint16) {
	t.Helper()
	m := d.exchange(t, &mqttsn.Connect{Duration: duration, ClientID: id}, isConnack)
	if ca := m.(*mqttsn.Connack); ca.ReturnCode != mqttsn.Accepted {
		t.Fatalf("%s: CONNACK %v", id, ca.ReturnCode)
	}
}

func (d *rawDev) register(t *testing.T, topic string) uint16 {
	t.Helper()
	m := d.exchange(t, &mqttsn.Register{MsgID: 0xFFF0, TopicName: topic}, func(m mqttsn.Message) bool {
		ra, ok := m.(*mqttsn.Regack)
		return ok && ra.MsgID == 0xFFF0
	})
	if ra := m.(*mqttsn.Regack); ra.ReturnCode != mqttsn.Accepted {
		t.Fatalf("REGACK %v", ra.ReturnCode)
	}
	return m.(*mqttsn.Regack).TopicID
}

func isConnack(m mqttsn.Message) bool { _, ok := m.(*mqttsn.Connack); return ok }

func isSuback(id uint16) func(mqttsn.Message) bool {
	return func(m mqttsn.Message) bool { sa, ok := m.(*mqttsn.Suback); return ok && sa.MsgID == id }
}

func isPuback(id uint16) func(mqttsn.Message) bool {
	return func(m mqttsn.Message) bool { pa, ok := m.(*mqttsn.Puback); return ok && pa.MsgID == id }
}

func isPubrec(id uint16) func(mqttsn.Message) bool {
	return func(m mqttsn.Message) bool { pr, ok := m.(*mqttsn.Pubrec); return ok && pr.MsgID == id }
}

func isPubcomp(id uint16) func(mqttsn.Message) bool {
	return func(m mqttsn.Message) bool { pc, ok := m.(*mqttsn.Pubcomp); return ok && pc.MsgID == id }
}

// scrapeMetric reads one sample of the gateway's /metrics (name and a label
// set containing labels); -1 when it cannot.
func scrapeMetric(url, name, labels string) float64 {
	resp, err := http.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") || !strings.Contains(line, labels) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return -1
		}
		return v
	}
	return -1
}
