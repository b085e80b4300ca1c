package main

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/mqttsn"
)

// TestTransparentKill9PublishesWill: with mode = "transparent" a device's will
// is its own MQTT connection's will, so when the gateway process dies (kill -9,
// no chance to say anything) Mosquitto publishes it.
func TestTransparentKill9PublishesWill(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{Users: map[string]string{"mqttgw": "gw-secret", "reader": "reader-secret", "dev": "dev-secret"}})
	sub := b.Subscribe(t, mosquittotest.SubOptions{Username: "reader", Password: "reader-secret", QoS: 1, Topics: []string{"will/#"}})
	snPort := freePort(t, "udp")
	cfgFile := filepath.Join(t.TempDir(), "config.toml")
	writeTestFile(t, cfgFile, fmt.Sprintf(`
[upstream]
url = %q
username = "mqttgw"
password = "gw-secret"
[[listener]]
name = "sn"
type = "mqttsn"
bind = "127.0.0.1:%d"
mode = "transparent"
client_id_prefix = "sn-"
[listener.transparent]
username = "dev"
password = "dev-secret"
`, b.URL, snPort))
	r := startBinary(t, buildBinary(t), "run", "--config", cfgFile)
	r.waitLog(t, "connected to broker")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := mqttsn.Dial(ctx, fmt.Sprintf("127.0.0.1:%d", snPort), mqttsn.ClientOptions{ClientID: "k1", RetryInterval: 300 * time.Millisecond, MaxRetries: 5,
		Will: &mqttsn.Will{Topic: "will/k1", Payload: []byte("gateway died"), QoS: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	sub.None(t, 300*time.Millisecond)
	if err := r.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	sub.Expect(t, 10*time.Second, "will/k1", "gateway died")
}
