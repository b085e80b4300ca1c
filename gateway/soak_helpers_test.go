package gateway

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/mqttsn"
)

// Helpers of soak_broker_test.go: a Mosquitto that persists what it
// acknowledged, a subscriber with a persistent session on it, MQTT-SN devices
// that publish QoS 1 at a steady rate through the gateway, the record of what
// each device was told (faultLedger) and of what the subscriber got
// (faultTally).

// faultMosquittoConf is what Mosquitto (2.0) needs so that a message it
// acknowledged survives its own SIGKILL, beside a subscriber that keeps a
// persistent session (clean session false, QoS 1):
//
//   - persistence true and a persistence_location: without them a restart
//     forgets the subscriber's session, and with it what it held;
//   - autosave_on_changes true with autosave_interval 1: the in-memory
//     database is saved after every main-loop iteration that changed it
//     (a message queued for a subscriber, a subscription, a retained message).
//     The default (a save every 1800 s, and on a clean exit) keeps nothing of
//     the last half hour across a crash. Mosquitto writes mosquitto.db.new,
//     fsyncs and renames it, so a crash during a save leaves the last one;
//   - max_queued_messages 0 (no limit; or more than an outage can bring): past
//     the limit Mosquitto drops a subscriber's QoS 1 messages without a word
//     (the default is 1000).
//
// Even so Mosquitto acknowledges before it saves (mosquitto 2.0.11,
// src/handle_publish.c, src/loop.c): PUBACK goes out while it handles the
// PUBLISH, the save comes at the end of that loop iteration (a rewrite of the
// whole file and an fsync), and a message written straight to a connected
// subscriber (in flight, within max_inflight_messages) changes nothing to
// save until a later change. A SIGKILL in between loses the acknowledged
// messages the subscriber had not received yet. The kill tests read from the
// broker's log which messages were in that window (mosquittoUnsaved) and count
// the ones lost there as Mosquitto's loss, not the gateway's.
func faultMosquittoConf(dir string) string {
	return fmt.Sprintf(`persistence true
persistence_location %s/
autosave_on_changes true
autosave_interval 1
max_queued_messages 0
`, dir)
}

// brokerFaultScale is one run of a broker fault test.
type brokerFaultScale struct {
	devices int           // MQTT-SN devices, each publishing on its own topic
	every   time.Duration // each device's publish period: a steady rate
	outage  time.Duration // how long the broker is away
	// settle is how many messages each device must have had acknowledged
	// before the fault, and again after the broker is back, before the run
	// goes on.
	settle int
	// max bounds the messages of one device.
	max int
}

func (s brokerFaultScale) String() string {
	return fmt.Sprintf("%d devices × 1 QoS 1 message per %v, outage %v", s.devices, s.every, s.outage)
}

// faultPhase is where a run stands when a device's publish returns.
type faultPhase int32

const (
	phaseBefore faultPhase = iota // the broker up, before the fault
	phaseAway                     // the broker killed or stopped
	phaseBack                     // the broker restarted
	nPhases
)

func (p faultPhase) String() string {
	return [...]string{"before", "away", "back"}[p]
}

// brokerFaultEnv is a persistent Mosquitto, a subscriber "watch" with a
// persistent QoS 1 session on root/#, and a gateway with an MQTT-SN listener,
// with or without a durable store.
type brokerFaultEnv struct {
	b    *mosquittotest.Broker
	g    *runningGateway
	addr string
	root string
	sub  *mosquittotest.Sub
}

