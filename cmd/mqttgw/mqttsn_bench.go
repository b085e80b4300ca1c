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
	"sync"
	"sync/atomic"
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
	udpAddr                     string // the plain-UDP listener (--udp); "" loads MQTT-SN
	clients, messages, qos      int
	size                        int
	rate                        float64 // messages/s from all clients together; 0: unpaced
	limit                       time.Duration
	topic, mountpoint           string
	gatewayPID, brokerPID       int
	connectParallel             int
	skipDirect                  bool
	run                         string
	progress                    io.Writer // a line each second; nil: none
}

// gatewayName is the gateway column's name.
func (c *benchConfig) gatewayName() string {
	if c.udpAddr != "" {
		return "gateway (plain UDP)"
	}
	return "gateway (MQTT-SN)"
}

// newRun gives c a fresh run id: the topics and client ids of one run.
func (c *benchConfig) newRun() {
	var rb [3]byte
	_, _ = rand.Read(rb[:])
	c.run = hex.EncodeToString(rb[:])
}

// runBenchMQTTSN is bench over MQTT-SN (the default) or plain UDP (--udp).
func runBenchMQTTSN(cmd *command, c benchConfig, stdout, stderr io.Writer) int {
	if err := c.check(); err != nil {
		return cmd.usageError(stderr, "%v", err)
	}
	c.newRun()
	pace := ""
	if c.rate > 0 {
		pace = fmt.Sprintf(" at %.0f messages/s", c.rate)
	}
	target := "MQTT-SN " + c.snAddr
	if c.udpAddr != "" {
		target = "plain UDP " + c.udpAddr
	}
	fmt.Fprintf(stdout, "mqttgw bench run %s: %s, %d clients × %d messages, QoS %d%s, %d-octet payloads; %d CPUs (GOMAXPROCS %d)\n",
		c.run, target, c.clients, c.messages, c.qos, pace, c.size, runtime.NumCPU(), runtime.GOMAXPROCS(0))
	results, err := benchLoad(c)
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw bench: %v\n", err)
		return 1
	}
	printBench(stdout, c, results)
	for _, r := range results {
		if r.received < r.expected {
			return 1
		}
	}
	return 0
}

// benchLoad runs the gateway phase and, unless skipped, the direct one, with
// one measuring subscriber; c has its run id.
func benchLoad(c benchConfig) ([]*phaseResult, error) {
	sub, err := newBenchSub(c)
	if err != nil {
		return nil, fmt.Errorf("subscriber: %w", err)
	}
	defer sub.close()
	gwSet := snPublishers(c)
	if c.udpAddr != "" {
		gwSet = rawPublishers(c)
	}
	gw, err := runPhase(c, sub, c.gatewayName(), c.gatewayPID, gwSet)
	if err != nil {
		return nil, fmt.Errorf("gateway phase: %w", err)
	}
	results := []*phaseResult{gw}
	if !c.skipDirect {
		direct, err := runPhase(c, sub, "direct (MQTT)", c.brokerPID, mqttPublishers(c))
		if err != nil {
			return nil, fmt.Errorf("direct phase: %w", err)
		}
		results = append(results, direct)
	}
	return results, nil
}

