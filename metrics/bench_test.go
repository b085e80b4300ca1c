package metrics

import "testing"

// BenchmarkCounterLookup is the per-event call some callers make:
// Counter(name, help, labels...).Inc() without keeping the pointer.
func BenchmarkCounterLookup(b *testing.B) {
	r := New()
	r.Counter("mqttgw_acl_denied_total", "ACL denials.", "listener", "sensors", "access", "write")
	b.ReportAllocs()
	for b.Loop() {
		r.Counter("mqttgw_acl_denied_total", "ACL denials.", "listener", "sensors", "access", "write").Inc()
	}
}

// BenchmarkCounterLookupParallel is BenchmarkCounterLookup from every P at once.
func BenchmarkCounterLookupParallel(b *testing.B) {
	r := New()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.Counter("mqttgw_acl_denied_total", "ACL denials.", "listener", "sensors", "access", "write").Inc()
		}
	})
}

// BenchmarkCounterInc is the hot path of callers that keep the *Counter.
func BenchmarkCounterInc(b *testing.B) {
	c := New().Counter("mqttgw_datagrams_total", "Datagrams.", "listener", "sensors", "outcome", "mapped")
	b.ReportAllocs()
	for b.Loop() {
		c.Inc()
	}
}
