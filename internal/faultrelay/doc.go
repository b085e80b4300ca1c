// Package faultrelay is a UDP relay for tests that stands between devices and
// a server (the gateway) on loopback and injects seeded faults in both
// directions: loss, duplication, reordering and delay.
//
// Devices send to Relay.Addr instead of the server. For every device source
// address the relay opens its own upstream socket connected to Options.Target,
// so the server sees one distinct peer per device, as it would through a NAT,
// and the server's answers on that socket go back to that device's address.
// Up faults apply to device → server datagrams, Down faults to server → device
// datagrams.
//
// # Faults
//
// Each datagram, in this order: is lost with probability Loss; is sent twice
// with probability Duplicate; is held back with probability Reorder (when no
// other datagram of the same device and direction is held) and released right
// after the next datagram of that device and direction — which it then
// reorders with — or after Hold if none comes; and waits Delay plus a uniform
// random part of Jitter before it is written (each copy draws its own jitter,
// so jitter reorders too). Faults act per device and direction: a held
// datagram waits for its own device's next datagram, as on a real path.
//
// # Determinism
//
// Every device and direction has its own random source, seeded from
// Options.Seed and the order in which devices first sent (the first device is
// 0, the next 1, …). The fate of the n-th datagram of a device and direction
// is therefore fixed by the seed; what varies from run to run is only what
// scheduling changes: which device sends first when several start at once,
// and what a device or server sends in reaction to timing (retransmissions).
//
// # Goroutines
//
// New (and Start) starts one reader for the device-side socket and one
// scheduler for delayed and held datagrams; each device adds one reader for its
// upstream socket. No goroutine is started per datagram. Close closes every
// socket, stops the scheduler, discards what was still delayed or held and
// returns after all these goroutines exited; it is idempotent. Start registers
// Close with t.Cleanup.
//
// # Ordering and blocking
//
// Without faults a device's datagrams reach the server in the order sent, and
// so do the server's answers; only Reorder and Jitter change that. Writes are
// UDP writes on loopback and are not retried: a failed write (the server's
// port closed, say) is counted in Counts.Errors. The methods of a Relay may
// be called from any goroutine. The package uses only the standard library.
package faultrelay
