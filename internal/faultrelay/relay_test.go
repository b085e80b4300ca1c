package faultrelay

import (
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/wait"
)

// bound is how long a test polls for a condition before it fails.
const bound = 10 * time.Second

// waitFor polls cond until it holds, failing t after bound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	wait.For(t, bound, what, cond)
}

// collector is a UDP socket on 127.0.0.1 whose reader goroutine records what
// it receives and, when echo is set, sends each datagram back to its source.
// t.Cleanup closes it and waits for the reader.
type collector struct {
	conn *net.UDPConn
	done chan struct{}

	mu      sync.Mutex // guards the fields below
	got     []string
	sources map[string]bool
}

func listen(t *testing.T, echo bool) *collector {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadBuffer(socketBuffer)
	c := &collector{conn: conn, done: make(chan struct{}), sources: map[string]bool{}}
	go c.read(echo)
	t.Cleanup(func() {
		conn.Close()
		<-c.done
	})
	return c
}

// dial is a device: a socket connected to addr that records what comes back.
func dial(t *testing.T, addr string) *collector {
	t.Helper()
	ra, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialUDP("udp", nil, ra)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadBuffer(socketBuffer)
	c := &collector{conn: conn, done: make(chan struct{}), sources: map[string]bool{}}
	go c.read(false)
	t.Cleanup(func() {
		conn.Close()
		<-c.done
	})
	return c
}

func (c *collector) read(echo bool) {
	defer close(c.done)
	buf := make([]byte, 2048)
	for {
		n, from, err := c.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		c.mu.Lock()
		c.got = append(c.got, string(buf[:n]))
		c.sources[from.String()] = true
		c.mu.Unlock()
		if echo {
			_, _ = c.conn.WriteToUDPAddrPort(buf[:n], from)
		}
	}
}

func (c *collector) addr() string { return c.conn.LocalAddr().String() }

func (c *collector) received() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

func (c *collector) sourceList() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var s []string
	for a := range c.sources {
		s = append(s, a)
	}
	slices.Sort(s)
	return s
}

