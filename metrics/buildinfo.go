package metrics

import (
	"runtime"
	"runtime/debug"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// buildInfo is mqttgw_build_info{version,goversion}, always 1, as Prometheus
// exporters export their build (join on it to label other series by version).
type buildInfo struct {
	desc    *prometheus.Desc
	version atomic.Pointer[string]
}

func newBuildInfo() *buildInfo {
	b := &buildInfo{desc: prometheus.NewDesc("mqttgw_build_info",
		"Always 1; the labels tell the gateway's version and the Go version that built it.",
		[]string{"version", "goversion"}, nil)}
	v := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		v = bi.Main.Version // "(devel)" when built from a work tree
	}
	b.version.Store(&v)
	return b
}

// SetBuildInfo sets the version label of mqttgw_build_info, the gateway's own
// version (cmd/mqttgw's); until then it is the module version the binary was built
// as, or "unknown". An empty version counts as "unknown".
func (r *Registry) SetBuildInfo(version string) {
	if version == "" {
		version = "unknown"
	}
	r.build.version.Store(&version)
}

// Describe implements prometheus.Collector.
func (b *buildInfo) Describe(ch chan<- *prometheus.Desc) { ch <- b.desc }

// Collect implements prometheus.Collector.
func (b *buildInfo) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(b.desc, prometheus.GaugeValue, 1, *b.version.Load(), runtime.Version())
}
