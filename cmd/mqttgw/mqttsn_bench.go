package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqttgw/mqttgw/mqttsn"
)

// The load tool: N simulated MQTT-SN devices publish through the gateway while an
// MQTT subscriber on the broker timestamps their arrival; then the same load is
// published straight to the broker over MQTT by N paho clients, and the two are
// printed side by side. Loopback only, bounded in clients, messages and time.

const (
	benchMaxClients  = 20000
	benchMaxMessages = 10_000_000 // in total
	benchHeader      = 16         // send time (8), client (4), sequence (4)
)

type benchConfig struct {
	snAddr, mqttURL, user, pass string
	clients, messages, qos      int
	size                        int
	limit                       time.Duration
	topic, mountpoint           string
	gatewayPID, brokerPID       int
	connectParallel             int
	skipDirect                  bool
	run                         string
}

// runBenchMQTTSN is bench over MQTT-SN (the default).
func runBenchMQTTSN(cmd *command, c benchConfig, stdout, stderr io.Writer) int {
	if err := c.check(); err != nil {
		return cmd.usageError(stderr, "%v", err)
	}
	var rb [3]byte
	_, _ = rand.Read(rb[:])
	c.run = hex.EncodeToString(rb[:])

	fmt.Fprintf(stdout, "mqttgw bench run %s: %d clients × %d messages, QoS %d, %d-octet payloads; %d CPUs (GOMAXPROCS %d)\n",
		c.run, c.clients, c.messages, c.qos, c.size, runtime.NumCPU(), runtime.GOMAXPROCS(0))
	sub, err := newBenchSub(c)
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw bench: subscriber: %v\n", err)
		return 1
	}
	defer sub.close()

	results := []*phaseResult{}
	gw, err := runPhase(c, sub, "gateway (MQTT-SN)", c.gatewayPID, snPublishers(c))
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw bench: gateway phase: %v\n", err)
		return 1
	}
	results = append(results, gw)
	if !c.skipDirect {
		direct, err := runPhase(c, sub, "direct (MQTT)", c.brokerPID, mqttPublishers(c))
		if err != nil {
			fmt.Fprintf(stderr, "mqttgw bench: direct phase: %v\n", err)
			return 1
		}
		results = append(results, direct)
	}
	printBench(stdout, c, results)
	for _, r := range results {
		if r.received < r.expected {
			return 1
		}
	}
	return 0
}

func (c *benchConfig) check() error {
	switch {
	case c.clients < 1 || c.clients > benchMaxClients:
		return fmt.Errorf("--clients %d: want 1..%d", c.clients, benchMaxClients)
	case c.messages < 1 || c.clients*c.messages > benchMaxMessages:
		return fmt.Errorf("--messages %d: want at least 1 and at most %d in total", c.messages, benchMaxMessages)
	case c.qos < 0 || c.qos > 2:
		return fmt.Errorf("--qos %d: want 0, 1 or 2", c.qos)
	case c.size < benchHeader || c.size > 60000:
		return fmt.Errorf("--size %d: want %d..60000", c.size, benchHeader)
	case c.limit <= 0 || c.limit > time.Hour:
		return fmt.Errorf("--duration-limit %v: want up to 1h", c.limit)
	case c.connectParallel < 1:
		return errors.New("--connect-parallel: want at least 1")
	}
	if err := loopbackOnly(c.snAddr); err != nil {
		return fmt.Errorf("--mqttsn: %w", err)
	}
	u, err := url.Parse(c.mqttURL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("--mqtt %q: want tcp://HOST:PORT", c.mqttURL)
	}
	if err := loopbackOnly(u.Host); err != nil {
		return fmt.Errorf("--mqtt: %w", err)
	}
	return nil
}

// --- the subscriber: one paho connection timestamping arrivals ---

type benchSub struct {
	client paho.Client
	mu     sync.Mutex
	phase  *phaseResult // the phase being measured; nil between phases
}

func newBenchSub(c benchConfig) (*benchSub, error) {
	s := &benchSub{}
	cl, err := benchMQTT(c.mqttURL, c.user, c.pass, "mqttgw-bench-sub-"+c.run)
	if err != nil {
		return nil, err
	}
	s.client = cl
	filter := c.mountpoint + c.topic + "/" + c.run + "/#"
	tok := s.client.Subscribe(filter, byte(c.qos), func(_ paho.Client, m paho.Message) { s.received(m.Payload()) })
	if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("subscribe %s: %v", filter, tok.Error())
	}
	return s, nil
}

func (s *benchSub) received(p []byte) {
	now := time.Now()
	if len(p) < benchHeader {
		return
	}
	sent := time.Unix(0, int64(binary.BigEndian.Uint64(p)))
	idx := int(binary.BigEndian.Uint32(p[8:]))
	seq := int(binary.BigEndian.Uint32(p[12:]))
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.phase
	if r == nil {
		return
	}
	k := idx*r.messages + seq
	if idx >= r.clients || seq >= r.messages || k >= len(r.seen) {
		return
	}
	if r.seen[k] {
		r.duplicates++
		return
	}
	r.seen[k] = true
	r.received++
	r.latencies = append(r.latencies, now.Sub(sent))
	r.lastRecv = now
	if r.received == r.expected {
		close(r.done)
	}
}