// send writes each message as one datagram of a connected device socket.
func (c *collector) send(t *testing.T, msgs ...string) {
	t.Helper()
	for _, m := range msgs {
		if _, err := c.conn.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
}

// feed sends msgs up from d to srv through r in batches, waiting after each
// until the relay dealt with it and srv got every copy forwarded, so that no
// socket buffer overflows (a loss that no seed decides: the kernel may cap a
// socket's buffer at 208 KiB). It returns the stats at the end.
func feed(t *testing.T, r *Relay, d, srv *collector, msgs []string) Stats {
	t.Helper()
	const batch = 20
	var s Stats
	for i := 0; i < len(msgs); i += batch {
		d.send(t, msgs[i:min(i+batch, len(msgs))]...)
		s = settled(t, r, "up", int64(min(i+batch, len(msgs))))
		waitFor(t, "every copy at the server", func() bool { return len(srv.received()) == int(s.Up.Forwarded) })
	}
	return s
}

// numbered returns prefix0 … prefix(n-1).
func numbered(prefix string, n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return s
}

// settled waits until the relay has read want datagrams in direction dir
// ("up" or "down") and written or dropped every copy of them, and returns the
// stats then.
func settled(t *testing.T, r *Relay, dir string, want int64) Stats {
	t.Helper()
	var s Stats
	waitFor(t, fmt.Sprintf("%d datagrams %s through the relay", want, dir), func() bool {
		s = r.Stats()
		c := s.Up
		if dir == "down" {
			c = s.Down
		}
		// Received is counted first and Forwarded last, so the two sides
		// are equal only once every datagram read was dealt with.
		return c.Received >= want && s.Pending == 0 && c.Forwarded+c.Errors == c.Received-c.Dropped+c.Duplicated
	})
	return s
}

// TestNoFaults: without faults each device's datagrams and their echoes pass
// in order; the server sees one distinct source per device (none of them the
// device's own address) and each device gets only its own echoes back.
func TestNoFaults(t *testing.T) {
	srv := listen(t, true)
	r := Start(t, Options{Target: srv.addr(), Seed: 1})
	a, b := dial(t, r.Addr()), dial(t, r.Addr())
	msgsA, msgsB := numbered("a", 50), numbered("b", 50)
	a.send(t, msgsA...)
	b.send(t, msgsB...)
	waitFor(t, "both devices' echoes", func() bool { return len(a.received()) == 50 && len(b.received()) == 50 })
	if got := a.received(); !slices.Equal(got, msgsA) {
		t.Errorf("device a got %q, want its own datagrams in order", got)
	}
	if got := b.received(); !slices.Equal(got, msgsB) {
		t.Errorf("device b got %q, want its own datagrams in order", got)
	}
	src := srv.sourceList()
	if len(src) != 2 {
		t.Fatalf("server saw sources %v, want one per device", src)
	}
	for _, d := range []*collector{a, b} {
		if slices.Contains(src, d.conn.LocalAddr().String()) {
			t.Errorf("server saw the device's own address %s: the relay must send from its own socket", d.conn.LocalAddr())
		}
	}
	s := r.Stats()
	want := Counts{Received: 100, Forwarded: 100}
	if s.Up != want || s.Down != want || s.Devices != 2 {
		t.Errorf("stats %v, want 2 devices; %v each way", s, want)
	}
}

// TestLossAll: Loss 1 drops every datagram of its direction and nothing of
// the other.
func TestLossAll(t *testing.T) {
	t.Run("up", func(t *testing.T) {
		srv := listen(t, true)
		r := Start(t, Options{Target: srv.addr(), Up: Faults{Loss: 1}})
		d := dial(t, r.Addr())
		d.send(t, numbered("m", 20)...)
		s := settled(t, r, "up", 20)
		if s.Up.Dropped != 20 || s.Up.Forwarded != 0 {
			t.Errorf("up: %v, want all 20 dropped", s.Up)
		}
		if got := srv.received(); len(got) != 0 {
			t.Errorf("server got %q through a link that loses everything", got)
		}
	})
	t.Run("down", func(t *testing.T) {
		srv := listen(t, true)
		r := Start(t, Options{Target: srv.addr(), Down: Faults{Loss: 1}})
		d := dial(t, r.Addr())
		d.send(t, numbered("m", 20)...)
		waitFor(t, "20 datagrams at the server", func() bool { return len(srv.received()) == 20 })
		s := settled(t, r, "down", 20)
		if s.Down.Dropped != 20 || s.Down.Forwarded != 0 || s.Up.Dropped != 0 {
			t.Errorf("stats %v, want all 20 echoes dropped and none of the requests", s)
		}
		if got := d.received(); len(got) != 0 {
			t.Errorf("device got %q through a link that loses everything", got)
		}
	})
}

// TestDuplicate: Duplicate 1 writes every datagram twice, in each direction
// and in both together; Duplicate 0.5 duplicates some, and the counters say
// how many.
func TestDuplicate(t *testing.T) {
	for _, tt := range []struct {
		name             string
		up, down         float64
		atServer, atDevs int // of 30 datagrams sent
	}{
		{"up", 1, 0, 60, 60},
		{"down", 0, 1, 30, 60},
		{"both", 1, 1, 60, 120},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := listen(t, true)
			r := Start(t, Options{Target: srv.addr(), Up: Faults{Duplicate: tt.up}, Down: Faults{Duplicate: tt.down}})
			d := dial(t, r.Addr())
			d.send(t, numbered("m", 30)...)
			waitFor(t, fmt.Sprintf("%d echoes at the device", tt.atDevs), func() bool { return len(d.received()) == tt.atDevs })
			if got := len(srv.received()); got != tt.atServer {
				t.Errorf("server got %d datagrams, want %d", got, tt.atServer)
			}
			s := r.Stats()
			if s.Up.Forwarded != int64(tt.atServer) || s.Down.Forwarded != int64(tt.atDevs) {
				t.Errorf("stats %v, want %d forwarded up and %d down", s, tt.atServer, tt.atDevs)
			}
			if want := int64(tt.atServer - 30); s.Up.Duplicated != want {
				t.Errorf("up duplicated %d, want %d", s.Up.Duplicated, want)
			}
		})
	}
	t.Run("half", func(t *testing.T) {
		srv := listen(t, false)
		r := Start(t, Options{Target: srv.addr(), Up: Faults{Duplicate: 0.5}, Seed: 7})
		d := dial(t, r.Addr())
		s := feed(t, r, d, srv, numbered("m", 200))
		if s.Up.Forwarded != 200+s.Up.Duplicated || s.Up.Duplicated == 0 || s.Up.Duplicated == 200 {
			t.Errorf("up: %v: want some but not all of 200 datagrams duplicated", s.Up)
		}
		count := map[string]int{}
		for _, m := range srv.received() {
			count[m]++
		}
		twice := 0
		for _, m := range numbered("m", 200) {
			switch count[m] {
			case 1:
			case 2:
				twice++
			default:
				t.Errorf("%s arrived %d times, want 1 or 2", m, count[m])
			}
		}
		if int64(twice) != s.Up.Duplicated {
			t.Errorf("%d datagrams arrived twice, the relay counted %d duplicated", twice, s.Up.Duplicated)
		}
	})
}

