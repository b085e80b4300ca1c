package proxy

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/store"
)

// qos2Burst is how many QoS 2 messages each test has in flight at once: many
// more than Mosquitto's max_inflight_messages (20 by default), which it
// applies to the QoS 2 messages it receives from one client.
const qos2Burst = 200

// TestQoS2BurstAllDelivered: a burst of QoS 2 publishes on the gateway's one
// connection all reach a subscriber of a real Mosquitto with its default
// max_inflight_messages, whichever path they take: Publish (devices waiting
// for the broker's ack), Enqueue (the memory queue), Enqueue with a store
// (the replay), and a device's own connection. Without the QoS 2 window
// Mosquitto dropped every message beyond its 20th in flight while answering
// PUBREC (eclipse/mosquitto#2876): acknowledged and lost.
func TestQoS2BurstAllDelivered(t *testing.T) {
	for _, path := range []string{"publish", "enqueue", "store", "device"} {
		t.Run(path, func(t *testing.T) {
			b := mosquittotest.Start(t, mosquittotest.Options{Users: map[string]string{"gw": "pw"}})
			sub := b.Subscribe(t, mosquittotest.SubOptions{Username: "gw", Password: "pw", QoS: 2, Topics: []string{"q2/#"}})
			o := Options{URL: b.URL, ClientID: "burst", Username: "gw", Password: "pw", Logger: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))}
			var p *Proxy
			if path == "store" {
				p = startDurable(t, o, openStore(t, t.TempDir(), store.Options{}).Queue())
			} else {
				p = startDurable(t, o, nil)
			}
			waitFor(t, 10*time.Second, "the proxy to connect", p.online)
			msg := func(i int) Message {
				return Message{Topic: fmt.Sprintf("q2/%d", i%10), Payload: fmt.Appendf(nil, "m%03d", i), QoS: 2, Device: fmt.Sprint(i % 10)}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var wg sync.WaitGroup
			errs := make(chan error, qos2Burst)
			switch path {
			case "publish":
				for i := range qos2Burst {
					wg.Go(func() {
						if err := p.Publish(ctx, msg(i)); err != nil {
							errs <- err
						}
					})
				}
			case "enqueue", "store":
				for i := range qos2Burst {
					if err := p.Enqueue(msg(i)); err != nil {
						t.Fatal(err)
					}
				}
			case "device":
				d := dial(t, p, DeviceOptions{ClientID: "dev", Username: "gw", Password: "pw", CleanSession: true})
				defer d.Close(true)
				for i := range qos2Burst {
					wg.Go(func() {
						if err := d.Publish(ctx, msg(i)); err != nil {
							errs <- err
						}
					})
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Errorf("publish: %v", err)
			}
			got := map[string]int{}
			for len(got) < qos2Burst {
				m, ok := sub.Poll(t, 10*time.Second)
				if !ok {
					t.Fatalf("%d of %d QoS 2 messages reached the subscriber", len(got), qos2Burst)
				}
				got[string(m.Payload)]++
			}
			for k, n := range got {
				if n > 1 {
					t.Errorf("%s delivered %d times", k, n)
				}
			}
		})
	}
}
