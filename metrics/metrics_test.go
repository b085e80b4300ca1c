package metrics

import (
	"strings"
	"testing"
)

func TestCounterAndGaugeText(t *testing.T) {
	r := New()
	c := r.Counter("mqttgw_datagrams_total", "Datagrams received.", "listener", "a")
	c.Inc()
	c.Add(2)
	if again := r.Counter("mqttgw_datagrams_total", "Datagrams received.", "listener", "a"); again.Value() != 3 {
		t.Fatalf("same series should be shared, got %d", again.Value())
	}
	r.Gauge("mqttgw_up", "Broker connection.").Set(1)
	r.GaugeFunc("mqttgw_queue", "Queue length.", func() float64 { return 7 })
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	want := `# HELP mqttgw_datagrams_total Datagrams received.
# TYPE mqttgw_datagrams_total counter
mqttgw_datagrams_total{listener="a"} 3
# HELP mqttgw_queue Queue length.
# TYPE mqttgw_queue gauge
mqttgw_queue 7
# HELP mqttgw_up Broker connection.
# TYPE mqttgw_up gauge
mqttgw_up 1
`
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
	if got := r.Get("mqttgw_datagrams_total", "listener", "a"); got != 3 {
		t.Fatalf("Get = %v", got)
	}
	if got := r.Get("mqttgw_datagrams_total", "listener", "b"); got != 0 {
		t.Fatalf("Get of a missing series = %v", got)
	}
}
