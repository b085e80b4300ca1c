package metrics

import (
	"testing"

	"github.com/mqttgw/mqttgw/internal/deptest"
)

// TestImports: every package imports metrics, so metrics imports none of
// mqttgw's own packages (no cycle, no reach into the gateway) and of the outside
// only the Prometheus client libraries it wraps.
func TestImports(t *testing.T) {
	allowed := []string{
		"github.com/prometheus/client_golang/prometheus",  // families, the registry
		"github.com/prometheus/client_golang/prometheus/", // the Go and process collectors, promhttp
		"github.com/prometheus/client_model/go",           // the gathered values, for Get
		"github.com/prometheus/common/expfmt",             // the text format, for WriteText
		"github.com/prometheus/common/model",              // classic metric and label names
	}
	deptest.Each(t, func(_, path string) string {
		if !deptest.Std(path) && !deptest.Allowed(path, allowed) {
			return "metrics is a leaf: the Prometheus client libraries only"
		}
		return ""
	})
}
