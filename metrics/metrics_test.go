package metrics

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// parse reads the text exposition with Prometheus' own parser, strict about
// classic metric and label names.
func parse(t *testing.T, r io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("parse the exposition: %v", err)
	}
	return mfs
}

// scrape is r's WriteText, parsed.
func scrape(t *testing.T, r *Registry) map[string]*dto.MetricFamily {
	t.Helper()
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	return parse(t, strings.NewReader(b.String()))
}

// series finds name{labels} in mfs, nil when absent.
func series(mfs map[string]*dto.MetricFamily, name string, labels ...string) *dto.Metric {
	mf := mfs[name]
	if mf == nil {
		return nil
	}
	for _, m := range mf.GetMetric() {
		if sameLabels(m.GetLabel(), labels) {
			return m
		}
	}
	return nil
}

func TestCounter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		labels []string
		incs   int
		adds   []uint64
		want   uint64
	}{
		{"no labels", nil, 1, nil, 1},
		{"one label", []string{"listener", "sensors"}, 2, []uint64{3}, 5},
		{"two labels", []string{"listener", "sensors", "outcome", "mapped"}, 0, []uint64{1, 1 << 40}, 1<<40 + 1},
		{"empty value", []string{"listener", ""}, 1, nil, 1},
		{"unused", []string{"listener", "idle"}, 0, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New()
			const name = "mqttgw_test_total"
			c := r.Counter(name, "Test counter.", tc.labels...)
			for range tc.incs {
				c.Inc()
			}
			for _, n := range tc.adds {
				c.Add(n)
			}
			if again := r.Counter(name, "Other help is ignored.", tc.labels...); again != c {
				t.Errorf("a second Counter call returned another series")
			}
			if c.Value() != tc.want {
				t.Errorf("Value = %d, want %d", c.Value(), tc.want)
			}
			if got := r.Get(name, tc.labels...); got != float64(tc.want) {
				t.Errorf("Get = %v, want %d", got, tc.want)
			}
			mfs := scrape(t, r)
			if typ := mfs[name].GetType(); typ != dto.MetricType_COUNTER {
				t.Errorf("type %v, want counter", typ)
			}
			if help := mfs[name].GetHelp(); help != "Test counter." {
				t.Errorf("help %q: the first call's help should stay", help)
			}
			if m := series(mfs, name, tc.labels...); m.GetCounter().GetValue() != float64(tc.want) {
				t.Errorf("exposed %v, want %d", m, tc.want)
			}
		})
	}
}

func TestGauge(t *testing.T) {
	for _, tc := range []struct {
		name   string
		labels []string
		sets   []float64
		want   float64
	}{
		{"unset", nil, nil, 0},
		{"set", nil, []float64{1}, 1},
		{"down again", []string{"listener", "a"}, []float64{5, -2.5}, -2.5},
		{"infinity", []string{"listener", "a"}, []float64{math.Inf(1)}, math.Inf(1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New()
			const name = "mqttgw_test_gauge"
			g := r.Gauge(name, "Test gauge.", tc.labels...)
			for _, v := range tc.sets {
				g.Set(v)
			}
			if again := r.Gauge(name, "Test gauge.", tc.labels...); again != g {
				t.Errorf("a second Gauge call returned another series")
			}
			if g.Value() != tc.want || r.Get(name, tc.labels...) != tc.want {
				t.Errorf("Value %v, Get %v, want %v", g.Value(), r.Get(name, tc.labels...), tc.want)
			}
			mfs := scrape(t, r)
			if typ := mfs[name].GetType(); typ != dto.MetricType_GAUGE {
				t.Errorf("type %v, want gauge", typ)
			}
			if v := series(mfs, name, tc.labels...).GetGauge().GetValue(); v != tc.want {
				t.Errorf("exposed %v, want %v", v, tc.want)
			}
		})
	}
}

