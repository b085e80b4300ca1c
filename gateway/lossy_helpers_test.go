package gateway

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/faultrelay"
	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

// lossyFaults are issue 10's lossy link, in both directions: 5 % loss, 10 %
// duplication, 20 % reordering. Hold (300 ms) is longer than the devices'
// retransmission interval (lossyRetry), so a held datagram is often overtaken
// by its own retransmission and arrives as a stale copy after it: the case
// that tries duplicate detection hardest.
var lossyFaults = faultrelay.Faults{Loss: 0.05, Duplicate: 0.10, Reorder: 0.20, Hold: 300 * time.Millisecond}

// lossyRetry is the devices' retransmission interval: MQTT-SN T_RETRY and the
// CoAP client's ACK_TIMEOUT (before its random factor of 1.5 and its doubling
// per retransmission, RFC 7252 §4.2). Short, so that a lost datagram costs a
// fraction of a second.
const lossyRetry = 200 * time.Millisecond

// lossyMaxRetries is the MQTT-SN client's N_RETRY. An attempt (a datagram and
// its answer) fails when either is lost: 1 − 0.95² ≈ 9.75 %. Counting as failed
// also every attempt with a held datagram on either leg (20 % each way, held
// past T_RETRY), it fails with at most 1 − 0.95²·0.8² ≈ 42 %. All 21 attempts
// of one exchange then fail with at most 0.42²¹ ≈ 1.2e-8, against about 10⁴
// exchanges in the soak run; an exchange lasts at most 21 × 200 ms = 4.2 s.
const lossyMaxRetries = 20

// lossyCoAPRetransmit is the CoAP client's MAX_RETRANSMIT. A held datagram is
// released by the retransmission that overtakes it, so only loss fails a CoAP
// attempt: 9 attempts all fail with 0.0975⁹ ≈ 8e-10. Since the client doubles
// its timeout each time (200–300 ms, then ×2), more would only stretch the
// worst case.
const lossyCoAPRetransmit = 8

// lossyScale is how many devices each publish how many messages.
type lossyScale struct{ devices, messages int }

var (
	// lossyShort runs in seconds, in every `go test`.
	lossyShort = lossyScale{devices: 5, messages: 40}
	// lossySoak runs with MQTTGW_SOAK=1 (make soak).
	lossySoak = lossyScale{devices: 100, messages: 100}
)

// soakOnly skips the test unless MQTTGW_SOAK is set.
func soakOnly(t *testing.T) {
	t.Helper()
	if os.Getenv("MQTTGW_SOAK") == "" {
		t.Skip("a soak run: set MQTTGW_SOAK=1 (make soak does)")
	}
}

// lossySeed is the relay's seed: MQTTGW_FAULT_SEED when set (to replay a
// failure), else def; a def of 0 means a new seed each run (soak runs, to
// explore). It is logged either way.
func lossySeed(t *testing.T, def int64) int64 {
	t.Helper()
	seed := def
	if s := os.Getenv("MQTTGW_FAULT_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("MQTTGW_FAULT_SEED=%q: %v", s, err)
		}
		seed = v
	} else if def == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("fault relay seed %d (replay with MQTTGW_FAULT_SEED=%d)", seed, seed)
	return seed
}

// startLossyRelay puts the fault relay with lossyFaults in front of target and
// logs its counters at the end.
func startLossyRelay(t *testing.T, target string, seed int64) *faultrelay.Relay {
	t.Helper()
	r := faultrelay.Start(t, faultrelay.Options{Target: target, Up: lossyFaults, Down: lossyFaults, Seed: seed})
	t.Cleanup(func() { t.Logf("fault relay, seed %d: %v", seed, r.Stats()) })
	return r
}

// lossyTopic and lossyPayload name message seq of device dev under root.
func lossyTopic(root string, dev int) string { return fmt.Sprintf("%s/dev-%03d", root, dev) }
func lossyPayload(dev, seq int) string       { return fmt.Sprintf("dev-%03d/%05d", dev, seq) }

// lossyTally counts what the subscriber got: copies per message, first
// deliveries out of a device's order.
type lossyTally struct {
	root              string
	devices, messages int
	seen              [][]int // [device][seq]: deliveries
	next              []int   // per device: the seq whose first delivery is due
	distinct, total   int
	dups              []string // "dev-003/00017 (copy 2)"
	disorder          []string
}

func newLossyTally(root string, s lossyScale) *lossyTally {
	tl := &lossyTally{root: root, devices: s.devices, messages: s.messages, next: make([]int, s.devices)}
	for range s.devices {
		tl.seen = append(tl.seen, make([]int, s.messages))
	}
	return tl
}

