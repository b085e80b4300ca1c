package gateway

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

// TestCoAPRestartKeepsObservationAndSession: with [store] dir, a CoAP
// device's session and its observation outlive the gateway. libcoap's
// coap-client observes through one gateway; after a stop and a new start on
// the same store it goes on printing the messages published on Mosquitto,
// without registering again; the device's next request continues its session
// (no second birth, its first contact unchanged).
func TestCoAPRestartKeepsObservationAndSession(t *testing.T) {
	b := startMosquitto(t, false)
	coapRestartKeeps(t, b, fmt.Sprintf("[store]\ndir = %q\n", t.TempDir()))
}

// TestFleetCoAPRestartKeepsObservation: the same with [cluster] (issue 13):
// the session and the observation are in the fleet's JetStream, and the
// instance started again under the same id restores those of the devices
// it owns.
func TestFleetCoAPRestartKeepsObservation(t *testing.T) {
	env := startFleetEnv(t)
	urls := make([]string, 0, 3)
	for _, u := range env.nats.URLs() {
		urls = append(urls, fmt.Sprintf("%q", u))
	}
	coapRestartKeeps(t, env.b, fmt.Sprintf("[cluster]\nnats = [%s]\nname = %q\nreplicas = 3\nowner_lease = \"2s\"\n",
		strings.Join(urls, ", "), env.name))
}

// coapRestartKeeps is the restart test on broker b with storage, the
// config's [store] or [cluster] section.
func coapRestartKeeps(t *testing.T, b *mosquittotest.Broker, storage string) {
	status := b.Subscribe(t, reader("devices/#"))
	port := udpPort(t)
	cfg := upstreamTOML(b) + storage + fmt.Sprintf(`
[[listener]]
name = "coap"
type = "coap"
bind = "127.0.0.1:%d"
[[class]]
name = "coapers"
match = "cdev*"
keepalive = "1h"
will  = { topic = "devices/{device}/status", payload = "offline", qos = 1 }
birth = { topic = "devices/{device}/status", payload = "online", qos = 1 }
`, port)
	url := fmt.Sprintf("coap://127.0.0.1:%d/ps/rs/t?c=cdev1", port)
	env := &coapEnv{b: b, g: startGateway(t, cfg)}
	obs := observe(t, 60, url)
	env.waitObservations(t, "coap", 1)
	status.Expect(t, 5*time.Second, "devices/cdev1/status", "online")
	env.mqttPub(t, "rs/t", "m1;", false)
	obs.waitOutput(t, 10*time.Second, "m1;")
	before := env.g.Devices("coap", "")
	env.g.stop(t)

	env.g = startGateway(t, cfg)
	if n := env.observations("coap"); n != 1 {
		t.Fatalf("observations after the restart: %v", n)
	}
	// Its subscription is made again at start and once more by the broker
	// connection: publish until libcoap prints one.
	t.Cleanup(func() {
		if t.Failed() {
			var m strings.Builder
			_ = env.g.Metrics().WriteText(&m)
			var coap []string
			for line := range strings.Lines(m.String()) {
				if strings.HasPrefix(line, "mqttgw_coap_") {
					coap = append(coap, strings.TrimSpace(line))
				}
			}
			t.Logf("coap-client's output: %q; the gateway's CoAP counters:\n%s", obs.output(), strings.Join(coap, "\n"))
		}
	})
	// One publish per 300 ms, not per poll: notifications still queued
	// when the PUT below moves the device's address would go to the PUT's
	// client instead (they follow the device).
	var published time.Time
	waitFor(t, 15*time.Second, "a notification after the restart", func() bool {
		if time.Since(published) > 300*time.Millisecond {
			env.mqttPub(t, "rs/t", "m2;", false)
			published = time.Now()
		}
		return strings.Contains(obs.output(), "m2;")
	})
	if out := coapClient(t, "-m", "put", "-e", "1", fmt.Sprintf("coap://127.0.0.1:%d/ps/rs/other?c=cdev1", port)); out != "" {
		t.Fatalf("PUT after the restart: %q", out)
	}
	after := env.g.Devices("coap", "")
	if len(after) != 1 || len(before) != 1 || after[0].State != "active" || !after[0].FirstSeen.Equal(before[0].FirstSeen) || after[0].Class != "coapers" {
		t.Fatalf("devices after the restart %+v, before %+v: want the same session, active", after, before)
	}
	status.None(t, time.Second) // no second birth
}

// TestRawSessionsRestart: with [store] dir, plain-UDP sessions outlive the
// gateway. A device lost while the gateway runs has its will published once,
// and not again after a stop and a start (its record went with it); a device
// still alive continues its session after the start: no second birth.
func TestRawSessionsRestart(t *testing.T) {
	b := startMosquitto(t, false)
	status := b.Subscribe(t, reader("devices/#"))
	port := udpPort(t)
	class := func(name, keepalive string) string {
		return fmt.Sprintf(`
[[class]]
name = %q
match = "%s*"
keepalive = %q
will  = { topic = "devices/{device}/status", payload = "offline", qos = 1 }
birth = { topic = "devices/{device}/status", payload = "online", qos = 1 }
`, name, name, keepalive)
	}
	cfg := replaceOnce(t, rawConfig(b, ""), `bind = "127.0.0.1:0"`, fmt.Sprintf("bind = \"127.0.0.1:%d\"", port)) +
		fmt.Sprintf("[store]\ndir = %q\n", t.TempDir()) + class("stay", "1h") + class("gone", "1s")
	g := startGateway(t, cfg)
	dev := newUDPDevice(t, g.Gateway, "sensors")
	dev.send(`{"id":"stay1","temp":1}`)
	status.Expect(t, 5*time.Second, "devices/stay1/status", "online")
	dev.send(`{"id":"gone1","temp":1}`)
	status.Expect(t, 5*time.Second, "devices/gone1/status", "online")
	status.Expect(t, 10*time.Second, "devices/gone1/status", "offline")
	g.stop(t)

	before := devicesByKey(g.Gateway)["sensors/stay1"]

	g = startGateway(t, cfg)
	data := b.Subscribe(t, reader("json/stay1/temp"))
	data.Expect(t, 5*time.Second, "json/stay1/temp", "1") // retained, from before
	dev.send(`{"id":"stay1","temp":2}`)
	data.Expect(t, 5*time.Second, "json/stay1/temp", "2")
	status.None(t, time.Second) // no second birth for stay1, no second will for gone1
	after := devicesByKey(g.Gateway)
	if d := after["sensors/stay1"]; d.State != "active" || !d.FirstSeen.Equal(before.FirstSeen) {
		t.Fatalf("stay1 after the restart: %+v, before: %+v; want the same session", d, before)
	}
	if _, ok := after["sensors/gone1"]; ok {
		t.Fatal("gone1, lost before the stop, restored")
	}
}

// devicesByKey is Devices by "listener/device".
func devicesByKey(g *Gateway) map[string]Device {
	out := map[string]Device{}
	for _, d := range g.Devices("", "") {
		out[d.Listener+"/"+d.Device] = d
	}
	return out
}
