package metrics

import (
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// kind is what a family holds; one name has one kind.
type kind uint8

const (
	counterKind kind = iota + 1
	gaugeKind
	gaugeFuncKind
	histogramKind
)

func (k kind) String() string {
	switch k {
	case counterKind:
		return "counter"
	case gaugeKind:
		return "gauge"
	case gaugeFuncKind:
		return "gauge func"
	case histogramKind:
		return "histogram"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Registry holds every series of one gateway.
type Registry struct {
	reg   *prometheus.Registry
	build *buildInfo

	// series maps seriesKey(name, labels) to the *Counter, *Gauge, *Histogram or
	// *gaugeFunc a call made before: the lock-free fast path. The map is never
	// changed once stored; create copies it under mu.
	series atomic.Pointer[map[string]any]

	mu       sync.Mutex // guards families and the replacement of series
	families map[string]*family
}

// family is one metric name: its kind, its label names in the order of its first
// call, and the client_golang collector registered for it.
type family struct {
	name     string
	kind     kind
	labels   []string
	counters *prometheus.CounterVec
	gauges   *prometheus.GaugeVec
	hists    *prometheus.HistogramVec
	funcs    *funcFamily
}

// New returns a registry holding the Go runtime and process collectors and
// mqttgw_build_info, with the version the binary was built as (see SetBuildInfo).
func New() *Registry {
	r := &Registry{reg: prometheus.NewRegistry(), build: newBuildInfo(), families: map[string]*family{}}
	r.series.Store(&map[string]any{})
	r.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		r.build,
	)
	return r
}

// Counter returns the counter name{labels}, creating it on first use. labels are
// key, value pairs.
func (r *Registry) Counter(name, help string, labels ...string) *Counter {
	if v, ok := r.lookup(name, labels); ok {
		if c, ok := v.(*Counter); ok {
			return c
		}
	}
	return r.create(name, help, counterKind, labels, nil, nil).(*Counter)
}

// Gauge returns the gauge name{labels}, creating it on first use.
func (r *Registry) Gauge(name, help string, labels ...string) *Gauge {
	if v, ok := r.lookup(name, labels); ok {
		if g, ok := v.(*Gauge); ok {
			return g
		}
	}
	return r.create(name, help, gaugeKind, labels, nil, nil).(*Gauge)
}

// GaugeFunc registers the gauge name{labels} whose value is fn's at each scrape.
// Several label values of one name each have their function; registering the same
// name and label values again keeps the first function.
func (r *Registry) GaugeFunc(name, help string, fn func() float64, labels ...string) {
	if fn == nil {
		panic("metrics: " + name + ": GaugeFunc without a function")
	}
	if v, ok := r.lookup(name, labels); ok {
		if _, ok := v.(*gaugeFunc); ok {
			return
		}
	}
	r.create(name, help, gaugeFuncKind, labels, nil, fn)
}

// Histogram returns the histogram name{labels} with the given upper bounds
// (nil: prometheus.DefBuckets, 5 ms to 10 s), creating it on first use; the
// buckets of the name's first call stay.
func (r *Registry) Histogram(name, help string, buckets []float64, labels ...string) *Histogram {
	if v, ok := r.lookup(name, labels); ok {
		if h, ok := v.(*Histogram); ok {
			return h
		}
	}
	return r.create(name, help, histogramKind, labels, buckets, nil).(*Histogram)
}

// lookup is the fast path: the series a call with the same name and labels (in
// the same order) returned before.
func (r *Registry) lookup(name string, labels []string) (any, bool) {
	var buf [256]byte
	k := appendKey(buf[:0], name, labels)
	v, ok := (*r.series.Load())[string(k)]
	return v, ok
}

// appendKey appends name and labels, each preceded by its length, so that no two
// calls share a key.
func appendKey(b []byte, name string, labels []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(name)))
	b = append(b, name...)
	for _, l := range labels {
		b = binary.AppendUvarint(b, uint64(len(l)))
		b = append(b, l...)
	}
	return b
}

// create is the slow path: it makes the family on the name's first use and the
// series on its labels' first use, and panics on a conflict. It keeps no
// reference to labels, so the callers' variadic slices stay on their stacks.
func (r *Registry) create(name, help string, k kind, labels []string, buckets []float64, fn func() float64) any {
	if len(labels)%2 != 0 {
		panic(fmt.Sprintf("metrics: %s: labels must be key, value pairs, got %d strings", name, len(labels)))
	}
	key := string(appendKey(nil, name, labels))
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.families[name]
	if f == nil {
		names := labelNames(labels)
		checkNames(name, names)
		f = newFamily(name, help, k, names, buckets)
		if err := r.reg.Register(f.collector()); err != nil {
			panic(fmt.Sprintf("metrics: %s: %v", name, err))
		}
		r.families[name] = f
	}
	if f.kind != k {
		panic(fmt.Sprintf("metrics: %s: registered as a %s, now asked for as a %s", name, f.kind, k))
	}
	if v, ok := (*r.series.Load())[key]; ok { // made by another goroutine meanwhile
		return v
	}
	values, ok := f.values(labels)
	if !ok {
		panic(fmt.Sprintf("metrics: %s: registered with label names %q, now asked for with %q", name, f.labels, labelNames(labels)))
	}
	var v any
	switch k {
	case counterKind:
		v = &Counter{f.counters.WithLabelValues(values...)}
	case gaugeKind:
		v = &Gauge{f.gauges.WithLabelValues(values...)}
	case histogramKind:
		o := f.hists.WithLabelValues(values...)
		v = &Histogram{o: o, m: o.(prometheus.Metric)}
	case gaugeFuncKind:
		v = f.funcs.add(values, fn)
	}
	old := *r.series.Load()
	m := make(map[string]any, len(old)+1)
	maps.Copy(m, old)
	m[key] = v
	r.series.Store(&m)
	return v
}

