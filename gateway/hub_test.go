package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/udpgw"
)

// TestRetainedReachesEverySubscriber: a second device subscribing to a filter the
// hub already holds gets the retained message, and the first does not get it twice.
func TestRetainedReachesEverySubscriber(t *testing.T) {
	b := startMosquitto(t, false)
	b.Publish(t, mosquittotest.PubOptions{Username: "reader", Password: "reader-secret", Topic: "r/t", Payload: []byte("21"), QoS: 1, Retain: true})
	g := startGateway(t, upstreamTOML(b)+"[[listener]]\nname = \"sn\"\ntype = \"mqttsn\"\nbind = \"127.0.0.1:0\"\n")
	br := g.broker(g.cfg.Listeners[0])
	got := map[string]chan udpgw.Message{"a": make(chan udpgw.Message, 4), "b": make(chan udpgw.Message, 4)}
	for _, dev := range []string{"a", "b"} {
		ch := got[dev]
		if _, err := br.Subscribe(context.Background(), dev, "r/#", 1, func(m udpgw.Message) { ch <- m }); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-ch:
			if m.Topic != "r/t" || string(m.Payload) != "21" || !m.Retain {
				t.Fatalf("device %s got %+v", dev, m)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("device %s: no retained message", dev)
		}
	}
	select {
	case m := <-got["a"]:
		t.Fatalf("device a got the retained message twice: %+v", m)
	case <-time.After(300 * time.Millisecond):
	}
}
