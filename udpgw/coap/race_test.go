//go:build race

package coap

// raceEnabled: the race detector's instrumentation changes what allocations
// cost, so memory bounds are reported, not checked.
const raceEnabled = true
