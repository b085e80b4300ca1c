// Package metrics is the gateway's Prometheus registry: counters, gauges, gauge
// functions and histograms named by the callers, on github.com/prometheus/client_golang,
// plus the standard Go runtime (go_*) and process (process_*) collectors and
// mqttgw_build_info{version,goversion}.
//
// Each gateway owns one Registry (New); nothing is registered in client_golang's
// global default registry, so several gateways can run in one process (tests do).
//
// A series is named by a metric name and label key, value pairs. Its family (a
// CounterVec, GaugeVec, HistogramVec or a collector of gauge functions) is created
// and registered on the name's first use, with the label names of that call; the
// help text (and a histogram's buckets) of the first call stay. Asking for a name
// again with another kind (counter, gauge, gauge function, histogram) or with other
// label names is a programming error and panics with both; so do an odd number of
// label strings and a metric or label name that is not a classic Prometheus name
// ([a-zA-Z_:][a-zA-Z0-9_:]*). Label values that are not valid UTF-8 are exported
// with U+FFFD in place of the bad bytes.
//
// Asking again for the same name and label values returns the same series, through
// a lock-free map: no lock and no allocation, so callers may ask per event
// (BenchmarkCounterLookup), though hot paths keep the *Counter.
//
// Goroutines and blocking: the package starts no goroutine of its own. Inc, Add,
// Set and Observe are atomic and never block. Creating a series takes the
// registry's mutex, and for a new family client_golang's registry lock. A scrape
// (Handler, WriteText, and Get of a series it does not hold) runs client_golang's
// Gather, whose short-lived goroutines end before it returns; it calls every
// GaugeFunc's function from the scraping goroutine, possibly from two scrapes at
// once, so a function must be safe for concurrent use and must not block.
package metrics