// TestGaugeFunc: several functions of one name with other label values each
// export their series (as mqttgw_sessions{listener,state} does); registering the
// same labels again keeps the first function.
func TestGaugeFunc(t *testing.T) {
	r := New()
	const name = "mqttgw_test_sessions"
	for _, l := range []struct {
		listener, state string
		v               float64
	}{{"a", "active", 1}, {"a", "lost", 2}, {"b", "active", 3}} {
		r.GaugeFunc(name, "Sessions.", func() float64 { return l.v }, "listener", l.listener, "state", l.state)
	}
	r.GaugeFunc(name, "Sessions.", func() float64 { return 99 }, "listener", "a", "state", "active")
	r.GaugeFunc(name, "Sessions.", func() float64 { return 98 }, "state", "active", "listener", "a")
	r.GaugeFunc("mqttgw_test_queue", "Queue length.", func() float64 { return 7 })

	mfs := scrape(t, r)
	if typ := mfs[name].GetType(); typ != dto.MetricType_GAUGE || len(mfs[name].GetMetric()) != 3 {
		t.Fatalf("%s: %v", name, mfs[name])
	}
	for _, tc := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"listener", "a", "state", "active"}, 1},
		{[]string{"state", "active", "listener", "a"}, 1},
		{[]string{"listener", "a", "state", "lost"}, 2},
		{[]string{"listener", "b", "state", "active"}, 3},
		{[]string{"listener", "b", "state", "lost"}, 0},
	} {
		if got := r.Get(name, tc.labels...); got != tc.want {
			t.Errorf("Get(%q) = %v, want %v", tc.labels, got, tc.want)
		}
		if m := series(mfs, name, tc.labels...); tc.want != 0 && m.GetGauge().GetValue() != tc.want {
			t.Errorf("exposed %q: %v, want %v", tc.labels, m, tc.want)
		}
	}
	if got := r.Get("mqttgw_test_queue"); got != 7 {
		t.Errorf("Get of an unlabelled GaugeFunc = %v", got)
	}
}

func TestHistogram(t *testing.T) {
	for _, tc := range []struct {
		name    string
		buckets []float64
		obs     []float64
		// wantCum are the cumulative counts of the buckets, in order.
		wantCum []uint64
	}{
		{"none", []float64{0.01, 0.1, 1}, nil, []uint64{0, 0, 0}},
		{"spread", []float64{0.01, 0.1, 1}, []float64{0.005, 0.05, 0.05, 0.5, 5}, []uint64{1, 3, 4}},
		{"on a bound", []float64{0.01, 0.1}, []float64{0.1}, []uint64{0, 1}},
		{"default buckets", nil, []float64{0.003}, []uint64{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New()
			const name = "mqttgw_test_ack_latency_seconds"
			h := r.Histogram(name, "Ack latency.", tc.buckets, "protocol", "mqttsn")
			var sum float64
			for _, v := range tc.obs {
				h.Observe(v)
				sum += v
			}
			if again := r.Histogram(name, "Ack latency.", []float64{42}, "protocol", "mqttsn"); again != h {
				t.Errorf("a second Histogram call returned another series")
			}
			if got := r.Get(name, "protocol", "mqttsn"); got != float64(len(tc.obs)) {
				t.Errorf("Get = %v, want the count %d", got, len(tc.obs))
			}
			mfs := scrape(t, r)
			if typ := mfs[name].GetType(); typ != dto.MetricType_HISTOGRAM {
				t.Fatalf("type %v, want histogram", typ)
			}
			hm := series(mfs, name, "protocol", "mqttsn").GetHistogram()
			if hm.GetSampleCount() != uint64(len(tc.obs)) || math.Abs(hm.GetSampleSum()-sum) > 1e-9 {
				t.Errorf("count %d sum %v, want %d and %v", hm.GetSampleCount(), hm.GetSampleSum(), len(tc.obs), sum)
			}
			var cum []uint64
			for _, b := range hm.GetBucket() {
				if !math.IsInf(b.GetUpperBound(), 1) {
					cum = append(cum, b.GetCumulativeCount())
				}
			}
			if fmt.Sprint(cum) != fmt.Sprint(tc.wantCum) {
				t.Errorf("buckets %v, want %v", cum, tc.wantCum)
			}
		})
	}
}

