package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/mqttsn"
)

// TestStoreKill9BrokerAway: with the broker away, MQTT-SN devices' QoS 1
// publishes are acknowledged once the durable store holds them. The gateway
// process is killed (SIGKILL), started again (the broker still away: more
// publishes), stopped with SIGTERM (which drops nothing: the store keeps what
// the broker has not taken, and the log says how much), then started once
// more with the broker back: every acknowledged message reaches a persistent
// subscriber, each device's in order, after the gateway's online.
func TestStoreKill9BrokerAway(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{Users: map[string]string{"mqttgw": "gw-secret", "reader": "reader-secret"},
		Extra: "persistence true\npersistence_location " + t.TempDir() + "/\nmax_queued_messages 100000\n"})
	watch := mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1,
		Topics: []string{"k9s/#", "mqttgw/k9s/status"}, ClientID: "watch-k9s", CleanSession: false}
	b.Subscribe(t, watch).Close()
	b.Stop()

	snPort := freePort(t, "udp")
	cfgFile := filepath.Join(t.TempDir(), "config.toml")
	writeTestFile(t, cfgFile, fmt.Sprintf(`
[gateway]
id = "k9s"
[upstream]
url = %q
username = "mqttgw"
password = "gw-secret"
reconnect_min = "100ms"
reconnect_max = "300ms"
[store]
dir = %q
[[listener]]
name = "sn"
type = "mqttsn"
bind = "127.0.0.1:%d"
[listener.mqttsn]
retry_interval = "300ms"
`, b.URL, t.TempDir(), snPort))
	gw := fmt.Sprintf("127.0.0.1:%d", snPort)
	bin := buildBinary(t)
	const devices, per = 3, 10
	var acked [devices][]string

	// Run 1: the broker away; publishes acknowledged from the store; SIGKILL.
	r := startBinary(t, bin, "run", "--config", cfgFile)
	r.waitLog(t, "listening")
	publishSN(t, gw, devices, 0, per, &acked)
	if err := r.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	err := <-r.exited
	r.exited <- err // for the cleanup
	if ws, ok := r.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("run 1 ended with %v, want killed by SIGKILL", err)
	}

	// Run 2: still away; the store's messages are found; more publishes;
	// SIGTERM leaves them all in the store.
	r = startBinary(t, bin, "run", "--config", cfgFile)
	r.waitLog(t, "durable store holds messages from before")
	publishSN(t, gw, devices, per, 2*per, &acked)
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.exited:
		r.exited <- err
		if err != nil {
			t.Fatalf("run 2 after SIGTERM: %v, want exit 0\n%s", err, r.logs)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run 2 did not stop within 30s of SIGTERM")
	}
	logs := r.logs.String()
	if !strings.Contains(logs, "stay in the durable store") || strings.Contains(logs, "queued messages; dropped") {
		t.Fatalf("run 2's shutdown should keep the messages in the store and drop none:\n%s", logs)
	}

	// Run 3: the broker is back; everything acknowledged arrives.
	b.Restart()
	r = startBinary(t, bin, "run", "--config", cfgFile)
	r.waitLog(t, "connected to broker")
	sub := b.Subscribe(t, watch)
	if m := sub.Next(t, 10*time.Second); m.Topic != "mqttgw/k9s/status" || string(m.Payload) != "online" {
		t.Fatalf("first message %v, want the gateway's online", m)
	}
	expectAcked(t, sub, devices, &acked)
}

// expectAcked reads sub until every message of acked (publishSN's) has
// arrived, and fails the test unless each device's came in the order
// acknowledged. QoS 1 duplicates are skipped.
func expectAcked(t *testing.T, sub *mosquittotest.Sub, devices int, acked *[3][]string) {
	t.Helper()
	want := 0
	for d := range devices {
		want += len(acked[d])
	}
	got := map[string][]string{}
	seen := map[string]bool{}
	for n := 0; n < want; {
		m := sub.Next(t, 15*time.Second)
		key := m.Topic + " " + string(m.Payload)
		if !strings.HasPrefix(m.Topic, "k9s/") || seen[key] {
			continue // a QoS 1 duplicate is allowed
		}
		seen[key] = true
		got[m.Topic] = append(got[m.Topic], string(m.Payload))
		n++
	}
	for d := range devices {
		topic := fmt.Sprintf("k9s/dev%d", d)
		if fmt.Sprint(got[topic]) != fmt.Sprint(acked[d]) {
			t.Errorf("%s: acknowledged %v, delivered %v", topic, acked[d], got[topic])
		}
	}
}

// publishSN connects devices MQTT-SN clients dev0... to gw and has each
// publish QoS 1 messages from..to-1 on k9s/devN, one after the other, failing
// the test unless all are acknowledged.
func publishSN(t *testing.T, gw string, devices, from, to int, acked *[3][]string) {
	t.Helper()
	if err := publishSNErr(gw, devices, from, to, acked); err != nil {
		t.Fatal(err)
	}
}

// publishSNErr is publishSN for any goroutine: it returns the first
// failure; acked holds what was acknowledged.
func publishSNErr(gw string, devices, from, to int, acked *[3][]string) error {
	var wg sync.WaitGroup
	errs := make(chan error, devices)
	for d := range devices {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			// Retries for 15 s: long enough for a JetStream leader election.
			c, err := mqttsn.Dial(ctx, gw, mqttsn.ClientOptions{ClientID: fmt.Sprintf("dev%d", d), CleanSession: true, RetryInterval: 500 * time.Millisecond, MaxRetries: 30})
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if err := c.Connect(ctx); err != nil {
				errs <- fmt.Errorf("dev%d: connect: %w", d, err)
				return
			}
			for i := from; i < to; i++ {
				if err := c.Publish(ctx, fmt.Sprintf("k9s/dev%d", d), mqttsn.QoS1, false, []byte(fmt.Sprint(i))); err != nil {
					errs <- fmt.Errorf("dev%d message %d: %w", d, i, err)
					return
				}
				acked[d] = append(acked[d], fmt.Sprint(i))
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}
