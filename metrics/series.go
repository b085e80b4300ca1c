package metrics

import (
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Counter only goes up.
type Counter struct{ c prometheus.Counter }

// Inc adds one.
func (c *Counter) Inc() { c.c.Inc() }

// Add adds n.
func (c *Counter) Add(n uint64) { c.c.Add(float64(n)) }

// Value returns the count. It reads the series as a scrape does: use it in tests
// and at scrape time, not per event.
func (c *Counter) Value() uint64 { return uint64(write(c.c).GetCounter().GetValue()) }

// Gauge goes up and down.
type Gauge struct{ g prometheus.Gauge }

// Set sets the value.
func (g *Gauge) Set(v float64) { g.g.Set(v) }

// Value returns the value.
func (g *Gauge) Value() float64 { return write(g.g).GetGauge().GetValue() }

// Histogram counts observations in buckets; for durations, in seconds.
type Histogram struct {
	o prometheus.Observer
	m prometheus.Metric // o, for Get
}

// Observe adds one observation, in seconds for a duration.
func (h *Histogram) Observe(seconds float64) { h.o.Observe(seconds) }

// gaugeFunc is one series of a funcFamily.
type gaugeFunc struct {
	values []string // in the family's label order
	fn     func() float64
}

// funcFamily is the collector of one GaugeFunc name: one function per label
// values. client_golang's GaugeFunc has no labels, and a name can be registered
// only once, so several label values need a collector of their own.
type funcFamily struct {
	desc *prometheus.Desc

	mu     sync.Mutex // guards series
	series []*gaugeFunc
}

// add returns the series of values, registering fn for it when it is new.
func (f *funcFamily) add(values []string, fn func() float64) *gaugeFunc {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.series {
		if slices.Equal(s.values, values) {
			return s
		}
	}
	s := &gaugeFunc{values: values, fn: fn}
	f.series = append(f.series, s)
	return s
}

// Describe implements prometheus.Collector.
func (f *funcFamily) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc }

// Collect implements prometheus.Collector: it calls the functions after
// releasing mu, as they take their owners' locks.
func (f *funcFamily) Collect(ch chan<- prometheus.Metric) {
	f.mu.Lock()
	series := slices.Clone(f.series)
	f.mu.Unlock()
	for _, s := range series {
		ch <- prometheus.MustNewConstMetric(f.desc, prometheus.GaugeValue, s.fn(), s.values...)
	}
}