func (s *benchSub) close() { s.client.Disconnect(250) }

// --- a phase: connect N publishers, publish, measure ---

// publisherSet is one kind of publisher: connect makes client i ready, publish
// sends one message, close ends them all.
type publisherSet struct {
	connect func(ctx context.Context, i int) error
	publish func(ctx context.Context, i int, payload []byte) error
	close   func()
}

type phaseResult struct {
	name                        string
	clients, messages, expected int
	connectTime                 time.Duration
	rssBefore, rssAfter         int64 // kB; 0 when unknown
	cpu                         map[string]float64
	wall                        time.Duration
	sent, failed                atomic.Int64
	firstSend                   time.Time

	received, duplicates int
	latencies            []time.Duration
	lastRecv             time.Time
	seen                 []bool
	done                 chan struct{}
}

func runPhase(c benchConfig, sub *benchSub, name string, pid int, ps publisherSet) (*phaseResult, error) {
	defer ps.close()
	r := &phaseResult{name: name, clients: c.clients, messages: c.messages, expected: c.clients * c.messages,
		seen: make([]bool, c.clients*c.messages), done: make(chan struct{}), latencies: make([]time.Duration, 0, c.clients*c.messages)}
	ctx, cancel := context.WithTimeout(context.Background(), c.limit)
	defer cancel()

	// Connect every client, a few at a time.
	r.rssBefore = rssKB(pid)
	start := time.Now()
	sem := make(chan struct{}, c.connectParallel)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for i := range c.clients {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := ps.connect(ctx, i); err != nil {
				firstErr.CompareAndSwap(nil, fmt.Errorf("client %d: %w", i, err))
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return nil, err
	}
	r.connectTime = time.Since(start)
	time.Sleep(500 * time.Millisecond) // let the servers settle before measuring memory
	r.rssAfter = rssKB(pid)

	sub.mu.Lock()
	sub.phase = r
	sub.mu.Unlock()
	defer func() {
		sub.mu.Lock()
		sub.phase = nil
		sub.mu.Unlock()
	}()

	cpuBefore := cpuTimes(c.gatewayPID, c.brokerPID)
	r.firstSend = time.Now()
	payloadBase := make([]byte, c.size)
	for i := range c.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := slices.Clone(payloadBase)
			binary.BigEndian.PutUint32(p[8:], uint32(i))
			for seq := range c.messages {
				binary.BigEndian.PutUint32(p[12:], uint32(seq))
				binary.BigEndian.PutUint64(p, uint64(time.Now().UnixNano()))
				if err := ps.publish(ctx, i, p); err != nil {
					r.failed.Add(1)
					if ctx.Err() != nil {
						return
					}
					continue
				}
				r.sent.Add(1)
			}
		}()
	}
	wg.Wait()
	select {
	case <-r.done:
	case <-ctx.Done():
	}
	end := time.Now()
	cpuAfter := cpuTimes(c.gatewayPID, c.brokerPID)
	sub.mu.Lock()
	r.wall = end.Sub(r.firstSend)
	if r.received > 0 {
		r.wall = r.lastRecv.Sub(r.firstSend)
	}
	r.cpu = map[string]float64{}
	for k, v := range cpuAfter {
		r.cpu[k] = v - cpuBefore[k]
	}
	slices.Sort(r.latencies)
	sub.mu.Unlock()
	return r, nil
}

// snPublishers are MQTT-SN clients, each with its own UDP socket, like devices.
func snPublishers(c benchConfig) publisherSet {
	clients := make([]*mqttsn.Client, c.clients)
	topics := make([]string, c.clients)
	return publisherSet{
		connect: func(ctx context.Context, i int) error {
			cl, err := mqttsn.Dial(ctx, c.snAddr, mqttsn.ClientOptions{
				ClientID: fmt.Sprintf("b%s-%d", c.run, i), CleanSession: true,
				Keepalive: 5 * time.Minute, RetryInterval: 2 * time.Second, MaxRetries: 5,
			})
			if err != nil {
				return err
			}
			clients[i] = cl
			if err := cl.Connect(ctx); err != nil {
				return err
			}
			topics[i] = fmt.Sprintf("%s/%s/sn/%d", c.topic, c.run, i)
			_, err = cl.Register(ctx, topics[i])
			return err
		},
		publish: func(ctx context.Context, i int, p []byte) error {
			return clients[i].Publish(ctx, topics[i], mqttsn.QoS(c.qos), false, p)
		},
		close: func() {
			var wg sync.WaitGroup
			for _, cl := range clients {
				if cl == nil {
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
					defer cancel()
					_ = cl.Disconnect(ctx)
					cl.Close()
				}()
			}
			wg.Wait()
		},
	}
}