func startBrokerFault(t *testing.T, root string, withStore bool) *brokerFaultEnv {
	t.Helper()
	b := mosquittotest.Start(t, mosquittotest.Options{Users: brokerUser, Extra: faultMosquittoConf(t.TempDir())})
	// The subscriber stays connected: while the broker is away mosquitto_sub
	// retries every second and, once it is back, resumes its session, which
	// the broker restored from its file with the messages saved for it;
	// what the gateway publishes meanwhile is queued in that session.
	sub := b.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1,
		Topics: []string{root + "/#"}, ClientID: "watch-" + strings.ReplaceAll(root, "/", "-"), CleanSession: false})
	storeTOML := ""
	if withStore {
		storeTOML = fmt.Sprintf("[store]\ndir = %q\n", t.TempDir())
	}
	g := startGateway(t, upstreamTOML(b)+storeTOML+`
[[listener]]
name = "sn"
type = "mqttsn"
bind = "127.0.0.1:0"
[listener.mqttsn]
retry_interval = "200ms"
max_retries = 3
`)
	return &brokerFaultEnv{b: b, g: g, addr: g.ListenerAddr("sn").String(), root: root, sub: sub}
}

// faultLedger is what the devices were told: each acknowledged message with
// the phase it was acknowledged in, and the refusals (congestion) and
// publishes that got no answer, by phase.
type faultLedger struct {
	phase atomic.Int32 // faultPhase

	mu       sync.Mutex
	acked    []map[int]faultPhase // [device] seq → phase
	ackedN   [][nPhases]int       // [device][phase]
	refused  [nPhases]int         // PUBACK "rejected: congestion"
	noAnswer [nPhases]int         // no PUBACK after the client's retries
}

func newFaultLedger(devices int) *faultLedger {
	l := &faultLedger{ackedN: make([][nPhases]int, devices)}
	for range devices {
		l.acked = append(l.acked, map[int]faultPhase{})
	}
	return l
}

func (l *faultLedger) set(p faultPhase) { l.phase.Store(int32(p)) }

// record counts the result of device dev's publish of seq; it returns err when
// the result is none of acknowledged, congestion and no answer.
func (l *faultLedger) record(dev, seq int, err error) error {
	p := faultPhase(l.phase.Load())
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil:
		l.acked[dev][seq] = p
		l.ackedN[dev][p]++
	case snIsCode(err, mqttsn.Congestion):
		l.refused[p]++
	case errors.Is(err, mqttsn.ErrNoResponse):
		l.noAnswer[p]++
	default:
		return err
	}
	return nil
}

// each reports whether every device has at least n messages acknowledged in
// phase p.
func (l *faultLedger) each(p faultPhase, n int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.ackedN {
		if c[p] < n {
			return false
		}
	}
	return true
}

// totals are the acknowledged messages by phase.
func (l *faultLedger) totals() (acked [nPhases]int, all int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.ackedN {
		for p, n := range c {
			acked[p] += n
			all += n
		}
	}
	return acked, all
}

// faultDevices runs the devices of a run: each connects, then publishes QoS 1
// messages 0, 1, 2, … on lossyTopic(root, dev), one per period (a message that
// takes longer delays the next; ticks are not made up), until stop or
// scale.max, and records each result in the ledger.
type faultDevices struct {
	stopCh chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
	errs   chan error
}

