package gateway

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

// Issue 10, what must hold when the broker fails: MQTT-SN devices publish QoS
// 1 at a steady rate through the gateway while Mosquitto is SIGKILLed and
// restarted (BrokerKill), or stopped, left away and restarted (BrokerAway).
// Every message a device got a PUBACK for reaches a subscriber that keeps a
// persistent QoS 1 session, on a Mosquitto configured to save what it
// acknowledged (faultMosquittoConf); each device's acknowledged messages
// arrive in order (first copies); duplicates, which QoS 1 allows, are counted
// and logged, as are the messages that arrived although the device was
// refused them.
//
// Mosquitto itself acknowledges a little before it saves: after a SIGKILL the
// run counts, from the broker's own log, the acknowledged messages it lost in
// that window, and fails on any other loss (faultMosquittoConf says more).
//
// With a store the gateway acknowledges what it committed while the broker is
// away and replays it once the broker is back: devices get no congestion.
// Without one they get congestion while the broker is away, and what was
// acknowledged is still not lost.
//
// The short tests run with every `go test`; the Soak ones (100 devices, an
// outage of 5 s after a kill and of 30 s after a stop) with MQTTGW_SOAK=1,
// `make soak`.

var (
	brokerKillShort = brokerFaultScale{devices: 10, every: 50 * time.Millisecond, outage: 2 * time.Second, settle: 5, max: 1000}
	brokerAwayShort = brokerFaultScale{devices: 10, every: 50 * time.Millisecond, outage: 3 * time.Second, settle: 5, max: 1000}
	brokerKillSoak  = brokerFaultScale{devices: 100, every: 100 * time.Millisecond, outage: 5 * time.Second, settle: 20, max: 2000}
	brokerAwaySoak  = brokerFaultScale{devices: 100, every: 100 * time.Millisecond, outage: 30 * time.Second, settle: 20, max: 2000}
)

// TestBrokerKillMQTTSNStore: Mosquitto SIGKILLed and restarted, the gateway
// with a store: nothing acknowledged lost, no congestion.
func TestBrokerKillMQTTSNStore(t *testing.T) { testBrokerFault(t, faultKill, true, brokerKillShort) }

// TestBrokerKillMQTTSNNoStore: the same without a store: congestion while the
// broker is away, nothing acknowledged lost.
func TestBrokerKillMQTTSNNoStore(t *testing.T) { testBrokerFault(t, faultKill, false, brokerKillShort) }

// TestBrokerAwayMQTTSNStore: Mosquitto stopped, away, restarted, the gateway
// with a store: what the store acknowledged meanwhile is replayed, in order.
func TestBrokerAwayMQTTSNStore(t *testing.T) { testBrokerFault(t, faultStop, true, brokerAwayShort) }

func TestSoakBrokerKillMQTTSNStore(t *testing.T) {
	soakOnly(t)
	testBrokerFault(t, faultKill, true, brokerKillSoak)
}

func TestSoakBrokerKillMQTTSNNoStore(t *testing.T) {
	soakOnly(t)
	testBrokerFault(t, faultKill, false, brokerKillSoak)
}

func TestSoakBrokerAwayMQTTSNStore(t *testing.T) {
	soakOnly(t)
	testBrokerFault(t, faultStop, true, brokerAwaySoak)
}

// brokerFault is how the broker goes away.
type brokerFault int

const (
	faultKill brokerFault = iota // SIGKILL: a crash, it saves nothing on the way out
	faultStop                    // SIGTERM: it saves its database and exits
)

func (f brokerFault) String() string { return [...]string{"kill", "stop"}[f] }

// Bounds of the waits of a run, far above what they take.
const (
	faultSettleBound  = 2 * time.Minute // devices acknowledged scale.settle messages
	faultReplayBound  = 5 * time.Minute // the store replayed
	faultDeliverBound = 2 * time.Minute // every acknowledged message at the subscriber
)

