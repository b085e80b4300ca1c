package gateway

import (
	"net/http"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestMetricsScrape: /metrics of a running gateway, fetched as Prometheus does
// and read with Prometheus' own text parser (classic names only), holds the
// gateway's families with their types, labels and values after one datagram,
// the Go runtime and process collectors, and mqttgw_build_info.
func TestMetricsScrape(t *testing.T) {
	b := startMosquitto(t, false)
	g := startGateway(t, rawConfig(b, "")+"\n[metrics]\nlisten = \"127.0.0.1:0\"\n")
	sendUDP(t, g.Gateway, "sensors", []byte(`{"id":"k1","temp":21.5}`))
	waitFor(t, 5*time.Second, "the datagram mapped and its session live", func() bool {
		return g.metrics.Get("mqttgw_datagrams_total", "listener", "sensors", "outcome", "mapped") == 1 && liveSessions(g.Gateway) == 1
	})

	res, err := http.Get("http://" + g.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); res.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("GET /metrics: %d %q, want 200 and the text format", res.StatusCode, ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}

	for _, tc := range []struct {
		name   string
		typ    dto.MetricType
		labels []string // the series to read, key, value pairs
		want   float64  // its value; -1: any value above 0
	}{
		{"mqttgw_datagrams_total", dto.MetricType_COUNTER, []string{"listener", "sensors", "outcome", "mapped"}, 1},
		{"mqttgw_datagrams_total", dto.MetricType_COUNTER, []string{"listener", "sensors", "outcome", "no_match"}, 0},
		{"mqttgw_sessions", dto.MetricType_GAUGE, []string{"listener", "sensors", "state", "active"}, 1},
		{"mqttgw_sessions", dto.MetricType_GAUGE, []string{"listener", "sensors", "state", "lost"}, 0},
		{"mqttgw_upstream_connected", dto.MetricType_GAUGE, nil, 1},
		{"mqttgw_upstream_queue_length", dto.MetricType_GAUGE, nil, 0},
		{"go_goroutines", dto.MetricType_GAUGE, nil, -1},
		{"go_memstats_heap_alloc_bytes", dto.MetricType_GAUGE, nil, -1},
		{"process_resident_memory_bytes", dto.MetricType_GAUGE, nil, -1},
		{"process_cpu_seconds_total", dto.MetricType_COUNTER, nil, -1},
	} {
		mf := mfs[tc.name]
		if mf == nil {
			t.Errorf("%s: missing from /metrics", tc.name)
			continue
		}
		if mf.GetType() != tc.typ {
			t.Errorf("%s: type %v, want %v", tc.name, mf.GetType(), tc.typ)
		}
		m := findSeries(mf, tc.labels)
		if m == nil {
			t.Errorf("%s%q: no such series in %v", tc.name, tc.labels, mf.GetMetric())
			continue
		}
		v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
		if tc.want >= 0 && v != tc.want || tc.want < 0 && v <= 0 {
			t.Errorf("%s%q = %v, want %v", tc.name, tc.labels, v, tc.want)
		}
	}

	// The build info is 1, with the Go version and a version (the lead's binary
	// sets it; a test binary has its module's).
	bi := mfs["mqttgw_build_info"].GetMetric()
	if len(bi) != 1 || bi[0].GetGauge().GetValue() != 1 || labelValue(bi[0], "goversion") != runtime.Version() || labelValue(bi[0], "version") == "" {
		t.Errorf("mqttgw_build_info: %v, want one series = 1 with version and goversion %q", bi, runtime.Version())
	}

	// Every series of a family has the family's label names; every gateway family
	// has its help text.
	for name, want := range map[string]string{
		"mqttgw_datagrams_total":         "listener outcome",
		"mqttgw_datagrams_dropped_total": "listener reason",
		"mqttgw_sessions":                "listener state",
		"mqttgw_upstream_connected":      "",
		"mqttgw_build_info":              "goversion version",
	} {
		if mfs[name] == nil {
			t.Errorf("%s: missing from /metrics", name)
		}
		for _, m := range mfs[name].GetMetric() {
			var names []string
			for _, l := range m.GetLabel() {
				names = append(names, l.GetName())
			}
			sort.Strings(names)
			if got := strings.Join(names, " "); got != want {
				t.Errorf("%s: a series with labels %q, want %q", name, got, want)
			}
		}
	}
	for name, mf := range mfs {
		if strings.HasPrefix(name, "mqttgw_") && mf.GetHelp() == "" {
			t.Errorf("%s has no help text", name)
		}
	}
}

// findSeries is the series of mf whose labels are exactly labels (key, value
// pairs), or nil.
func findSeries(mf *dto.MetricFamily, labels []string) *dto.Metric {
	for _, m := range mf.GetMetric() {
		if 2*len(m.GetLabel()) != len(labels) {
			continue
		}
		match := true
		for j := 0; j < len(labels); j += 2 {
			match = match && labelValue(m, labels[j]) == labels[j+1]
		}
		if match {
			return m
		}
	}
	return nil
}

// labelValue is the value of m's label name, "" when it has none.
func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