func newFamily(name, help string, k kind, names []string, buckets []float64) *family {
	f := &family{name: name, kind: k, labels: names}
	switch k {
	case counterKind:
		f.counters = prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, names)
	case gaugeKind:
		f.gauges = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, names)
	case histogramKind:
		f.hists = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, names)
	case gaugeFuncKind:
		f.funcs = &funcFamily{desc: prometheus.NewDesc(name, help, names, nil)}
	}
	return f
}

func (f *family) collector() prometheus.Collector {
	switch f.kind {
	case counterKind:
		return f.counters
	case gaugeKind:
		return f.gauges
	case histogramKind:
		return f.hists
	}
	return f.funcs
}

// values orders the values of labels as f's label names, false when labels do not
// name exactly those.
func (f *family) values(labels []string) ([]string, bool) {
	if len(labels) != 2*len(f.labels) {
		return nil, false
	}
	vals := make([]string, len(f.labels))
	for i, name := range f.labels {
		n := 0
		for j := 0; j < len(labels); j += 2 {
			if labels[j] == name {
				vals[i] = strings.ToValidUTF8(labels[j+1], "\uFFFD")
				n++
			}
		}
		if n != 1 {
			return nil, false
		}
	}
	return vals, true
}

// checkNames panics unless name and the label names are classic Prometheus
// names ([a-zA-Z_:][a-zA-Z0-9_:]*, labels without ':'): client_golang would take
// any UTF-8, which scrapers that do not ask for UTF-8 see escaped, so the
// exported name would depend on the scraper.
func checkNames(name string, labels []string) {
	if !model.LegacyValidation.IsValidMetricName(name) {
		panic(fmt.Sprintf("metrics: %q: not a valid metric name", name))
	}
	for _, l := range labels {
		if !model.LegacyValidation.IsValidLabelName(l) {
			panic(fmt.Sprintf("metrics: %s: %q is not a valid label name", name, l))
		}
	}
}

// labelNames are the keys of key, value pairs.
func labelNames(labels []string) []string {
	names := make([]string, 0, len(labels)/2)
	for i := 0; i+1 < len(labels); i += 2 {
		names = append(names, labels[i])
	}
	return names
}

// Get returns the current value of name{labels} (a histogram's: its count of
// observations), or 0 when there is no such series; for tests and the CLI. It
// also reads the collectors' series (go_goroutines, mqttgw_build_info), and
// labels may come in any order.
func (r *Registry) Get(name string, labels ...string) float64 {
	labels = labels[:len(labels)&^1]
	if v, ok := r.lookup(name, labels); ok {
		return value(v)
	}
	return r.gathered(name, labels)
}

func value(v any) float64 {
	switch v := v.(type) {
	case *Counter:
		return float64(v.Value())
	case *Gauge:
		return v.Value()
	case *gaugeFunc:
		return v.fn()
	case *Histogram:
		return float64(write(v.m).GetHistogram().GetSampleCount())
	}
	return 0
}

// gathered finds name{labels} in a Gather.
func (r *Registry) gathered(name string, labels []string) float64 {
	mfs, _ := r.reg.Gather() // a failed collector leaves its series out
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if sameLabels(m.GetLabel(), labels) {
				return sample(mf.GetType(), m)
			}
		}
	}
	return 0
}

func sameLabels(pairs []*dto.LabelPair, labels []string) bool {
	if 2*len(pairs) != len(labels) {
		return false
	}
	for _, p := range pairs {
		found := false
		for j := 0; j < len(labels); j += 2 {
			if labels[j] == p.GetName() && labels[j+1] == p.GetValue() {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func sample(t dto.MetricType, m *dto.Metric) float64 {
	switch t {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		return float64(m.GetHistogram().GetSampleCount())
	case dto.MetricType_SUMMARY:
		return float64(m.GetSummary().GetSampleCount())
	}
	return m.GetUntyped().GetValue()
}

// WriteText writes every series in the Prometheus text format (0.0.4), sorted by
// name. A collector that fails leaves its series out and its error is returned
// after the others are written.
func (r *Registry) WriteText(w io.Writer) error {
	mfs, gatherErr := r.reg.Gather()
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return err
		}
	}
	return gatherErr
}

// Handler serves the registry for Prometheus: the text format, or OpenMetrics
// when the scraper asks for it, gzip when it accepts it. A collector that fails
// leaves its series out (counted in promhttp_metric_handler_errors_total); the
// scrapes are counted in promhttp_metric_handler_requests_total.
func (r *Registry) Handler() http.Handler {
	return promhttp.InstrumentMetricHandler(r.reg, promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{
		ErrorHandling:     promhttp.ContinueOnError,
		Registry:          r.reg,
		EnableOpenMetrics: true,
	}))
}

// write reads m's current value.
func write(m prometheus.Metric) *dto.Metric {
	var d dto.Metric
	_ = m.Write(&d) // the library's counters, gauges and histograms do not fail
	return &d
}
