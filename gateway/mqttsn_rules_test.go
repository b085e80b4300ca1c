package gateway

import (
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/mqttsn"
)

// TestMQTTSNTopicRules: a [[rule]] on the mqttsn listener rewrites the topics of
// publishes and of the will, behind the mountpoint; other topics pass unchanged.
func TestMQTTSNTopicRules(t *testing.T) {
	env := startSN(t, snOpts{listener: `mountpoint = "site1/"`, top: `
[[rule]]
name = "per-device"
listener = "sn"
match = { topic = "d/{device}/{kind}" }
[[rule.publish]]
topic = "devices/{device}/{kind}"
`})
	sub := env.reader(t, 1, "site1/#")
	c := env.connect(t, mqttsn.ClientOptions{ClientID: "node7", Keepalive: time.Second, CleanSession: true,
		Will: &mqttsn.Will{Topic: "d/node7/status", Payload: []byte("lost"), QoS: 1}})
	if err := c.Publish(snCtx(t), "d/node7/temp", 1, false, []byte("21.5")); err != nil {
		t.Fatal(err)
	}
	sub.Expect(t, 5*time.Second, "site1/devices/node7/temp", "21.5")
	if err := c.Publish(snCtx(t), "plain/x", 1, false, []byte("as is")); err != nil {
		t.Fatal(err)
	}
	sub.Expect(t, 5*time.Second, "site1/plain/x", "as is")
	c.Close() // silence: the will goes out, rewritten
	sub.Expect(t, 6*time.Second, "site1/devices/node7/status", "lost")
}