func testBrokerFault(t *testing.T, fault brokerFault, withStore bool, scale brokerFaultScale) {
	kind := "nostore"
	if withStore {
		kind = "store"
	}
	root := fmt.Sprintf("fault/%s-%s", fault, kind)
	env := startBrokerFault(t, root, withStore)
	l := newFaultLedger(scale.devices)
	ft := newFaultTally(root, scale.devices)
	storeLen := func() int {
		if !withStore {
			return 0
		}
		n, _ := env.g.store.Queue().Len()
		return n
	}
	progress := func() string {
		_, acked := l.totals()
		return fmt.Sprintf("%d acknowledged, %d distinct at the subscriber, store %d, broker connected %t",
			acked, ft.distinct(), storeLen(), env.g.proxy.Connected())
	}
	// read takes what the subscriber got within d, and what follows at once
	// (a bounded burst, so that the caller gets to check its condition).
	read := func(d time.Duration) {
		m, ok := env.sub.Poll(t, d)
		for n := 0; ok && n < 1000; n++ {
			if err := ft.add(m); err != nil {
				t.Fatal(err)
			}
			m, ok = env.sub.Poll(t, time.Millisecond)
		}
		if ok {
			if err := ft.add(m); err != nil {
				t.Fatal(err)
			}
		}
	}
	var devs *faultDevices
	// until reads the subscriber while it waits for cond, at most bound, and
	// returns how long it waited.
	until := func(bound time.Duration, what string, cond func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !cond() {
			devs.check(t)
			if time.Since(start) > bound {
				t.Fatalf("%s: not within %v (%s)", what, bound, progress())
			}
			read(10 * time.Millisecond)
		}
		return time.Since(start)
	}

	start := time.Now()
	devs = startFaultDevices(t, env, scale, l)
	warm := until(faultSettleBound, fmt.Sprintf("every device acknowledged %d messages", scale.settle),
		func() bool { return l.each(phaseBefore, scale.settle) })

	// The fault. The devices go on publishing for the outage, which is the
	// test's premise: a deadline, read through like every other wait.
	metric := func(name string, labels ...string) float64 { return env.g.Metrics().Get(name, labels...) }
	errsBefore := metric("mqttgw_upstream_publish_errors_total")
	l.set(phaseAway)
	switch fault {
	case faultKill:
		env.b.Kill()
	case faultStop:
		env.b.Stop()
	}
	away := time.Now()
	beforeLog := env.b.Log() // complete: the broker's log is line buffered
	until(scale.outage+time.Minute, "the outage", func() bool { return time.Since(away) >= scale.outage })
	env.b.Restart()
	l.set(phaseBack)
	back := until(faultSettleBound, fmt.Sprintf("every device acknowledged %d messages after the restart", scale.settle),
		func() bool { return l.each(phaseBack, scale.settle) })

	devs.stop()
	devs.check(t)
	stopped := time.Now()
	until(faultReplayBound, "the store to be replayed", func() bool { return storeLen() == 0 })

	// Mosquitto's own loss (faultMosquittoConf): after a SIGKILL, a message it
	// acknowledged after the start of its last completed save and had not
	// delivered is gone. Its log shows which: when no publish failed before
	// the kill the gateway sent each device's messages once and in order, so
	// the broker's k-th PUBLISH on a device's topic was message k-1.
	type devSeq struct{ dev, seq int }
	unsaved := map[devSeq]bool{} // acknowledged by Mosquitto, not saved
	if fault == faultKill && errsBefore == 0 {
		for dev := range scale.devices {
			for _, seq := range mosquittoUnsaved(beforeLog, lossyTopic(root, dev)) {
				unsaved[devSeq{dev, seq}] = true
			}
		}
	}
	unexplained := func() (out []faultMsg) {
		for _, m := range ft.missing(l) {
			if !unsaved[devSeq{m.dev, m.seq}] {
				out = append(out, m)
			}
		}
		return out
	}
	deadline := time.Now().Add(faultDeliverBound)
	for missing := unexplained(); len(missing) > 0; missing = unexplained() {
		if time.Now().After(deadline) {
			logMissing(t, missing, root, beforeLog, env.b.Log()[len(beforeLog):], l, ft)
			t.Fatalf("%d acknowledged messages not at the subscriber after %v (%s; publish errors before the fault: %v)",
				len(missing), faultDeliverBound, progress(), errsBefore)
		}
		read(10 * time.Millisecond)
	}
	drained := time.Since(stopped)
	// Late copies: everything the broker holds for the subscriber comes before
	// a message published after it.
	env.b.Publish(t, mosquittotest.PubOptions{Username: "reader", Password: "reader-secret",
		Topic: root + "/end", Payload: []byte("end"), QoS: 1})
	for {
		m := env.sub.Next(t, 30*time.Second)
		if m.Topic == root+"/end" {
			break
		}
		if err := ft.add(m); err != nil {
			t.Fatal(err)
		}
	}
	window := len(unsaved)
	var lostByBroker []string
	for _, m := range ft.missing(l) { // all Mosquitto's now: the others arrived
		lostByBroker = append(lostByBroker, m.String())
	}

	perPhase, acked := l.totals()
	disorder, loose := ft.disorder(l)
	t.Logf("%v, broker %s, store %t: %v in all (until every device had %d acknowledged %v, outage %v, "+
		"back to %d acknowledged per device %v, all delivered %v after the devices stopped)",
		scale, fault, withStore, time.Since(start).Round(time.Millisecond), scale.settle, warm.Round(time.Millisecond),
		scale.outage, scale.settle, back.Round(time.Millisecond), drained.Round(time.Millisecond))
	t.Logf("devices: acknowledged %d (before %d, away %d, back %d); congestion before %d, away %d, back %d; no answer before %d, away %d, back %d",
		acked, perPhase[phaseBefore], perPhase[phaseAway], perPhase[phaseBack],
		l.refused[phaseBefore], l.refused[phaseAway], l.refused[phaseBack],
		l.noAnswer[phaseBefore], l.noAnswer[phaseAway], l.noAnswer[phaseBack])
	// The broker logs each PUBLISH it reads (log_type all, line buffered, so
	// a kill loses no line): what it got beyond the distinct messages the
	// gateway sent again.
	received := strings.Count(env.b.Log(), "Received PUBLISH from mqttgw-gwtest (d0, q1, r0, m") // not the status topic: r1
	t.Logf("subscriber: %d of %d acknowledged delivered, and %d the devices were not acknowledged; %d copies, %d duplicates %v",
		acked-len(lostByBroker), acked, loose, ft.total, len(ft.dups), head(ft.dups, 20))
	t.Logf("broker: received %d device messages from the gateway, %d more than the distinct %d delivered; saved its database %d times",
		received, received-ft.distinct(), ft.distinct(), strings.Count(env.b.Log(), "Saving in-memory database"))
	if fault == faultKill {
		t.Logf("broker: at its SIGKILL it had acknowledged %d device messages after the start of its last completed save (publish errors before: %v); "+
			"%d of them it lost (acknowledged, neither saved nor delivered): %v", window, errsBefore, len(lostByBroker), lostByBroker)
	}
	t.Logf("gateway: upstream published %v, stored %v, publish errors %v, unavailable %v; MQTT-SN congestion %v, duplicates %v",
		metric("mqttgw_upstream_published_total"), metric("mqttgw_upstream_stored_total"),
		metric("mqttgw_upstream_publish_errors_total"), metric("mqttgw_upstream_unavailable_total"),
		metric("mqttgw_mqttsn_refused_total", "listener", "sn", "reason", "congestion"),
		metric("mqttgw_mqttsn_duplicates_total", "listener", "sn"))

	if len(disorder) > 0 {
		t.Errorf("%d acknowledged messages out of their device's order: %v", len(disorder), head(disorder, 20))
	}
	refused := l.refused[phaseBefore] + l.refused[phaseAway] + l.refused[phaseBack]
	switch {
	case withStore && perPhase[phaseAway] == 0:
		t.Errorf("no message acknowledged while the broker was away: the store took none")
	case withStore && refused > 0:
		t.Errorf("%d publishes refused with congestion, with a store that was never full", refused)
	case !withStore && l.refused[phaseAway] == 0:
		t.Errorf("no congestion while the broker was away, without a store")
	}
}

