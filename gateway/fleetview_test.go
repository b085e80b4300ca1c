package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/internal/natstest"
	"github.com/mqttgw/mqttgw/mqttsn"
)

// fleetGateway starts instance id of fleet name on the NATS cluster c and
// the broker b, with an MQTT-SN listener "sn" and a metrics listener.
func fleetGateway(t *testing.T, c *natstest.Cluster, b *mosquittotest.Broker, name, id string) *runningGateway {
	t.Helper()
	urls := make([]string, len(c.URLs()))
	for i, u := range c.URLs() {
		urls[i] = fmt.Sprintf("%q", u)
	}
	cfg := replaceOnce(t, upstreamTOML(b), `id = "gwtest"`, fmt.Sprintf("id = %q", id)) + fmt.Sprintf(`
[cluster]
nats = [%s]
name = %q
replicas = 3
owner_lease = "2s"
[metrics]
listen = "127.0.0.1:0"
[[listener]]
name = "sn"
type = "mqttsn"
bind = "127.0.0.1:0"
[listener.mqttsn]
retry_interval = "200ms"
`, strings.Join(urls, ", "), name)
	return startGateway(t, cfg)
}

// getJSON GETs path on g's metrics listener into v and returns the
// response's header.
func getJSON(t *testing.T, g *runningGateway, path string, v any) http.Header {
	t.Helper()
	res, err := http.Get("http://" + g.MetricsAddr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", path, res.Status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, body)
	}
	return res.Header
}

// devicesAt is GET /devices at g with query q ("" or "?...").
func devicesAt(t *testing.T, g *runningGateway, q string) []Device {
	t.Helper()
	var devs []Device
	if h := getJSON(t, g, "/devices"+q, &devs); h.Get("Mqttgw-Fleet-Error") != "" {
		t.Fatalf("GET /devices%s: fleet error %q", q, h.Get("Mqttgw-Fleet-Error"))
	}
	return devs
}

// findDevice is the entry of device id on listener "sn", or nil.
func findDevice(devs []Device, id string) *Device {
	for i := range devs {
		if devs[i].Listener == "sn" && devs[i].Device == id {
			return &devs[i]
		}
	}
	return nil
}

