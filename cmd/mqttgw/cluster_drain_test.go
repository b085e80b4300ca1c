package main

import (
	"testing"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

// TestClusterDrainDeadInstance: with the broker away, instance A
// acknowledges MQTT-SN devices' QoS 1 publishes once the fleet's JetStream
// holds them, then A is killed (SIGKILL). At once the devices move to B and
// publish more there, B acknowledging from JetStream too. A never returns:
// once its lease has run out, B drains its queue. When the broker comes back
// every acknowledged message reaches a persistent subscriber, each device's
// in order: those acknowledged by A before those acknowledged by B, which
// waited for A's queue (gateway/fence.go).
func TestClusterDrainDeadInstance(t *testing.T) {
	f := startFleet(t)
	watch := mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1,
		Topics: []string{"k9s/#"}, ClientID: "watch-drain", CleanSession: false}
	f.broker.Subscribe(t, watch).Close()
	f.broker.Stop()

	a := f.start(t, "gwA")
	b := f.start(t, "gwB")
	const devices, per, moved = 3, 40, 10
	var acked [devices][]string
	publishSN(t, a.snAddr, devices, 0, per, &acked)
	a.kill9(t)
	publishSN(t, b.snAddr, devices, per, per+moved, &acked)
	if n := b.metric(t, "mqttgw_fleet_fenced_total"); n < devices {
		t.Errorf("publishes that waited for A's queue: %v, want at least one per device (%d)", n, devices)
	}
	f.broker.Restart()

	sub := f.broker.Subscribe(t, watch)
	expectAcked(t, sub, devices, &acked)
	b.run.waitLog(t, "drained the queue of a dead instance")
	if n := b.metric(t, "mqttgw_fleet_drained_total"); n != devices*per {
		t.Errorf("B drained %v messages, want %d", n, devices*per)
	}
}
