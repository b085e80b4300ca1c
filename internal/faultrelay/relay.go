package faultrelay

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// DefaultHold is how long a datagram held for reordering waits for the next
// one of its device and direction when Faults.Hold is 0.
const DefaultHold = 100 * time.Millisecond

// maxDatagram is the largest UDP payload read.
const maxDatagram = 65535

// socketBuffer is the receive buffer asked for each socket, so that a burst
// of many devices is not lost in the kernel (a loss the seed does not
// decide); the kernel may grant less (net.core.rmem_max).
const socketBuffer = 4 << 20

// Faults are the faults of one direction. Probabilities are in [0, 1].
type Faults struct {
	// Loss is the probability that a datagram is dropped.
	Loss float64
	// Duplicate is the probability that a datagram that is not dropped is
	// written twice.
	Duplicate float64
	// Reorder is the probability that a datagram is held back until the next
	// datagram of its device and direction has been written, or until Hold
	// passed without one. One datagram per device and direction is held at a
	// time.
	Reorder float64
	// Hold bounds how long a held datagram waits; 0 means DefaultHold. A
	// Hold longer than the sender's retransmission interval makes a
	// retransmission overtake its original.
	Hold time.Duration
	// Delay is added to every datagram (after a hold).
	Delay time.Duration
	// Jitter adds a uniform random part in [0, Jitter) to the delay of each
	// copy, which reorders datagrams closer together than Jitter.
	Jitter time.Duration
}

func (f Faults) check() error {
	for _, p := range []struct {
		name string
		v    float64
	}{{"loss", f.Loss}, {"duplicate", f.Duplicate}, {"reorder", f.Reorder}} {
		if !(p.v >= 0 && p.v <= 1) { // also refuses NaN
			return fmt.Errorf("%w: %s %v is not a probability in [0, 1]", ErrBadFaults, p.name, p.v)
		}
	}
	if f.Hold < 0 || f.Delay < 0 || f.Jitter < 0 {
		return fmt.Errorf("%w: negative duration (hold %v, delay %v, jitter %v)", ErrBadFaults, f.Hold, f.Delay, f.Jitter)
	}
	return nil
}

func (f Faults) hold() time.Duration {
	if f.Hold == 0 {
		return DefaultHold
	}
	return f.Hold
}

// delay is Delay plus the share u ∈ [0, 1) of Jitter.
func (f Faults) delay(u float64) time.Duration {
	return f.Delay + time.Duration(u*float64(f.Jitter))
}

// Options configure a Relay.
type Options struct {
	// Target is the server's HOST:PORT (the gateway's listener).
	Target string
	// Up are the faults of device → server datagrams, Down those of server
	// → device datagrams.
	Up, Down Faults
	// Seed seeds every random choice; any value, 0 included, is a seed.
	Seed int64
}

// Counts are one direction's counters.
type Counts struct {
	Received   int64 // datagrams read from the sending side
	Forwarded  int64 // copies written to the receiving side, duplicates included
	Dropped    int64 // datagrams dropped by Loss
	Duplicated int64 // datagrams written twice
	Held       int64 // datagrams held back by Reorder
	Reordered  int64 // held datagrams that a later one overtook (the others were released by Hold)
	Errors     int64 // writes that failed (the receiver's port closed, say)
}

func (c Counts) String() string {
	return fmt.Sprintf("%d received, %d forwarded, %d dropped, %d duplicated, %d held, %d reordered, %d write errors",
		c.Received, c.Forwarded, c.Dropped, c.Duplicated, c.Held, c.Reordered, c.Errors)
}

// Stats is a snapshot of a Relay's counters.
type Stats struct {
	Up, Down Counts
	// Devices is how many device source addresses the relay has seen, each
	// with its own upstream socket.
	Devices int
	// Pending counts the delayed datagrams and hold deadlines not yet due:
	// 0 means nothing is in flight inside the relay.
	Pending int
}

func (s Stats) String() string {
	return fmt.Sprintf("%d devices; up: %v; down: %v", s.Devices, s.Up, s.Down)
}

// counters are one direction's live counters.
type counters struct {
	received, forwarded, dropped, duplicated, held, reordered, errors atomic.Int64
}

func (c *counters) snapshot() Counts {
	return Counts{
		Received: c.received.Load(), Forwarded: c.forwarded.Load(), Dropped: c.dropped.Load(),
		Duplicated: c.duplicated.Load(), Held: c.held.Load(), Reordered: c.reordered.Load(), Errors: c.errors.Load(),
	}
}

// Relay is a running fault-injecting relay.
type Relay struct {
	o      Options
	target *net.UDPAddr
	conn   *net.UDPConn // the device side: devices send here
	sched  *scheduler
	done   chan struct{} // closed by Close
	wg     sync.WaitGroup
	once   sync.Once

	up, down counters

	mu     sync.Mutex // guards the fields below
	flows  map[netip.AddrPort]*flow
	closed bool
}

