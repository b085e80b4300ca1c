// Package metrics is a small registry of counters and gauges written in the Prometheus
// text exposition format (version 0.0.4). The gateway needs a few dozen series, so a
// map and atomics serve better than a client library and its dependencies.
//
// It starts no goroutines. Counters are safe for concurrent use; creating a series
// takes a lock, so callers create theirs once at start-up and keep the pointer.
package metrics

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Registry holds every series of one gateway.
type Registry struct {
	mu       sync.Mutex // guards families
	families map[string]*family
}

type family struct {
	name, help, kind string
	series           map[string]*series // rendered labels → series
}

type series struct {
	labels string
	bits   atomic.Uint64 // counter: count; gauge: math.Float64bits
	fn     func() float64
}

// New returns an empty registry.
func New() *Registry { return &Registry{families: map[string]*family{}} }

// Counter only goes up.
type Counter struct{ s *series }

// Inc adds one.
func (c *Counter) Inc() { c.s.bits.Add(1) }

// Add adds n.
func (c *Counter) Add(n uint64) { c.s.bits.Add(n) }

// Value returns the count.
func (c *Counter) Value() uint64 { return c.s.bits.Load() }

// Gauge goes up and down.
type Gauge struct{ s *series }

// Set sets the value.
func (g *Gauge) Set(v float64) { g.s.bits.Store(math.Float64bits(v)) }

// Value returns the value.
func (g *Gauge) Value() float64 { return math.Float64frombits(g.s.bits.Load()) }

// Counter returns the counter name{labels}, creating it once. labels are key, value pairs.
func (r *Registry) Counter(name, help string, labels ...string) *Counter {
	return &Counter{r.series(name, help, "counter", labels, nil)}
}

// Gauge returns the gauge name{labels}, creating it once.
func (r *Registry) Gauge(name, help string, labels ...string) *Gauge {
	return &Gauge{r.series(name, help, "gauge", labels, nil)}
}

// GaugeFunc registers a gauge whose value is read from fn at exposition time.
func (r *Registry) GaugeFunc(name, help string, fn func() float64, labels ...string) {
	r.series(name, help, "gauge", labels, fn)
}

func (r *Registry) series(name, help, kind string, labels []string, fn func() float64) *series {
	if len(labels)%2 != 0 {
		panic("metrics: labels must be key, value pairs")
	}
	var b strings.Builder
	for i := 0; i < len(labels); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", labels[i], labels[i+1])
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	f, ok := r.families[name]
	if !ok {
		f = &family{name: name, help: help, kind: kind, series: map[string]*series{}}
		r.families[name] = f
	}
	s, ok := f.series[b.String()]
	if !ok {
		s = &series{labels: b.String(), fn: fn}
		f.series[s.labels] = s
	}
	return s
}

// Get returns the current value of name{labels}, or 0 when there is no such series;
// for tests and the CLI.
func (r *Registry) Get(name string, labels ...string) float64 {
	r.mu.Lock()
	f := r.families[name]
	r.mu.Unlock()
	if f == nil {
		return 0
	}
	var b strings.Builder
	for i := 0; i+1 < len(labels); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", labels[i], labels[i+1])
	}
	r.mu.Lock()
	s := f.series[b.String()]
	r.mu.Unlock()
	if s == nil {
		return 0
	}
	return s.value(f.kind)
}

func (s *series) value(kind string) float64 {
	switch {
	case s.fn != nil:
		return s.fn()
	case kind == "counter":
		return float64(s.bits.Load())
	default:
		return math.Float64frombits(s.bits.Load())
	}
}

// WriteText writes every series in the Prometheus text format, sorted by name.
func (r *Registry) WriteText(w io.Writer) error {
	r.mu.Lock()
	names := make([]string, 0, len(r.families))
	for n := range r.families {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		f := r.families[n]
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", f.name, f.help, f.name, f.kind)
		keys := make([]string, 0, len(f.series))
		for k := range f.series {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			s := f.series[k]
			if k != "" {
				fmt.Fprintf(&b, "%s{%s} %v\n", f.name, k, s.value(f.kind))
			} else {
				fmt.Fprintf(&b, "%s %v\n", f.name, s.value(f.kind))
			}
		}
	}
	r.mu.Unlock()
	_, err := io.WriteString(w, b.String())
	return err
}

// Handler serves WriteText.
func (r *Registry) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_ = r.WriteText(w)
	})
}
