package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/mqttsn"
)

// TestClusterNATSNodeKilled: one node of the fleet's three-node NATS cluster
// is killed (SIGKILL) while instance A takes QoS 1 publishes with the broker
// away, so that every one of them is acknowledged from JetStream. None is
// lost: once the broker is back, every acknowledged message arrives, each
// device's in order. No session is lost: an MQTT-SN client that registered
// and subscribed through A, before and after the kill, moves to B and finds
// both topic ids valid and its subscription made again.
func TestClusterNATSNodeKilled(t *testing.T) {
	f := startFleet(t)
	// Longer than the election of a new leader for the streams whose leader
	// was on the killed node (4 to 9 s): a live instance whose live key's
	// renewal waits for it must not be taken for dead (README, [cluster]).
	f.lease = "20s"
	watch := mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1,
		Topics: []string{"k9s/#"}, ClientID: "watch-nats", CleanSession: false}
	watchSess := mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1,
		Topics: []string{"fleet/sess1/+"}, ClientID: "watch-sess", CleanSession: false}
	f.broker.Subscribe(t, watch).Close()
	f.broker.Subscribe(t, watchSess).Close()
	f.broker.Stop()
	a, b := f.start(t, "gwA"), f.start(t, "gwB")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// A JetStream stream whose leader was on the killed node takes a new
	// leader's election (4 to 9 s in nats-server, more under -race) before it
	// stores anything: the client's retries (Tretry × Nretry, MQTT-SN 1.2
	// §6.13) must span it, as a real client's 10–15 s × 3–5 do.
	slow := mqttsn.ClientOptions{ClientID: "sess1", Keepalive: time.Minute, RetryInterval: time.Second, MaxRetries: 30}
	c, _ := snClientWith(t, a.snAddr, slow)
	id1, err := c.Register(ctx, "fleet/sess1/one")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Subscribe(ctx, "fleet/sess1/cmd", 1); err != nil {
		t.Fatal(err)
	}

	const devices, per = 3, 150
	var acked [devices][]string
	published := make(chan error, 1)
	go func() { published <- publishSNErr(a.snAddr, devices, 0, per, &acked) }()
	poll(30*time.Second, func() (bool, error) { return a.metric(t, "mqttgw_upstream_stored_total") >= devices*per/4, nil })
	f.nats.Kill(0)
	t.Logf("NATS node 0 killed after %v messages stored", a.metric(t, "mqttgw_upstream_stored_total"))
	if err := <-published; err != nil {
		t.Fatalf("publishing while a NATS node was killed: %v", err)
	}
	if n := a.metric(t, "mqttgw_upstream_stored_total"); n < devices*per {
		t.Fatalf("A stored %v messages, want all %d (the broker is away)", n, devices*per)
	}
	// The session, written again with the node dead.
	id2, err := c.Register(ctx, "fleet/sess1/two")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	c, got := snClientWith(t, b.snAddr, slow)
	for i, id := range []uint16{id1, id2} {
		if err := c.PublishID(ctx, mqttsn.TopicNormal, id, 1, false, fmt.Appendf(nil, "via B %d", i)); err != nil {
			t.Fatalf("PUBLISH at B on topic id %d registered at A: %v, want PUBACK accepted", id, err)
		}
	}
	f.broker.Restart()
	sub := f.broker.Subscribe(t, watch)
	expectAcked(t, sub, devices, &acked)
	sess := f.broker.Subscribe(t, watchSess)
	sess.Expect(t, 15*time.Second, "fleet/sess1/one", "via B 0")
	sess.Expect(t, 15*time.Second, "fleet/sess1/two", "via B 1")
	// The subscription made through A reaches the client through B.
	n := 0
	err = poll(20*time.Second, func() (bool, error) {
		select {
		case m := <-got:
			if !strings.HasPrefix(m, "fleet/sess1/cmd cmd") {
				return false, fmt.Errorf("client got %q", m)
			}
			return true, nil
		case <-time.After(200 * time.Millisecond):
		}
		n++
		f.broker.Publish(t, mosquittotest.PubOptions{Username: "reader", Password: "reader-secret", Topic: "fleet/sess1/cmd", Payload: fmt.Appendf(nil, "cmd%d", n), QoS: 1})
		return false, nil
	})
	if err != nil {
		t.Fatalf("a message on the subscription made through A did not reach the client through B: %v", err)
	}
}