// TestReorder: with Reorder 1 and a Hold that never ends during the test,
// every other datagram is held until the next one overtakes it, so pairs
// arrive swapped; in each direction.
func TestReorder(t *testing.T) {
	swapped := func(msgs []string) []string {
		s := slices.Clone(msgs)
		for i := 0; i+1 < len(s); i += 2 {
			s[i], s[i+1] = s[i+1], s[i]
		}
		return s
	}
	msgs := numbered("m", 10)
	for _, dir := range []string{"up", "down"} {
		t.Run(dir, func(t *testing.T) {
			reorder := Faults{Reorder: 1, Hold: time.Hour}
			o := Options{Up: reorder}
			if dir == "down" {
				o = Options{Down: reorder}
			}
			srv := listen(t, true)
			o.Target = srv.addr()
			r := Start(t, o)
			d := dial(t, r.Addr())
			d.send(t, msgs...)
			waitFor(t, "10 echoes", func() bool { return len(d.received()) == 10 })
			atServer, atDevice := msgs, swapped(msgs)
			if dir == "up" {
				atServer, atDevice = swapped(msgs), swapped(msgs)
			}
			if got := srv.received(); !slices.Equal(got, atServer) {
				t.Errorf("server got %q, want %q", got, atServer)
			}
			if got := d.received(); !slices.Equal(got, atDevice) {
				t.Errorf("device got %q, want %q", got, atDevice)
			}
			s := r.Stats()
			c, other := s.Up, s.Down
			if dir == "down" {
				c, other = s.Down, s.Up
			}
			if c.Held != 5 || c.Reordered != 5 || other.Held != 0 {
				t.Errorf("stats %v, want 5 held and 5 reordered %s only", s, dir)
			}
			// Close (by Cleanup) discards the five pending hold deadlines;
			// TestMain's leak check sees the scheduler gone.
		})
	}
}

// TestHoldEnds: a held datagram that nothing overtakes is released after
// Hold, not lost.
func TestHoldEnds(t *testing.T) {
	srv := listen(t, false)
	r := Start(t, Options{Target: srv.addr(), Up: Faults{Reorder: 1, Hold: 20 * time.Millisecond}})
	d := dial(t, r.Addr())
	d.send(t, "alone")
	waitFor(t, "the held datagram", func() bool { return len(srv.received()) == 1 })
	if s := r.Stats(); s.Up.Held != 1 || s.Up.Reordered != 0 || s.Up.Forwarded != 1 {
		t.Errorf("up: %v, want 1 held, released without reordering", s.Up)
	}
}

