package main

import (
	"context"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/mqttsn"
)

// TestClusterAdoptsDeadInstancesClient: instance A is killed (SIGKILL) and
// its persistent MQTT-SN client goes silent with it. Once A's lease has run
// out, B adopts the client from A's record, and publishes its will once
// 1.5 keepalives after it was last heard, as a single gateway restarted
// would: exactly one will, from B.
func TestClusterAdoptsDeadInstancesClient(t *testing.T) {
	f := startFleet(t)
	wills := f.broker.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1, Topics: []string{"fleet/+/will"}})
	a, b := f.start(t, "gwA"), f.start(t, "gwB")
	a.run.waitLog(t, "connected to broker")
	b.run.waitLog(t, "connected to broker")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := mqttsn.ClientOptions{ClientID: "dev1", Keepalive: 2 * time.Second, Will: &mqttsn.Will{Topic: "fleet/dev1/will", Payload: []byte("gone"), QoS: 1}}
	c, _ := snClientWith(t, a.snAddr, opts)
	if _, _, err := c.Subscribe(ctx, "fleet/dev1/cmd", 1); err != nil {
		t.Fatal(err)
	}
	a.kill9(t)
	c.Close()

	wills.Expect(t, 30*time.Second, "fleet/dev1/will", "gone")
	const adopted = `mqttgw_mqttsn_clients_adopted_total{listener="sn"}`
	if n := b.metric(t, adopted); n != 1 {
		t.Errorf("%s at B = %v, want 1", adopted, n)
	}
	if m, ok := wills.Poll(t, time.Second); ok {
		t.Fatalf("a second will: %v", m)
	}
}