// TestFleetView: two gateways of one fleet (a real three-node NATS
// JetStream cluster, a real Mosquitto) each list the MQTT-SN client the
// other serves in GET /devices, with its owner and whether the owner is
// alive, and both instances in the status JSON and on the status page;
// once the client connects to the other instance, both see the new owner.
func TestFleetView(t *testing.T) {
	c := natstest.Start(t, natstest.Options{})
	b := startMosquitto(t, false)
	const name = "fleetview"
	ga := fleetGateway(t, c, b, name, "gwA")
	gb := fleetGateway(t, c, b, name, "gwB")

	cl, err := mqttsn.Dial(snCtx(t), ga.ListenerAddr("sn").String(), mqttsn.ClientOptions{ClientID: "probe-1", Keepalive: time.Minute, RetryInterval: 300 * time.Millisecond, MaxRetries: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Connect(snCtx(t)); err != nil {
		t.Fatalf("CONNECT at A: %v", err)
	}

	// At B: A's client, remote, A alive; nothing of B's own.
	var remote *Device
	waitFor(t, 10*time.Second, "B lists probe-1 as A's", func() bool {
		remote = findDevice(devicesAt(t, gb, ""), "probe-1")
		return remote != nil && remote.Owner == "gwA"
	})
	if remote.State != "remote" || remote.OwnerAlive == nil || !*remote.OwnerAlive || remote.Protocol != "mqttsn" || remote.Addr != "" || !remote.LastSeen.IsZero() {
		t.Errorf("probe-1 at B: %+v, alive %v; want remote, mqttsn, owner gwA alive, no address or times", *remote, remote.OwnerAlive)
	}
	for q, want := range map[string]int{"?owner=gwA": 1, "?owner=gwB": 0, "?state=remote": 1, "?state=active": 0, "?scope=local": 0, "?listener=other": 0} {
		if got := devicesAt(t, gb, q); len(got) != want {
			t.Errorf("GET /devices%s at B: %d devices, want %d: %+v", q, len(got), want, got)
		}
	}

	// At A: its own session, with the registry's details and A as owner.
	local := findDevice(devicesAt(t, ga, ""), "probe-1")
	if local == nil || local.Owner != "gwA" || local.OwnerAlive == nil || !*local.OwnerAlive || local.State != "active" || local.Addr == "" || local.LastSeen.IsZero() {
		t.Fatalf("probe-1 at A: %+v", local)
	}
	if got := devicesAt(t, ga, "?scope=local"); len(got) != 1 || got[0].Owner != "gwA" || got[0].OwnerAlive != nil {
		t.Errorf("GET /devices?scope=local at A: %+v; want probe-1, owner gwA, owner_alive not read", got)
	}

	// B's status: both instances alive, B itself marked, A's device.
	var st Status
	getJSON(t, gb, "/status.json", &st)
	f := st.Fleet
	if f == nil || f.Name != name || f.Instance != "gwB" || f.Error != "" || f.AsOf.IsZero() || f.Devices != 1 || len(f.Instances) != 2 ||
		f.Instances[0] != (FleetInstance{ID: "gwA", Alive: true, Devices: 1}) || f.Instances[1] != (FleetInstance{ID: "gwB", Alive: true, Self: true}) {
		t.Errorf("status.json fleet at B: %+v", f)
	}

	// B's status page in a browser: the fleet section, the owner column,
	// no console errors.
	dom, console := headless(t, "http://"+gb.MetricsAddr().String()+"/")
	if len(console) > 0 {
		t.Errorf("console output on the status page:\n%s", strings.Join(console, "\n"))
	}
	for _, want := range []string{`<tr data-instance="gwA" class="alive"><td>gwA</td><td>alive</td><td class="n">1</td></tr>`,
		`<td>gwB (this one)</td>`, `<th>owner</th>`, `<td>probe-1</td>`, `<td>remote</td>`, `<td>gwA</td></tr>`} {
		if !strings.Contains(dom, want) {
			t.Errorf("B's status page lacks %q:\n%s", want, dom)
		}
	}

	// The client moves to B (CleanSession false): A lets it go, and both
	// list it as B's.
	cl.Close()
	cb, err := mqttsn.Dial(snCtx(t), gb.ListenerAddr("sn").String(), mqttsn.ClientOptions{ClientID: "probe-1", Keepalive: time.Minute, RetryInterval: 300 * time.Millisecond, MaxRetries: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	if err := cb.Connect(snCtx(t)); err != nil {
		t.Fatalf("CONNECT at B: %v", err)
	}
	waitFor(t, 10*time.Second, "A lists probe-1 as B's", func() bool {
		d := findDevice(devicesAt(t, ga, ""), "probe-1")
		return d != nil && d.Owner == "gwB" && d.State == "remote" && d.OwnerAlive != nil && *d.OwnerAlive
	})
	waitFor(t, 10*time.Second, "B lists probe-1 as its own", func() bool {
		d := findDevice(devicesAt(t, gb, ""), "probe-1")
		return d != nil && d.Owner == "gwB" && d.State == "active" && d.Addr != ""
	})
	if got := devicesAt(t, ga, ""); len(got) != 1 {
		t.Errorf("A lists %d devices, want probe-1 alone: %+v", len(got), got)
	}
	var sa Status
	getJSON(t, ga, "/status.json", &sa)
	if fa := sa.Fleet; fa == nil || len(fa.Instances) != 2 || fa.Instances[0].Devices != 0 || fa.Instances[1].Devices != 1 || !fa.Instances[0].Self {
		t.Errorf("status.json fleet at A after the move: %+v", fa)
	}
}

// TestDevicesWithoutCluster: a gateway without [cluster] answers as before:
// no owner fields, no fleet section, the fleet's filters refused or moot.
func TestDevicesWithoutCluster(t *testing.T) {
	b := startMosquitto(t, false)
	g := startGateway(t, rawConfig(b, "")+metricsTOML)
	newUDPDevice(t, g.Gateway, "sensors").send(`{"id":"kitchen7","temp":21}`)
	waitFor(t, 5*time.Second, "the device's session", func() bool { return liveSessions(g.Gateway) == 1 })
	base := "http://" + g.MetricsAddr().String()
	get := func(path string) (int, string) {
		res, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(body)
	}
	for _, path := range []string{"/devices", "/devices?scope=local", "/status.json"} {
		code, body := get(path)
		if code != http.StatusOK || strings.Contains(body, "owner") || strings.Contains(body, "fleet") {
			t.Errorf("GET %s: %d %s; want 200 without owner or fleet fields", path, code, body)
		}
	}
	if code, body := get("/devices"); !strings.Contains(body, `"kitchen7"`) || !strings.Contains(body, `"addr": "127.0.0.1:`) || !strings.Contains(body, `"first_seen"`) {
		t.Errorf("GET /devices: %d %s", code, body)
	}
	for _, path := range []string{"/devices?owner=gw1", "/devices?state=remote", "/devices?scope=nearby"} {
		if code, body := get(path); code != http.StatusBadRequest {
			t.Errorf("GET %s: %d %s; want 400", path, code, body)
		}
	}
}