// flow is one device: its upstream socket and its two directions.
type flow struct {
	dev      netip.AddrPort
	out      *net.UDPConn // connected to the target
	up, down *pipe
}

// New binds 127.0.0.1:0 and starts relaying to o.Target. Close stops it.
func New(o Options) (*Relay, error) {
	if o.Target == "" {
		return nil, ErrNoTarget
	}
	if err := o.Up.check(); err != nil {
		return nil, fmt.Errorf("faultrelay: up: %w", err)
	}
	if err := o.Down.check(); err != nil {
		return nil, fmt.Errorf("faultrelay: down: %w", err)
	}
	target, err := net.ResolveUDPAddr("udp", o.Target)
	if err != nil {
		return nil, fmt.Errorf("faultrelay: target: %w", err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("faultrelay: %w", err)
	}
	_ = conn.SetReadBuffer(socketBuffer)
	r := &Relay{
		o: o, target: target, conn: conn,
		sched: newScheduler(),
		done:  make(chan struct{}),
		flows: map[netip.AddrPort]*flow{},
	}
	r.wg.Add(2)
	go func() {
		defer r.wg.Done()
		r.sched.run(r.done)
	}()
	go func() {
		defer r.wg.Done()
		r.readDevices()
	}()
	return r, nil
}

// Start is New for a test: it fails t on error and registers Close with
// t.Cleanup.
func Start(t testing.TB, o Options) *Relay {
	t.Helper()
	r, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// Addr is the HOST:PORT devices send to.
func (r *Relay) Addr() string { return r.conn.LocalAddr().String() }

// Stats returns the counters so far.
func (r *Relay) Stats() Stats {
	r.mu.Lock()
	n := len(r.flows)
	r.mu.Unlock()
	return Stats{Up: r.up.snapshot(), Down: r.down.snapshot(), Devices: n, Pending: r.sched.pending()}
}

// Close stops the relay: it closes every socket, discards delayed and held
// datagrams, and returns once its goroutines exited. It is idempotent and
// always returns nil.
func (r *Relay) Close() error {
	r.once.Do(func() {
		r.mu.Lock()
		r.closed = true
		flows := r.flows
		r.mu.Unlock()
		close(r.done)
		r.conn.Close()
		for _, f := range flows {
			f.out.Close()
		}
		r.wg.Wait()
	})
	return nil
}

// readDevices reads what devices send and passes it upstream.
func (r *Relay) readDevices() {
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if r.stopped(err) {
				return
			}
			continue
		}
		now := time.Now()
		f, err := r.flow(from.Addr().Unmap(), from.Port())
		if err != nil {
			r.up.errors.Add(1)
			continue
		}
		if f == nil {
			return // closed
		}
		f.up.pass(bytes.Clone(buf[:n]), now)
	}
}

// stopped reports whether a read error means the relay is closing.
func (r *Relay) stopped(err error) bool {
	select {
	case <-r.done:
		return true
	default:
	}
	return errors.Is(err, net.ErrClosed)
}

// flow returns the device's flow, opening its upstream socket and starting
// its reader the first time; nil once the relay is closed.
func (r *Relay) flow(ip netip.Addr, port uint16) (*flow, error) {
	dev := netip.AddrPortFrom(ip, port)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, nil
	}
	if f := r.flows[dev]; f != nil {
		return f, nil
	}
	// Under the lock, so that Close finds every socket; creating a UDP socket
	// sends nothing.
	out, err := net.DialUDP("udp", nil, r.target)
	if err != nil {
		return nil, err
	}
	_ = out.SetReadBuffer(socketBuffer)
	// One random source per device and direction, seeded by the order in
	// which devices first sent (package doc, Determinism).
	ordinal := uint64(len(r.flows))
	f := &flow{dev: dev, out: out}
	f.up = &pipe{f: r.o.Up, c: &r.up, sched: r.sched, done: r.done,
		rng:   rand.New(rand.NewPCG(uint64(r.o.Seed), ordinal<<1)),
		write: func(b []byte) error { _, err := out.Write(b); return err }}
	f.down = &pipe{f: r.o.Down, c: &r.down, sched: r.sched, done: r.done,
		rng:   rand.New(rand.NewPCG(uint64(r.o.Seed), ordinal<<1|1)),
		write: func(b []byte) error { _, err := r.conn.WriteToUDPAddrPort(b, dev); return err }}
	r.flows[dev] = f
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.readServer(f)
	}()
	return f, nil
}

// readServer reads what the server answers on a device's upstream socket and
// passes it down to the device.
func (r *Relay) readServer(f *flow) {
	buf := make([]byte, maxDatagram)
	for {
		n, err := f.out.Read(buf)
		if err != nil {
			// A connected UDP socket also reports an ICMP port
			// unreachable for an earlier write (the server not listening):
			// not a reason to stop.
			if r.stopped(err) {
				return
			}
			continue
		}
		f.down.pass(bytes.Clone(buf[:n]), time.Now())
	}
}