func (c *benchConfig) check() error {
	switch {
	case c.clients < 1 || c.clients > benchMaxClients:
		return fmt.Errorf("--clients %d: want 1..%d", c.clients, benchMaxClients)
	case c.messages < 1 || c.clients*c.messages > benchMaxMessages:
		return fmt.Errorf("--messages %d: want at least 1 and at most %d in total", c.messages, benchMaxMessages)
	case c.qos < 0 || c.qos > 2:
		return fmt.Errorf("--qos %d: want 0, 1 or 2", c.qos)
	case c.udpAddr != "" && c.qos > 1:
		return fmt.Errorf("--qos %d: a plain-UDP device sends QoS 0 or, acknowledged, 1", c.qos)
	case c.size < benchHeader || c.size > 60000:
		return fmt.Errorf("--size %d: want %d..60000", c.size, benchHeader)
	case c.udpAddr != "" && c.size < rawBenchHeader:
		return fmt.Errorf("--size %d: a plain-UDP datagram carries the run id too: want at least %d", c.size, rawBenchHeader)
	case c.rate < 0 || c.rate > 1e7:
		return fmt.Errorf("--rate %v: want 0 (unpaced) up to 10000000 messages/s", c.rate)
	case c.limit <= 0 || c.limit > time.Hour:
		return fmt.Errorf("--duration-limit %v: want up to 1h", c.limit)
	case c.connectParallel < 1:
		return errors.New("--connect-parallel: want at least 1")
	}
	if c.udpAddr != "" {
		if err := loopbackOnly(c.udpAddr); err != nil {
			return fmt.Errorf("--udp: %w", err)
		}
	} else if err := loopbackOnly(c.snAddr); err != nil {
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
// sends one message (and, at QoS >= 1, returns once it is acknowledged), close
// ends them all. udpTarget, when set, is the gateway's UDP listener, whose
// kernel drops the phase reports.
type publisherSet struct {
	connect   func(ctx context.Context, i int) error
	publish   func(ctx context.Context, i int, payload []byte) error
	close     func()
	udpTarget string
}

type phaseResult struct {
	name                        string
	clients, messages, expected int
	qos                         int
	connectTime                 time.Duration
	rssStart, rssAfter, rssEnd  int64 // kB; 0 when unknown: before connecting, connected, after closing
	cpu                         map[string]cpuTime
	wall                        time.Duration
	sent, acked, failed         atomic.Int64
	firstSend                   time.Time
	kernelDrops                 int64 // -1 unknown

	received, duplicates int
	latencies            []time.Duration
	lastRecv             time.Time
	seen                 []bool
	done                 chan struct{}
}

func runPhase(c benchConfig, sub *benchSub, name string, pid int, ps publisherSet) (*phaseResult, error) {
	closed := false
	closeAll := func() {
		if !closed {
			closed = true
			ps.close()
		}
	}
	defer closeAll()
	r := &phaseResult{name: name, clients: c.clients, messages: c.messages, expected: c.clients * c.messages, qos: c.qos,
		seen: make([]bool, c.clients*c.messages), done: make(chan struct{}), latencies: make([]time.Duration, 0, c.clients*c.messages),
		kernelDrops: -1}
	ctx, cancel := context.WithTimeout(context.Background(), c.limit)
	defer cancel()

	// Connect every client, a few at a time.
	r.rssStart = rssKB(pid)
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
	delivered := func() int {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		return r.received
	}
	stopProgress := startProgress(c.progress, name, r.expected, r.sent.Load, delivered)
	defer stopProgress()

	dropsBefore := int64(-1)
	if ps.udpTarget != "" {
		dropsBefore = udpDrops(ps.udpTarget)
	}
	cpuBefore := cpuTimes(c.gatewayPID, c.brokerPID)
	r.firstSend = time.Now()
	// At a fixed rate each client sends every interval, client i offset by
	// i/clients of it, so that the sends of all are evenly spread.
	var interval time.Duration
	if c.rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(c.clients) / c.rate)
	}
	payloadBase := make([]byte, c.size)
	for i := range c.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := slices.Clone(payloadBase)
			binary.BigEndian.PutUint32(p[8:], uint32(i))
			offset := interval * time.Duration(i) / time.Duration(c.clients)
			for seq := range c.messages {
				if interval > 0 && !sleepUntil(ctx, r.firstSend.Add(offset+time.Duration(seq)*interval)) {
					return
				}
				binary.BigEndian.PutUint32(p[12:], uint32(seq))
				binary.BigEndian.PutUint64(p, uint64(time.Now().UnixNano()))
				r.sent.Add(1)
				if err := ps.publish(ctx, i, p); err != nil {
					r.failed.Add(1)
					if ctx.Err() != nil {
						return
					}
					continue
				}
				if c.qos > 0 {
					r.acked.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	waitDelivered(ctx, r.done, delivered, 2*time.Second)
	end := time.Now()
	r.cpu = cpuSince(cpuBefore, c.gatewayPID, c.brokerPID)
	if dropsBefore >= 0 {
		if after := udpDrops(ps.udpTarget); after >= 0 {
			r.kernelDrops = after - dropsBefore
		}
	}
	stopProgress()
	closeAll()
	r.rssEnd = rssKB(pid)
	sub.mu.Lock()
	r.wall = end.Sub(r.firstSend)
	if r.received > 0 {
		r.wall = r.lastRecv.Sub(r.firstSend)
	}
	slices.Sort(r.latencies)
	sub.mu.Unlock()
	return r, nil
}

// sleepUntil waits until t or the end of ctx; false: ctx ended.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// snPublishers are MQTT-SN clients, each with its own UDP socket, like devices.
func snPublishers(c benchConfig) publisherSet {
	clients := make([]*mqttsn.Client, c.clients)
	topics := make([]string, c.clients)
	return publisherSet{
		udpTarget: c.snAddr,
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

// figures are r's figures for the report and the matrix; sub's lock must not
// be held, nor the phase be running.
func (r *phaseResult) figures() *benchFigures {
	f := &benchFigures{name: r.name, expected: r.expected, sent: int(r.sent.Load()), failed: int(r.failed.Load()),
		acked: int(r.acked.Load()), acks: r.qos > 0, delivered: r.received, dups: r.duplicates, wall: r.wall,
		cpu: r.cpu, rssStart: r.rssStart, rssConnected: r.rssAfter, rssEnd: r.rssEnd, kernelDrops: r.kernelDrops}
	latencies(r.latencies, f)
	return f
}

func printBench(w io.Writer, c benchConfig, rs []*phaseResult) {
	cols := make([]*benchFigures, len(rs))
	for i, r := range rs {
		cols[i] = r.figures()
	}
	perClient := func(r *phaseResult) string {
		if r.rssAfter == 0 || r.rssStart == 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f B", float64(r.rssAfter-r.rssStart)*1024/float64(r.clients))
	}
	byName := func(f *benchFigures) *phaseResult {
		for _, r := range rs {
			if r.name == f.name {
				return r
			}
		}
		return rs[0]
	}
	printFigures(w, cols, len(cols) == 2,
		benchRow{"connect all clients", func(f *benchFigures) string {
			return byName(f).connectTime.Round(time.Millisecond).String()
		}},
		benchRow{"server memory per connected client", func(f *benchFigures) string { return perClient(byName(f)) }})
	if len(rs) == 2 {
		fmt.Fprintln(w, "server = the gateway process (gateway column) and the broker process (direct column); CPU and RSS need --gateway-pid and --broker-pid.")
	}
}