// add counts one delivery; an unexpected message is an error.
func (tl *lossyTally) add(m mosquittotest.Message) error {
	var dev, seq int
	if _, err := fmt.Sscanf(string(m.Payload), "dev-%d/%d", &dev, &seq); err != nil ||
		dev < 0 || dev >= tl.devices || seq < 0 || seq >= tl.messages ||
		m.Topic != lossyTopic(tl.root, dev) || string(m.Payload) != lossyPayload(dev, seq) {
		return fmt.Errorf("unexpected message at the subscriber: %v", m)
	}
	tl.total++
	tl.seen[dev][seq]++
	if n := tl.seen[dev][seq]; n > 1 {
		tl.dups = append(tl.dups, fmt.Sprintf("%s (copy %d)", m.Payload, n))
		return nil
	}
	tl.distinct++
	if seq != tl.next[dev] {
		tl.disorder = append(tl.disorder, fmt.Sprintf("%s arrived before %s", m.Payload, lossyPayload(dev, tl.next[dev])))
	}
	tl.next[dev] = max(tl.next[dev], seq+1)
	return nil
}

func (tl *lossyTally) complete() bool { return tl.distinct == tl.devices*tl.messages }

// behind names up to n devices whose messages have not all arrived, with the
// first one missing.
func (tl *lossyTally) behind(n int) []string {
	var out []string
	for dev, seen := range tl.seen {
		for seq, c := range seen {
			if c == 0 {
				out = append(out, lossyPayload(dev, seq))
				break
			}
		}
		if len(out) == n {
			break
		}
	}
	return out
}

// lossyDevice is one device of a lossy run: connect once, then publish
// message seq (returning once the gateway acknowledged it), then close.
type lossyDevice struct {
	connect func(ctx context.Context) error
	publish func(ctx context.Context, seq int) error
	close   func()
}

// lossyRun drives devs concurrently, each publishing tl.messages messages in
// order, one after the other's acknowledgement, and reads sub in the test
// goroutine until every message arrived. Then it closes the devices, waits
// until the relay holds nothing back, has pubEnd publish an end marker on the
// broker (topic tl.root+"/end") and reads up to it, so that late copies that
// the relay delivered and the gateway published are counted too. It fails the
// test on a device's error, with seed.
func lossyRun(t *testing.T, seed int64, relay *faultrelay.Relay, sub *mosquittotest.Sub, tl *lossyTally, devs []lossyDevice, pubEnd func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, len(devs))
	var wg sync.WaitGroup
	for i, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.connect(ctx); err != nil {
				errs <- fmt.Errorf("dev-%03d: connect: %w", i, err)
				return
			}
			for seq := range tl.messages {
				if err := d.publish(ctx, seq); err != nil {
					errs <- fmt.Errorf("%s: publish: %w", lossyPayload(i, seq), err)
					return
				}
			}
		}()
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			for _, d := range devs {
				d.close()
			}
			wg.Wait()
		})
	}
	t.Cleanup(stop)

	start := time.Now()
	progress := start
	for !tl.complete() {
		// A device's error is reported as soon as it happens, not after the
		// subscriber's wait: it says what went wrong.
		select {
		case err := <-errs:
			t.Fatalf("seed %d: %v (%d of %d messages at the subscriber; behind: %v)", seed, err, tl.distinct, tl.devices*tl.messages, tl.behind(5))
		default:
		}
		m, ok := sub.Poll(t, time.Second)
		if !ok {
			if time.Since(progress) > 30*time.Second {
				t.Fatalf("seed %d: no message at the subscriber for 30 s, %d of %d there; devices behind: %v", seed, tl.distinct, tl.devices*tl.messages, tl.behind(5))
			}
			continue
		}
		progress = time.Now()
		if err := tl.add(m); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
	wg.Wait() // the last acknowledgements
	select {
	case err := <-errs:
		t.Fatalf("seed %d: %v (every message arrived nevertheless)", seed, err)
	default:
	}
	elapsed := time.Since(start)
	stop()
	waitFor(t, 10*time.Second, "the relay to hold nothing back", func() bool { return relay.Stats().Pending == 0 })
	pubEnd()
	for {
		m := sub.Next(t, 10*time.Second)
		if m.Topic == tl.root+"/end" {
			break
		}
		if err := tl.add(m); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
	t.Logf("seed %d: %d devices × %d messages in %v: all %d delivered, %d copies at the subscriber: %d duplicates %v",
		seed, tl.devices, tl.messages, elapsed.Round(time.Millisecond), tl.distinct, tl.total, len(tl.dups), head(tl.dups, 20))
	if len(tl.disorder) > 0 {
		t.Errorf("seed %d: %d messages out of their device's order: %v", seed, len(tl.disorder), head(tl.disorder, 20))
	}
}

// head is at most n of s, for messages.
func head(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("… %d more", len(s)-n))
	}
	return s
}