// TestConflicts: a name asked for as another kind or with other label names is a
// programming error; it panics naming both, and the registry stays usable.
func TestConflicts(t *testing.T) {
	const name = "mqttgw_test_total"
	for _, tc := range []struct {
		name  string
		first func(r *Registry)
		then  func(r *Registry)
		want  string
	}{
		{"counter then gauge",
			func(r *Registry) { r.Counter(name, "h", "listener", "a") },
			func(r *Registry) { r.Gauge(name, "h", "listener", "a") },
			"metrics: mqttgw_test_total: registered as a counter, now asked for as a gauge"},
		{"gauge then counter",
			func(r *Registry) { r.Gauge(name, "h") },
			func(r *Registry) { r.Counter(name, "h") },
			"registered as a gauge, now asked for as a counter"},
		{"gauge then gauge func",
			func(r *Registry) { r.Gauge(name, "h") },
			func(r *Registry) { r.GaugeFunc(name, "h", func() float64 { return 1 }) },
			"registered as a gauge, now asked for as a gauge func"},
		{"gauge func without a function",
			func(*Registry) {},
			func(r *Registry) { r.GaugeFunc(name, "h", nil) },
			"metrics: mqttgw_test_total: GaugeFunc without a function"},
		{"counter then histogram",
			func(r *Registry) { r.Counter(name, "h") },
			func(r *Registry) { r.Histogram(name, "h", nil) },
			"registered as a counter, now asked for as a histogram"},
		{"fewer labels",
			func(r *Registry) { r.Counter(name, "h", "listener", "a", "outcome", "ok") },
			func(r *Registry) { r.Counter(name, "h", "listener", "a") },
			`registered with label names ["listener" "outcome"], now asked for with ["listener"]`},
		{"other label name",
			func(r *Registry) { r.Counter(name, "h", "listener", "a") },
			func(r *Registry) { r.Counter(name, "h", "reason", "a") },
			`registered with label names ["listener"], now asked for with ["reason"]`},
		{"label twice",
			func(r *Registry) { r.Counter(name, "h", "listener", "a", "reason", "b") },
			func(r *Registry) { r.Counter(name, "h", "listener", "a", "listener", "b") },
			`now asked for with ["listener" "listener"]`},
		{"odd labels",
			func(*Registry) {},
			func(r *Registry) { r.Counter(name, "h", "listener") },
			"metrics: mqttgw_test_total: labels must be key, value pairs, got 1 strings"},
		{"invalid label name",
			func(*Registry) {},
			func(r *Registry) { r.Counter(name, "h", "bad label", "a") },
			`metrics: mqttgw_test_total: "bad label" is not a valid label name`},
		{"invalid metric name",
			func(*Registry) {},
			func(r *Registry) { r.Counter("mqttgw-test", "h") },
			`metrics: "mqttgw-test": not a valid metric name`},
		{"a collector's name",
			func(*Registry) {},
			func(r *Registry) { r.Gauge("go_goroutines", "h") },
			"metrics: go_goroutines:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New()
			tc.first(r)
			msg := func() (msg string) {
				defer func() { msg = fmt.Sprint(recover()) }()
				tc.then(r)
				return ""
			}()
			if !strings.Contains(msg, tc.want) {
				t.Errorf("panic %q, want it to contain %q", msg, tc.want)
			}
			r.Counter("mqttgw_test_after_total", "h").Inc()
			if r.Get("mqttgw_test_after_total") != 1 {
				t.Errorf("the registry is not usable after the panic")
			}
			scrape(t, r) // and still exports
		})
	}
}

func TestGet(t *testing.T) {
	r := New()
	r.Counter("mqttgw_test_total", "h", "listener", "a", "outcome", "ok").Add(3)
	r.SetBuildInfo("v1.2.3")
	for _, tc := range []struct {
		name   string
		metric string
		labels []string
		want   float64
	}{
		{"as created", "mqttgw_test_total", []string{"listener", "a", "outcome", "ok"}, 3},
		{"labels in another order", "mqttgw_test_total", []string{"outcome", "ok", "listener", "a"}, 3},
		{"other value", "mqttgw_test_total", []string{"listener", "b", "outcome", "ok"}, 0},
		{"missing label", "mqttgw_test_total", []string{"listener", "a"}, 0},
		{"odd labels ignore the last", "mqttgw_test_total", []string{"listener", "a", "outcome", "ok", "extra"}, 3},
		{"no such name", "mqttgw_nothing", nil, 0},
		{"build info", "mqttgw_build_info", []string{"version", "v1.2.3", "goversion", runtime.Version()}, 1},
		{"other version", "mqttgw_build_info", []string{"version", "v0", "goversion", runtime.Version()}, 0},
	} {
		if got := r.Get(tc.metric, tc.labels...); got != tc.want {
			t.Errorf("%s: Get(%s, %q) = %v, want %v", tc.name, tc.metric, tc.labels, got, tc.want)
		}
	}
	if got := r.Get("go_goroutines"); got < 1 {
		t.Errorf("go_goroutines = %v through Get", got)
	}
}