func startFaultDevices(t *testing.T, env *brokerFaultEnv, scale brokerFaultScale, l *faultLedger) *faultDevices {
	t.Helper()
	fd := &faultDevices{stopCh: make(chan struct{}), errs: make(chan error, scale.devices)}
	clients := make([]*mqttsn.Client, scale.devices)
	for i := range clients {
		c, err := mqttsn.Dial(context.Background(), env.addr, mqttsn.ClientOptions{
			ClientID:      fmt.Sprintf("fault-%03d", i),
			CleanSession:  true,
			RetryInterval: 500 * time.Millisecond,
			MaxRetries:    10,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Connect(snCtx(t)); err != nil {
			t.Fatalf("fault-%03d: connect: %v", i, err)
		}
		clients[i] = c
	}
	for i, c := range clients {
		fd.wg.Go(func() {
			tick := time.NewTicker(scale.every)
			defer tick.Stop()
			for seq := range scale.max {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				err := c.Publish(ctx, lossyTopic(env.root, i), mqttsn.QoS1, false, []byte(lossyPayload(i, seq)))
				cancel()
				if err := l.record(i, seq, err); err != nil {
					fd.errs <- fmt.Errorf("%s: %w", lossyPayload(i, seq), err)
					return
				}
				select {
				case <-fd.stopCh:
					return
				case <-tick.C:
				}
			}
		})
	}
	t.Cleanup(fd.stop)
	return fd
}

// stop ends the devices' loops (each finishes the publish under way) and
// waits for them.
func (fd *faultDevices) stop() {
	fd.once.Do(func() { close(fd.stopCh) })
	fd.wg.Wait()
}

// check fails the test on a device's unexpected error.
func (fd *faultDevices) check(t *testing.T) {
	t.Helper()
	select {
	case err := <-fd.errs:
		t.Fatalf("device: %v", err)
	default:
	}
}

// faultTally is what the subscriber got: the copies of each message and each
// device's first copies in the order they arrived.
type faultTally struct {
	root   string
	copies []map[int]int // [device] seq → copies
	firsts [][]int       // [device] seqs, first copies in arrival order
	total  int
	dups   []string
}

func newFaultTally(root string, devices int) *faultTally {
	ft := &faultTally{root: root, firsts: make([][]int, devices)}
	for range devices {
		ft.copies = append(ft.copies, map[int]int{})
	}
	return ft
}

// add counts one delivery; a message that no device published is an error.
func (ft *faultTally) add(m mosquittotest.Message) error {
	var dev, seq int
	if _, err := fmt.Sscanf(string(m.Payload), "dev-%d/%d", &dev, &seq); err != nil ||
		dev < 0 || dev >= len(ft.copies) || seq < 0 ||
		m.Topic != lossyTopic(ft.root, dev) || string(m.Payload) != lossyPayload(dev, seq) {
		return fmt.Errorf("unexpected message at the subscriber: %v", m)
	}
	ft.total++
	ft.copies[dev][seq]++
	if n := ft.copies[dev][seq]; n > 1 {
		ft.dups = append(ft.dups, fmt.Sprintf("%s (copy %d)", m.Payload, n))
		return nil
	}
	ft.firsts[dev] = append(ft.firsts[dev], seq)
	return nil
}

func (ft *faultTally) distinct() int {
	n := 0
	for _, c := range ft.copies {
		n += len(c)
	}
	return n
}

// faultMsg is a device's acknowledged message.
type faultMsg struct {
	dev, seq int
	phase    faultPhase // acknowledged in
}

func (m faultMsg) String() string {
	return fmt.Sprintf("%s (acknowledged %v)", lossyPayload(m.dev, m.seq), m.phase)
}

// missing lists the acknowledged messages that have not arrived.
func (ft *faultTally) missing(l *faultLedger) []faultMsg {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []faultMsg
	for dev, acked := range l.acked {
		for _, seq := range slices.Sorted(maps.Keys(acked)) {
			if ft.copies[dev][seq] == 0 {
				out = append(out, faultMsg{dev, seq, acked[seq]})
			}
		}
	}
	return out
}

// mosquittoUnsaved reads the log of a Mosquitto that was SIGKILLed
// (log_type all; line buffered, so it holds every line written before the
// kill). Of the PUBLISHes on topic it received from the gateway, counted from
// 0, it returns those it acknowledged after the start of its last completed
// database save: a crash lost them unless the subscriber had them. A save is
// complete once a line follows its "Saving" line: the broker logs and saves
// on one thread.
func mosquittoUnsaved(log, topic string) (unsaved []int) {
	const gw = "mqttgw-gwtest"
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	saved := -1 // the line of the last completed save
	for i, ln := range lines[:len(lines)-1] {
		if strings.Contains(ln, "Saving in-memory database") {
			saved = i
		}
	}
	acks := map[string]int{} // "Sending PUBACK to gw (mN," → the PUBLISH's number
	received := 0
	for i, ln := range lines {
		switch {
		case strings.Contains(ln, "Received PUBLISH from "+gw+" (") && strings.Contains(ln, "'"+topic+"'"):
			if _, rest, ok := strings.Cut(ln, ", m"); ok {
				if mid, _, ok := strings.Cut(rest, ","); ok {
					acks["Sending PUBACK to "+gw+" (m"+mid+","] = received
				}
			}
			received++
		case strings.Contains(ln, "Sending PUBACK to "+gw+" (m"):
			key, _, _ := strings.Cut(ln[strings.Index(ln, "Sending"):], " rc")
			if k, ok := acks[key]; ok {
				delete(acks, key)
				if i > saved {
					unsaved = append(unsaved, k)
				}
			}
		}
	}
	return unsaved
}

// brokerCounts counts, in Mosquitto's log, the PUBLISHes on topic it received
// from the gateway and those it sent to the subscriber.
func brokerCounts(log, topic string) (received, sent int) {
	for ln := range strings.Lines(log) {
		if !strings.Contains(ln, "'"+topic+"'") {
			continue
		}
		switch {
		case strings.Contains(ln, "Received PUBLISH from mqttgw-gwtest ("):
			received++
		case strings.Contains(ln, "Sending PUBLISH to watch-"):
			sent++
		}
	}
	return received, sent
}

// deviceTotal is the copies of device dev's messages the subscriber got.
func (ft *faultTally) deviceTotal(dev int) int {
	n := 0
	for _, c := range ft.copies[dev] {
		n += c
	}
	return n
}

// brokerTrail is what Mosquitto logged (log_type all) about topic in log,
// from the third last PUBLISH it received on it from the gateway (after: from
// the first, of three): those
// PUBLISHes, their PUBACKs to the gateway, the PUBLISHes on topic to the
// subscriber, and the database saves ("Saving" is logged when a save starts).
// For a lost message it shows whether the broker acknowledged it, passed it on
// and saved after it before it went away.
func brokerTrail(log, topic string, after bool) string {
	const gw = "mqttgw-gwtest" // the gateway's client id: mqttgw-<gateway.id>
	lines := strings.Split(log, "\n")
	var starts []int
	for i, ln := range lines {
		if strings.Contains(ln, "Received PUBLISH from "+gw+" (") && strings.Contains(ln, "'"+topic+"'") {
			starts = append(starts, i)
		}
	}
	if len(starts) == 0 {
		return "\tnothing received on " + topic
	}
	if !after {
		starts = starts[max(0, len(starts)-3):]
	} else {
		starts = starts[:min(len(starts), 3)]
	}
	var mids []string // "(m52,"
	for _, i := range starts {
		if _, rest, ok := strings.Cut(lines[i], ", m"); ok {
			if mid, _, ok := strings.Cut(rest, ","); ok {
				mids = append(mids, "Sending PUBACK to "+gw+" (m"+mid+",")
			}
		}
	}
	var out []string
	saveDue := false // a line was kept: keep the next save's
	for _, ln := range lines[starts[0]:] {
		keep := strings.Contains(ln, "'"+topic+"'") || strings.Contains(ln, "terminating")
		for _, m := range mids {
			keep = keep || strings.Contains(ln, m)
		}
		if strings.Contains(ln, "Saving in-memory database") {
			keep, saveDue = saveDue, false
		} else if keep {
			saveDue = true
		}
		if keep {
			out = append(out, "\t"+ln)
		}
	}
	out = head(out, 30)
	for i := len(lines) - 1; i >= 0; i-- {
		if lines[i] != "" {
			out = append(out, "\tthe log's last line: "+lines[i])
			break
		}
	}
	return strings.Join(out, "\n")
}

// disorder lists, per device, the acknowledged messages whose first copy
// arrived after that of a later acknowledged one; loose counts the first
// copies that arrived though the device was not acknowledged (refused or no
// answer: the broker may have taken them).
func (ft *faultTally) disorder(l *faultLedger) (out []string, loose int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for dev, firsts := range ft.firsts {
		last := -1
		for _, seq := range firsts {
			if _, ok := l.acked[dev][seq]; !ok {
				loose++
				continue
			}
			if seq < last {
				out = append(out, fmt.Sprintf("%s arrived after %s", lossyPayload(dev, seq), lossyPayload(dev, last)))
			}
			last = max(last, seq)
		}
	}
	return out, loose
}
