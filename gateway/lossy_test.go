package gateway

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/pkg/runner/periodic"
	"github.com/plgd-dev/go-coap/v3/udp"

	"github.com/mqttgw/mqttgw/mqttsn"
)

// Issue 10, "through the fault relay": devices publish through a link that
// loses, duplicates and reorders (lossyFaults, both ways) and every message
// reaches a subscriber of the real Mosquitto, in each device's order; QoS 2
// and CoAP CON arrive exactly once (no network duplicate published upstream).
// Each device publishes its next message only after the gateway acknowledged
// the last one, which the gateway does only once the broker has it: so the
// first copies arrive in order even though the link reorders.
//
// The Lossy tests are small and run with every `go test`; the Soak ones
// (100 devices × 100 messages, a new seed each run) run with MQTTGW_SOAK=1,
// `make soak`. MQTTGW_FAULT_SEED=N replays a seed.

// TestLossyMQTTSNQoS1: every QoS 1 message arrives; duplicates are allowed
// at QoS 1, and counted in the log.
func TestLossyMQTTSNQoS1(t *testing.T) { testLossyMQTTSN(t, mqttsn.QoS1, lossyShort, lossySeed(t, 1)) }

// TestLossyMQTTSNQoS2: every QoS 2 message arrives exactly once.
func TestLossyMQTTSNQoS2(t *testing.T) { testLossyMQTTSN(t, mqttsn.QoS2, lossyShort, lossySeed(t, 2)) }

// TestLossyCoAPCON: every Confirmable PUT arrives exactly once: the gateway
// deduplicates by Message ID (RFC 7252 §4.5).
func TestLossyCoAPCON(t *testing.T) { testLossyCoAP(t, lossyShort, lossySeed(t, 3)) }

func TestSoakLossyMQTTSNQoS1(t *testing.T) {
	soakOnly(t)
	testLossyMQTTSN(t, mqttsn.QoS1, lossySoak, lossySeed(t, 0))
}

func TestSoakLossyMQTTSNQoS2(t *testing.T) {
	soakOnly(t)
	testLossyMQTTSN(t, mqttsn.QoS2, lossySoak, lossySeed(t, 0))
}

func TestSoakLossyCoAPCON(t *testing.T) {
	soakOnly(t)
	testLossyCoAP(t, lossySoak, lossySeed(t, 0))
}

func testLossyMQTTSN(t *testing.T, qos mqttsn.QoS, scale lossyScale, seed int64) {
	env := startSN(t, snOpts{})
	relay := startLossyRelay(t, env.addr, seed)
	root := fmt.Sprintf("lossy/q%d", qos)
	sub := env.reader(t, 2, root+"/#") // delivers at the publish's QoS
	tl := newLossyTally(root, scale)
	devs := make([]lossyDevice, scale.devices)
	for i := range devs {
		c, err := mqttsn.Dial(context.Background(), relay.Addr(), mqttsn.ClientOptions{
			ClientID:      fmt.Sprintf("lossy-%03d", i),
			CleanSession:  true,
			RetryInterval: lossyRetry,
			MaxRetries:    lossyMaxRetries,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		devs[i] = lossyDevice{
			connect: c.Connect,
			publish: func(ctx context.Context, seq int) error {
				return c.Publish(ctx, lossyTopic(root, i), qos, false, []byte(lossyPayload(i, seq)))
			},
			close: func() { c.Close() },
		}
	}
	lossyRun(t, seed, relay, sub, tl, devs, func() { env.pub(t, root+"/end", "end", int(qos), false) })
	t.Logf("gateway: %v MQTT-SN duplicates recognised", env.metric("mqttgw_mqttsn_duplicates_total", "listener", "sn"))
	if qos == mqttsn.QoS2 && len(tl.dups) > 0 {
		t.Errorf("seed %d: %d network duplicates of QoS 2 messages published upstream: %v", seed, len(tl.dups), head(tl.dups, 20))
	}
}

func testLossyCoAP(t *testing.T, scale lossyScale, seed int64) {
	env := startCoAP(t, coapOpts{})
	relay := startLossyRelay(t, env.addr, seed)
	root := "lossy/coap"
	sub := env.reader(t, root+"/#")
	tl := newLossyTally(root, scale)
	devs := make([]lossyDevice, scale.devices)
	for i := range devs {
		// go-coap's udp client, as `mqttgw pub --coap` dials it
		// (cmd/mqttgw/coap.go), with a quick ACK_TIMEOUT and a retransmission
		// timer that ticks often enough for it (the default ticks every 4 s
		// and outlives Close by up to that).
		stop := make(chan struct{})
		cc, err := udp.Dial(relay.Addr(),
			options.WithErrors(func(error) {}),
			options.WithTransmission(1, lossyRetry, lossyCoAPRetransmit),
			options.WithPeriodicRunner(periodic.New(stop, 10*time.Millisecond)))
		if err != nil {
			t.Fatal(err)
		}
		path := "/ps/" + lossyTopic(root, i)
		var once sync.Once
		closeConn := func() {
			once.Do(func() {
				cc.Close()
				<-cc.Done()
				close(stop)
			})
		}
		t.Cleanup(closeConn)
		devs[i] = lossyDevice{
			connect: func(context.Context) error { return nil },
			publish: func(ctx context.Context, seq int) error {
				ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
				defer cancel()
				resp, err := cc.Put(ctx, path, message.TextPlain, bytes.NewReader([]byte(lossyPayload(i, seq))))
				if err != nil {
					return err
				}
				defer cc.ReleaseMessage(resp)
				if resp.Code() != codes.Changed {
					return fmt.Errorf("response %v, want 2.04 Changed", resp.Code())
				}
				return nil
			},
			close: closeConn,
		}
	}
	lossyRun(t, seed, relay, sub, tl, devs, func() { env.mqttPub(t, root+"/end", "end", false) })
	if len(tl.dups) > 0 {
		t.Errorf("seed %d: %d network duplicates of Confirmable PUTs published upstream: %v", seed, len(tl.dups), head(tl.dups, 20))
	}
}