// TestStandardCollectors: every registry exports the Go runtime and process
// collectors and the build info, and two registries share no series.
func TestStandardCollectors(t *testing.T) {
	a, b := New(), New()
	a.Counter("mqttgw_test_total", "h").Inc()
	b.SetBuildInfo("")
	mfs := scrape(t, b)
	for name, typ := range map[string]dto.MetricType{
		"go_goroutines":                 dto.MetricType_GAUGE,
		"go_gc_duration_seconds":        dto.MetricType_SUMMARY,
		"go_memstats_heap_alloc_bytes":  dto.MetricType_GAUGE,
		"process_resident_memory_bytes": dto.MetricType_GAUGE,
		"process_cpu_seconds_total":     dto.MetricType_COUNTER,
		"mqttgw_build_info":             dto.MetricType_GAUGE,
	} {
		if runtime.GOOS != "linux" && strings.HasPrefix(name, "process_") {
			continue
		}
		if mfs[name] == nil || mfs[name].GetType() != typ {
			t.Errorf("%s: %v, want a %v", name, mfs[name], typ)
		}
	}
	if m := series(mfs, "mqttgw_build_info", "version", "unknown", "goversion", runtime.Version()); m.GetGauge().GetValue() != 1 {
		t.Errorf("mqttgw_build_info after SetBuildInfo(\"\"): %v", mfs["mqttgw_build_info"])
	}
	if mfs["mqttgw_test_total"] != nil || b.Get("mqttgw_test_total") != 0 {
		t.Errorf("a series of one registry shows in another")
	}
}

// TestHandler: /metrics answers the text format by default and OpenMetrics when
// the scraper asks for it, and counts its scrapes.
func TestHandler(t *testing.T) {
	r := New()
	r.Counter("mqttgw_test_total", "h", "listener", "a").Inc()
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	for _, tc := range []struct {
		accept, wantType string
	}{
		{"", "text/plain; version=0.0.4"},
		{"application/openmetrics-text; version=1.0.0", "application/openmetrics-text; version=1.0.0"},
	} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		if tc.accept != "" {
			req.Header.Set("Accept", tc.accept)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if ct := res.Header.Get("Content-Type"); res.StatusCode != 200 || !strings.HasPrefix(ct, tc.wantType) {
			t.Errorf("Accept %q: %d %q, want 200 %q", tc.accept, res.StatusCode, ct, tc.wantType)
		}
		if tc.accept == "" {
			mfs := parse(t, strings.NewReader(string(body)))
			if series(mfs, "mqttgw_test_total", "listener", "a").GetCounter().GetValue() != 1 {
				t.Errorf("mqttgw_test_total: %v", mfs["mqttgw_test_total"])
			}
		} else if !strings.HasSuffix(string(body), "# EOF\n") {
			t.Errorf("OpenMetrics without # EOF:\n%s", body)
		}
	}
	if got := r.Get("promhttp_metric_handler_requests_total", "code", "200"); got < 1 {
		t.Errorf("promhttp_metric_handler_requests_total{code=200} = %v", got)
	}
}

// TestLabelValueNotUTF8: a label value with bad bytes is exported with U+FFFD
// instead of panicking in client_golang.
func TestLabelValueNotUTF8(t *testing.T) {
	r := New()
	c := r.Counter("mqttgw_test_total", "h", "listener", "bad\xff")
	c.Inc()
	if r.Counter("mqttgw_test_total", "h", "listener", "bad\xff") != c {
		t.Errorf("the same bad value gave another series")
	}
	if got := r.Get("mqttgw_test_total", "listener", "bad\uFFFD"); got != 1 {
		t.Errorf("Get of the exported value = %v", got)
	}
}

// TestConcurrentFirstUse: goroutines asking for the same new series at once all
// get it (run with -race).
func TestConcurrentFirstUse(t *testing.T) {
	r := New()
	const n = 8
	got := make([]*Counter, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			got[i] = r.Counter("mqttgw_test_total", "h", "listener", "a")
			got[i].Inc()
			r.GaugeFunc("mqttgw_test_gauge", "h", func() float64 { return 1 }, "listener", fmt.Sprint(i%2))
			_ = r.Get("mqttgw_test_gauge", "listener", "0")
		})
	}
	wg.Wait()
	for _, c := range got {
		if c != got[0] {
			t.Fatal("two series for one name and labels")
		}
	}
	if v := got[0].Value(); v != n {
		t.Errorf("count %d, want %d", v, n)
	}
	if m := scrape(t, r)["mqttgw_test_gauge"]; len(m.GetMetric()) != 2 {
		t.Errorf("mqttgw_test_gauge: %v", m)
	}
}