// TestMosquittoUnsaved: of the PUBLISHes on a topic, those acknowledged after
// the start of the last save that completed (a line follows it) are unsaved;
// a save the kill interrupted (the last line) does not count.
func TestMosquittoUnsaved(t *testing.T) {
	const log = `10:00:00: Received PUBLISH from mqttgw-gwtest (d0, q1, r0, m1, 'x/dev-000', ... (13 bytes))
10:00:00: Sending PUBACK to mqttgw-gwtest (m1, rc0)
10:00:00: Saving in-memory database to /tmp/mosquitto.db.
10:00:00: Received PUBLISH from mqttgw-gwtest (d0, q1, r0, m2, 'x/dev-001', ... (13 bytes))
10:00:00: Sending PUBACK to mqttgw-gwtest (m2, rc0)
10:00:00: Saving in-memory database to /tmp/mosquitto.db.
10:00:00: Received PUBLISH from mqttgw-gwtest (d0, q1, r0, m3, 'x/dev-000', ... (13 bytes))
10:00:00: Sending PUBLISH to watch-x (d0, q1, r0, m9, 'x/dev-000', ... (13 bytes))
10:00:00: Sending PUBACK to mqttgw-gwtest (m3, rc0)
10:00:00: Received PUBLISH from mqttgw-gwtest (d0, q1, r0, m4, 'x/dev-000', ... (13 bytes))
10:00:00: Saving in-memory database to /tmp/mosquitto.db.
`
	for _, tc := range []struct {
		topic   string
		unsaved []int
	}{
		{"x/dev-000", []int{1}}, // m1 saved; m3 acknowledged after the last completed save; m4 not acknowledged
		{"x/dev-001", nil},      // m2 saved by the save after it, which completed
		{"x/dev-002", nil},
	} {
		if got := mosquittoUnsaved(log, tc.topic); fmt.Sprint(got) != fmt.Sprint(tc.unsaved) {
			t.Errorf("%s: unsaved %v, want %v", tc.topic, got, tc.unsaved)
		}
	}
}

// logMissing logs the missing messages and, for the first few, what the
// broker's log says about their devices' topics before and after the fault.
func logMissing(t *testing.T, missing []faultMsg, root, beforeLog, afterLog string, l *faultLedger, ft *faultTally) {
	t.Helper()
	var list []string
	for _, m := range missing {
		list = append(list, m.String())
	}
	t.Logf("missing: %v", head(list, 40))
	for _, m := range missing[:min(len(missing), 5)] {
		topic := lossyTopic(root, m.dev)
		rb, sb := brokerCounts(beforeLog, topic)
		ra, sa := brokerCounts(afterLog, topic)
		t.Logf("%v: the broker received %d PUBLISHes on %s from the gateway and sent %d to the subscriber before the fault, %d and %d after; "+
			"the device had %d acknowledged, the subscriber %d distinct in %d copies; the broker's log before the fault:\n%s\nand after:\n%s",
			m, rb, topic, sb, ra, sa, len(l.acked[m.dev]), len(ft.copies[m.dev]), ft.deviceTotal(m.dev),
			brokerTrail(beforeLog, topic, false), brokerTrail(afterLog, topic, true))
	}
}