// TestDelay: a delay without jitter keeps the order; with jitter every
// datagram still arrives once. No timing is asserted.
func TestDelay(t *testing.T) {
	msgs := numbered("m", 50)
	t.Run("fixed", func(t *testing.T) {
		srv := listen(t, true)
		d20 := Faults{Delay: 20 * time.Millisecond}
		r := Start(t, Options{Target: srv.addr(), Up: d20, Down: d20})
		d := dial(t, r.Addr())
		d.send(t, msgs...)
		waitFor(t, "50 echoes", func() bool { return len(d.received()) == 50 })
		if got := d.received(); !slices.Equal(got, msgs) {
			t.Errorf("device got %q, want the order kept", got)
		}
	})
	t.Run("jitter", func(t *testing.T) {
		srv := listen(t, true)
		j := Faults{Delay: 5 * time.Millisecond, Jitter: 30 * time.Millisecond}
		r := Start(t, Options{Target: srv.addr(), Up: j, Down: j, Seed: 3})
		d := dial(t, r.Addr())
		d.send(t, msgs...)
		waitFor(t, "50 echoes", func() bool { return len(d.received()) == 50 })
		if got := slices.Sorted(slices.Values(d.received())); !slices.Equal(got, slices.Sorted(slices.Values(msgs))) {
			t.Errorf("device got %q, want each datagram once", got)
		}
		if s := r.Stats(); s.Up.Forwarded != 50 || s.Down.Forwarded != 50 {
			t.Errorf("stats %v", s)
		}
	})
}

// TestSeedDecides: the same seed and the same datagrams give the same fates;
// another seed gives others.
func TestSeedDecides(t *testing.T) {
	msgs := numbered("m", 200)
	run := func(seed int64) string {
		srv := listen(t, false)
		r := Start(t, Options{Target: srv.addr(), Seed: seed, Up: Faults{Loss: 0.3, Duplicate: 0.3}})
		d := dial(t, r.Addr())
		s := feed(t, r, d, srv, msgs)
		if s.Up.Dropped == 0 || s.Up.Duplicated == 0 {
			t.Errorf("seed %d: %v: want some dropped and some duplicated", seed, s.Up)
		}
		return strings.Join(srv.received(), ",")
	}
	a, b, c := run(42), run(42), run(43)
	if a != b {
		t.Errorf("seed 42 twice gave different fates:\n%s\n%s", a, b)
	}
	if a == c {
		t.Errorf("seeds 42 and 43 gave the same fates: %s", a)
	}
}

// TestBadOptions: New refuses what it cannot do, with the sentinel error.
func TestBadOptions(t *testing.T) {
	for _, tt := range []struct {
		name string
		o    Options
		want error
	}{
		{"no target", Options{}, ErrNoTarget},
		{"loss above 1", Options{Target: "127.0.0.1:1", Up: Faults{Loss: 1.5}}, ErrBadFaults},
		{"NaN", Options{Target: "127.0.0.1:1", Down: Faults{Reorder: math.NaN()}}, ErrBadFaults},
		{"negative delay", Options{Target: "127.0.0.1:1", Down: Faults{Delay: -time.Second}}, ErrBadFaults},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := New(tt.o)
			if err == nil {
				r.Close()
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("New: %v, want %v", err, tt.want)
			}
		})
	}
}

// TestCloseIdempotent: Close returns after its goroutines exited (TestMain
// checks), twice, with datagrams still delayed.
func TestCloseIdempotent(t *testing.T) {
	srv := listen(t, true)
	r, err := New(Options{Target: srv.addr(), Up: Faults{Delay: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	d := dial(t, r.Addr())
	d.send(t, "late")
	waitFor(t, "the datagram scheduled", func() bool { return r.Stats().Pending == 1 })
	r.Close()
	r.Close()
	if got := srv.received(); len(got) != 0 {
		t.Errorf("server got %q from a relay closed before the delay ended", got)
	}
}