// mqttPublishers are paho clients publishing straight to the broker.
func mqttPublishers(c benchConfig) publisherSet {
	clients := make([]paho.Client, c.clients)
	topic := func(i int) string { return fmt.Sprintf("%s%s/%s/mqtt/%d", c.mountpoint, c.topic, c.run, i) }
	return publisherSet{
		connect: func(ctx context.Context, i int) error {
			cl, err := benchMQTT(c.mqttURL, c.user, c.pass, fmt.Sprintf("mqttgw-bench-%s-%d", c.run, i))
			clients[i] = cl
			return err
		},
		publish: func(ctx context.Context, i int, p []byte) error {
			if err := waitTok(ctx, clients[i].Publish(topic(i), byte(c.qos), false, p)); err != nil {
				return fmt.Errorf("publish: %w", err)
			}
			return nil
		},
		close: func() {
			for _, cl := range clients {
				if cl != nil && cl.IsConnected() {
					cl.Disconnect(0)
				}
			}
		},
	}
}

// --- report ---

func (r *phaseResult) rate() float64 {
	if r.wall <= 0 {
		return 0
	}
	return float64(r.received) / r.wall.Seconds()
}

func printBench(w io.Writer, c benchConfig, rs []*phaseResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(label string, f func(r *phaseResult) string, ratio func(a, b *phaseResult) string) {
		fmt.Fprintf(tw, "%s\t", label)
		for _, r := range rs {
			fmt.Fprintf(tw, "%s\t", f(r))
		}
		if len(rs) == 2 && ratio != nil {
			fmt.Fprintf(tw, "%s\t", ratio(rs[0], rs[1]))
		} else if len(rs) == 2 {
			fmt.Fprint(tw, "\t")
		}
		fmt.Fprintln(tw)
	}
	ratio := func(a, b float64) string {
		if b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f×", a/b)
	}
	fmt.Fprintf(tw, "\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t", r.name)
	}
	if len(rs) == 2 {
		fmt.Fprint(tw, "gateway/direct\t")
	}
	fmt.Fprintln(tw)
	row("connect all clients", func(r *phaseResult) string { return r.connectTime.Round(time.Millisecond).String() },
		func(a, b *phaseResult) string { return ratio(float64(a.connectTime), float64(b.connectTime)) })
	row("messages received", func(r *phaseResult) string { return fmt.Sprintf("%d/%d", r.received, r.expected) }, nil)
	row("publish errors", func(r *phaseResult) string { return strconv.FormatInt(r.failed.Load(), 10) }, nil)
	row("duplicates", func(r *phaseResult) string { return strconv.Itoa(r.duplicates) }, nil)
	row("first send → last receipt", func(r *phaseResult) string { return r.wall.Round(time.Millisecond).String() }, nil)
	row("messages/s", func(r *phaseResult) string { return fmt.Sprintf("%.0f", r.rate()) },
		func(a, b *phaseResult) string { return ratio(a.rate(), b.rate()) })
	for _, p := range []struct {
		name string
		q    float64
	}{{"latency p50", 0.50}, {"latency p99", 0.99}, {"latency max", 1}} {
		row(p.name, func(r *phaseResult) string { return percentile(r.latencies, p.q).Round(time.Microsecond).String() },
			func(a, b *phaseResult) string {
				return ratio(float64(percentile(a.latencies, p.q)), float64(percentile(b.latencies, p.q)))
			})
	}
	if c.gatewayPID > 0 || c.brokerPID > 0 {
		row("server RSS before → after connect", func(r *phaseResult) string {
			if r.rssAfter == 0 {
				return "-"
			}
			return fmt.Sprintf("%d → %d kB", r.rssBefore, r.rssAfter)
		}, nil)
		perClient := func(r *phaseResult) float64 { return float64(r.rssAfter-r.rssBefore) * 1024 / float64(r.clients) }
		row("server memory per connected client", func(r *phaseResult) string {
			if r.rssAfter == 0 {
				return "-"
			}
			return fmt.Sprintf("%.0f B", perClient(r))
		}, func(a, b *phaseResult) string {
			if a.rssAfter == 0 || b.rssAfter == 0 {
				return "-"
			}
			return ratio(perClient(a), perClient(b))
		})
	}
	for _, proc := range []string{"gateway", "broker", "bench"} {
		row("CPU "+proc+" (share of 1 core)", func(r *phaseResult) string {
			v, ok := r.cpu[proc]
			if !ok || v < 0 || r.wall <= 0 {
				return "-"
			}
			return fmt.Sprintf("%.2fs (%.0f%%)", v, 100*v/r.wall.Seconds())
		}, nil)
	}
	tw.Flush()
	if len(rs) == 2 {
		fmt.Fprintln(w, "server = the gateway process (MQTT-SN column) and the broker process (MQTT column).")
	}
}
