package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/internal/nginxtest"
	"github.com/mqttgw/mqttgw/mqttsn"
)

// lbDevices × lbMessages QoS 1 publishes go through nginx in
// TestClusterBehindNginx.
const (
	lbDevices  = 200
	lbMessages = 20
)

// TestClusterBehindNginx (issue 13): two instances of a fleet behind a real
// UDP load balancer, nginx's stream module with `hash $remote_addr
// consistent` as README documents. 200 MQTT-SN devices, each from its own
// loopback address (so the hash spreads them), connect with CleanSession
// false, register a topic and publish QoS 1 messages, each after the last
// one's PUBACK. Midway one instance is SIGKILLed: nginx sees its port
// refuse and sends its devices' next datagrams to the
// other instance, where each device reconnects with CleanSession false and
// goes on publishing with the topic id it registered at the dead instance
// (an "invalid topic ID" would mean its session was lost, and fails the
// test). Every message a device got a PUBACK for reaches a Mosquitto
// subscriber.
func TestClusterBehindNginx(t *testing.T) {
	f := startFleet(t)
	sub := f.broker.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1, Topics: []string{"lb/#"}})
	a, b := f.start(t, "gwA"), f.start(t, "gwB")
	a.run.waitLog(t, "connected to broker")
	b.run.waitLog(t, "connected to broker")
	lb := nginxtest.Start(t, nginxtest.Options{Upstreams: []string{a.snAddr, b.snAddr}})

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var (
		acked       atomic.Int64
		reconnected atomic.Int64
		wg          sync.WaitGroup
		errs        = make(chan error, lbDevices)
	)
	for i := range lbDevices {
		wg.Go(func() {
			if err := lbDevice(ctx, lb.Addr, i, &acked, &reconnected); err != nil {
				errs <- err
				cancel()
			}
		})
	}

	// The subscriber is read while the devices publish (it holds only so
	// many unread messages). A is killed once a third of the messages were
	// acknowledged; the devices the hash gave it move to B.
	got := map[string]bool{}
	killed := false
	for len(got) < lbDevices*lbMessages {
		select {
		case err := <-errs:
			t.Fatalf("%v (%d of %d at the subscriber)", err, len(got), lbDevices*lbMessages)
		default:
		}
		if !killed && acked.Load() >= lbDevices*lbMessages/3 {
			a.kill9(t)
			killed = true
			t.Logf("gwA killed after %d acknowledged publishes", acked.Load())
		}
		m, ok := sub.Poll(t, 30*time.Second)
		if !ok {
			t.Fatalf("no message for 30 s: %d of %d at the subscriber, %d acknowledged", len(got), lbDevices*lbMessages, acked.Load())
		}
		got[m.Topic+" "+string(m.Payload)] = true
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if reconnected.Load() == 0 {
		t.Fatal("no device reconnected after gwA was killed: the hash sent none to it?")
	}
	t.Logf("%d devices × %d messages delivered; %d devices continued their session at gwB", lbDevices, lbMessages, reconnected.Load())
}

// lbDevice is device i of TestClusterBehindNginx: from 127.1.0.(i+1)
// through the balancer at lbAddr, it connects (CleanSession false),
// registers its topic once and publishes lbMessages QoS 1 messages. A
// publish that fails for want of an answer (its instance died) is followed
// by a new CONNECT, and the same message is published again with the same
// topic id.
func lbDevice(ctx context.Context, lbAddr string, i int, acked, reconnected *atomic.Int64) error {
	id := fmt.Sprintf("lb-%03d", i)
	src := &net.UDPAddr{IP: net.IPv4(127, 1, byte(i/250), byte(i%250+1))}
	dst, err := net.ResolveUDPAddr("udp", lbAddr)
	if err != nil {
		return err
	}
	conn, err := net.DialUDP("udp", src, dst)
	if err != nil {
		return fmt.Errorf("%s: %w", id, err)
	}
	c := mqttsn.DialConn(conn, mqttsn.ClientOptions{ClientID: id, Keepalive: time.Minute, RetryInterval: 300 * time.Millisecond, MaxRetries: 5})
	defer c.Close()
	connect := func() error {
		var err error
		for range 20 { // the balancer may still be finding the live instance
			if err = c.Connect(ctx); err == nil || ctx.Err() != nil {
				return err
			}
		}
		return fmt.Errorf("%s: CONNECT: %w", id, err)
	}
	if err := connect(); err != nil {
		return err
	}
	topic := fmt.Sprintf("lb/%s", id)
	tid, err := c.Register(ctx, topic)
	if err != nil {
		return fmt.Errorf("%s: REGISTER: %w", id, err)
	}
	moved := false
	for seq := range lbMessages {
		payload := fmt.Appendf(nil, "%05d", seq)
		for attempt := 0; ; attempt++ {
			err := c.PublishID(ctx, mqttsn.TopicNormal, tid, mqttsn.QoS1, false, payload)
			if err == nil {
				acked.Add(1)
				break
			}
			if errors.Is(err, mqttsn.InvalidTopicID) {
				return fmt.Errorf("%s: message %d: %w: its session was lost", id, seq, err)
			}
			if ctx.Err() != nil || attempt == 5 {
				return fmt.Errorf("%s: message %d: %w", id, seq, err)
			}
			if err := connect(); err != nil {
				return err
			}
			if !moved {
				moved = true
				reconnected.Add(1)
			}
		}
	}
	return nil
}
