package gateway

import (
	"os"
	"strings"
	"testing"
	"time"
)

// waitObservations waits until the listener has n observations.
func (env *coapEnv) waitObservations(t *testing.T, listener string, n float64) {
	t.Helper()
	waitFor(t, 10*time.Second, "observations", func() bool { return env.observations(listener) == n })
}

// TestCoAPObserve registers an observation with libcoap and publishes three
// MQTT messages with mosquitto_pub: libcoap prints all three, in order.
func TestCoAPObserve(t *testing.T) {
	for _, notify := range []string{"non", "con"} {
		t.Run(notify, func(t *testing.T) {
			env := startCoAP(t, coapOpts{coap: `notify = "` + notify + `"`})
			obs := observe(t, 30, env.url("/ps/obs/temp?c=watcher"))
			env.waitObservations(t, "coap", 1)
			for _, p := range []string{"m1;", "m2;", "m3;"} {
				env.mqttPub(t, "obs/temp", p, false)
			}
			obs.waitOutput(t, 10*time.Second, "m1;m2;m3;")
			if got := env.metric("mqttgw_coap_notifications_total", "listener", "coap", "type", notify); got != 3 {
				t.Errorf("notifications_total{type=%s} = %v, want 3", notify, got)
			}
		})
	}
}

// TestCoAPObserveWildcard observes an MQTT filter where the config allows it.
func TestCoAPObserveWildcard(t *testing.T) {
	env := startCoAP(t, coapOpts{coap: "allow_wildcards = true"})
	obs := observe(t, 30, env.url("/ps/house/+/temp"))
	env.waitObservations(t, "coap", 1)
	env.mqttPub(t, "house/kitchen/temp", "k;", false)
	env.mqttPub(t, "house/hall/hum", "x;", false)
	env.mqttPub(t, "house/hall/temp", "h;", false)
	obs.waitOutput(t, 10*time.Second, "k;h;")
	if strings.Contains(obs.output(), "x;") {
		t.Fatalf("non-matching message notified: %q", obs.output())
	}
}

// TestCoAPDeregisterObserve1: libcoap ends its observation after -s seconds with
// a GET carrying Observe=1 (RFC 7641 §3.6); the gateway removes it and
// unsubscribes, so later messages are not notified.
func TestCoAPDeregisterObserve1(t *testing.T) {
	env := startCoAP(t, coapOpts{})
	obs := observe(t, 2, env.url("/ps/dereg/t?c=leaving"))
	env.waitObservations(t, "coap", 1)
	env.mqttPub(t, "dereg/t", "before;", false)
	obs.waitOutput(t, 10*time.Second, "before;")
	obs.wait(t, 15*time.Second)
	env.waitObservations(t, "coap", 0)
	if got := env.ended("deregister"); got != 1 {
		t.Fatalf("ended{deregister} = %v, want 1", got)
	}
	sent := env.metric("mqttgw_coap_notifications_total", "listener", "coap", "type", "non")
	env.mqttPub(t, "dereg/t", "after;", false)
	time.Sleep(300 * time.Millisecond)
	if got := env.metric("mqttgw_coap_notifications_total", "listener", "coap", "type", "non"); got != sent {
		t.Fatalf("a notification was sent after deregistration: %v → %v", sent, got)
	}
}

// TestCoAPDeregisterRST: a client that forgot its observation answers the next
// notification with RST (RFC 7641 §3.6). libcoap forgets it when killed; a second
// libcoap on the same port then gets the notification for a token it does not
// know, and resets it.
func TestCoAPDeregisterRST(t *testing.T) {
	for _, notify := range []string{"non", "con"} {
		t.Run(notify, func(t *testing.T) {
			env := startCoAP(t, coapOpts{coap: `notify = "` + notify + `"`})
			port := freeUDPPort(t)
			first := observe(t, 60, "-p", port, "-T", "f1f1", env.url("/ps/rst/t?c=forgetful"))
			env.waitObservations(t, "coap", 1)
			first.kill()
			// The same port, another device and token: the first one's
			// notification reaches a client that never asked for it.
			second := observe(t, 60, "-p", port, "-T", "b2b2", env.url("/ps/rst/other?c=bystander"))
			env.waitObservations(t, "coap", 2)
			env.mqttPub(t, "rst/t", "unwanted;", false)
			waitFor(t, 10*time.Second, "observation ended by RST", func() bool { return env.ended("reset") == 1 })
			env.waitObservations(t, "coap", 1)
			// The bystander's observation is untouched.
			env.mqttPub(t, "rst/other", "still;", false)
			second.waitOutput(t, 10*time.Second, "still;")
			if strings.Contains(second.output(), "unwanted;") {
				t.Errorf("libcoap printed the reset notification: %q", second.output())
			}
		})
	}
}

// TestCoAPObserveIdle90s: an observation idle for 90 s — longer than go-coap's
// 16 s connection inactivity and the 30–60 s after which peers' observations
// silently stop — still gets the next notification. It takes 90 s, so it runs
// only with MQTTGW_LONG_TESTS=1 (make test sets it).
func TestCoAPObserveIdle90s(t *testing.T) {
	if os.Getenv("MQTTGW_LONG_TESTS") == "" {
		t.Skip("takes 90 s: set MQTTGW_LONG_TESTS=1 (make test does)")
	}
	env := startCoAP(t, coapOpts{coap: `keepalive = "70s"`}) // the session lives 105 s without traffic
	obs := observe(t, 150, env.url("/ps/idle/t?c=sleepy"))
	env.waitObservations(t, "coap", 1)
	env.mqttPub(t, "idle/t", "first;", false)
	obs.waitOutput(t, 10*time.Second, "first;")
	time.Sleep(90 * time.Second)
	env.mqttPub(t, "idle/t", "after-90s;", false)
	obs.waitOutput(t, 10*time.Second, "first;after-90s;")
}

// freeUDPPort returns a UDP port of 127.0.0.1 that was free a moment ago.
func freeUDPPort(t *testing.T) string {
	t.Helper()
	c := dialCoAP(t, "127.0.0.1:9") // any address: only the local port matters
	_, port, _ := strings.Cut(c.conn.LocalAddr().String(), ":")
	c.conn.Close()
	return port
}
