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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// The CoAP load tool. Phase 1, for Confirmable and for Non-confirmable requests:
// D simulated devices (each its own UDP socket and client id) send PUT
// /ps/TOPIC one after another, each after the previous one's response, while an
// MQTT subscriber on the broker timestamps the arrivals; then D paho clients
// publish the same load straight to the broker (QoS 1 beside CON, QoS 0 beside
// NON). Phase 2, the cost of an observer: K devices observe one topic and M
// messages are published to it; then K paho subscribers take the same M
// messages. Loopback only; every phase is bounded in count and time.

const (
	coapBenchMaxDevices = 10000
	coapBenchMaxTotal   = 10_000_000
	coapBenchHeader     = 16 // send time (8), device (4), sequence (4)
)

type coapBenchConfig struct {
	coapURL, mqttURL, user, pass string
	deviceUser, devicePass       string // the CoAP query's u and p, for listeners that check passwords
	host                         string // the gateway's CoAP HOST:PORT
	devices, requests, size      int
	observers, notifications     int
	con, non                     bool
	limit                        time.Duration
	topic, mountpoint            string
	gatewayPID, brokerPID        int
	run                          string
	progress                     io.Writer // a line each second; nil: none
}

// runBenchCoAP is bench --coap.
func runBenchCoAP(cmd *command, c coapBenchConfig, stdout, stderr io.Writer) int {
	if !c.con && !c.non {
		c.con, c.non = true, true
	}
	if err := c.check(); err != nil {
		return cmd.usageError(stderr, "%v", err)
	}
	c.newRun()
	per := max(1, c.requests/c.devices)
	fmt.Fprintf(stdout, "mqttgw bench --coap run %s: %d devices × %d publishes per mode, %d-octet payloads; %d observers × %d messages; %d CPUs (GOMAXPROCS %d)\n\n",
		c.run, c.devices, per, c.size, c.observers, c.notifications, runtime.NumCPU(), runtime.GOMAXPROCS(0))

	sub, err := newCoAPBenchSub(c)
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw bench: subscriber: %v\n", err)
		return 1
	}
	defer sub.client.Disconnect(250)

	code := 0
	var cols []*coapBenchPhase
	modes := []bool{}
	if c.con {
		modes = append(modes, true)
	}
	if c.non {
		modes = append(modes, false)
	}
	for _, con := range modes {
		gw, err := c.publishPhase(sub, con, per, true)
		if err != nil {
			fmt.Fprintf(stderr, "mqttgw bench: %v\n", err)
			return 1
		}
		direct, err := c.publishPhase(sub, con, per, false)
		if err != nil {
			fmt.Fprintf(stderr, "mqttgw bench: %v\n", err)
			return 1
		}
		cols = append(cols, gw, direct)
		if gw.received < gw.expected || direct.received < direct.expected {
			code = 1
		}
	}
	printCoAPPublishes(stdout, cols)
	if c.observers > 0 {
		gw, err := c.observePhase(true)
		if err != nil {
			fmt.Fprintf(stderr, "mqttgw bench: %v\n", err)
			return 1
		}
		direct, err := c.observePhase(false)
		if err != nil {
			fmt.Fprintf(stderr, "mqttgw bench: %v\n", err)
			return 1
		}
		printCoAPObservers(stdout, c, gw, direct)
		if gw.received < gw.expected || direct.received < direct.expected {
			code = 1
		}
	}
	return code
}

// newRun gives c a fresh run id: the topics and client ids of one run.
func (c *coapBenchConfig) newRun() {
	var rb [3]byte
	_, _ = rand.Read(rb[:])
	c.run = hex.EncodeToString(rb[:])
}

func (c *coapBenchConfig) check() error {
	switch {
	case c.devices < 1 || c.devices > coapBenchMaxDevices:
		return fmt.Errorf("--devices %d: want 1..%d", c.devices, coapBenchMaxDevices)
	case c.requests < 1 || c.requests > coapBenchMaxTotal:
		return fmt.Errorf("--requests %d: want 1..%d", c.requests, coapBenchMaxTotal)
	case c.observers < 0 || c.observers > coapBenchMaxDevices:
		return fmt.Errorf("--observers %d: want 0..%d", c.observers, coapBenchMaxDevices)
	case c.notifications < 1 || c.observers*c.notifications > coapBenchMaxTotal:
		return fmt.Errorf("--notifications %d: want at least 1 and observers × notifications at most %d", c.notifications, coapBenchMaxTotal)
	case c.size < coapBenchHeader || c.size > 60000:
		return fmt.Errorf("--size %d: want %d..60000", c.size, coapBenchHeader)
	case c.limit <= 0 || c.limit > time.Hour:
		return fmt.Errorf("--duration-limit %v: want up to 1h", c.limit)
	}
	t, err := parseCoAPURL(c.coapURL)
	if err != nil {
		return err
	}
	if t.secure {
		return errors.New("--coap: the load tool speaks plain coap:// only")
	}
	c.host = t.host
	if err := loopbackOnly(c.host); err != nil {
		return fmt.Errorf("--coap: %w", err)
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

// deviceQuery is a simulated device's Uri-Query: its client id and, when
// given, its credentials.
func (c *coapBenchConfig) deviceQuery(clientID string) message.Options {
	q := []string{"c=" + clientID}
	if c.deviceUser != "" {
		q = append(q, "u="+c.deviceUser, "p="+c.devicePass)
	}
	opts := make(message.Options, len(q))
	for i, kv := range q {
		opts[i] = message.Option{ID: message.URIQuery, Value: []byte(kv)}
	}
	return opts
}

// isRefusal reports whether err is the gateway refusing the device (4.01
// Unauthorized, 4.03 Forbidden) rather than a lost or late message.
func isRefusal(err error) bool {
	var ce codeError
	return errors.As(err, &ce) && (ce.code == codes.Unauthorized || ce.code == codes.Forbidden)
}

// coapBenchPhase is one column of the report.
type coapBenchPhase struct {
	name                string
	expected            int
	sent, failed        atomic.Int64
	firstSend, lastAns  time.Time
	rssBefore, rssAfter int64 // kB; 0 unknown: before connecting, connected
	rssEnd              int64 // kB after closing; 0 unknown
	cpu                 map[string]cpuTime
	connect             time.Duration
	acks                bool  // answered requests are acknowledged publishes (not for observers)
	kernelDrops         int64 // the gateway's CoAP socket; -1 unknown

	mu        sync.Mutex // guards the fields below (the subscriber or observers write them)
	received  int
	dups      int
	seen      []bool
	latencies []time.Duration
	lastRecv  time.Time
	done      chan struct{}
	devices   int
	per       int
}

func newCoAPBenchPhase(name string, devices, per int) *coapBenchPhase {
	return &coapBenchPhase{name: name, expected: devices * per, devices: devices, per: per, kernelDrops: -1,
		seen: make([]bool, devices*per), done: make(chan struct{}), latencies: make([]time.Duration, 0, devices*per)}
}

// arrived records one message (its payload carries send time, device, sequence).
func (p *coapBenchPhase) arrived(b []byte, now time.Time) {
	if len(b) < coapBenchHeader {
		return
	}
	sent := time.Unix(0, int64(binary.BigEndian.Uint64(b)))
	dev, seq := int(binary.BigEndian.Uint32(b[8:])), int(binary.BigEndian.Uint32(b[12:]))
	p.mu.Lock()
	defer p.mu.Unlock()
	k := dev*p.per + seq
	if dev >= p.devices || seq >= p.per || k >= len(p.seen) {
		return
	}
	if p.seen[k] {
		p.dups++
		return
	}
	p.seen[k] = true
	p.received++
	p.latencies = append(p.latencies, now.Sub(sent))
	p.lastRecv = now
	if p.received == p.expected {
		close(p.done)
	}
}

func coapBenchPayload(size, dev, seq int) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint64(b, uint64(time.Now().UnixNano()))
	binary.BigEndian.PutUint32(b[8:], uint32(dev))
	binary.BigEndian.PutUint32(b[12:], uint32(seq))
	return b
}

// --- the subscriber: one paho connection timestamping arrivals ---

type coapBenchSub struct {
	client paho.Client
	mu     sync.Mutex
	phase  *coapBenchPhase
}

func newCoAPBenchSub(c coapBenchConfig) (*coapBenchSub, error) {
	s := &coapBenchSub{}
	cl, err := benchMQTT(c.mqttURL, c.user, c.pass, "mqttgw-cbench-"+c.run+"-sub")
	if err != nil {
		return nil, err
	}
	s.client = cl
	filter := c.mountpoint + c.topic + "/" + c.run + "/pub/#"
	tok := cl.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		now := time.Now()
		s.mu.Lock()
		p := s.phase
		s.mu.Unlock()
		if p != nil {
			p.arrived(m.Payload(), now)
		}
	})
	if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		cl.Disconnect(0)
		return nil, fmt.Errorf("subscribe %s: %v", filter, tok.Error())
	}
	return s, nil
}

// parallel runs f(i) for i in [0, n), at most 50 at once, and returns the first error.
func parallel(n int, f func(i int) error) error {
	sem := make(chan struct{}, 50)
	var wg sync.WaitGroup
	var first atomic.Value
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := f(i); err != nil {
				first.CompareAndSwap(nil, fmt.Errorf("client %d: %w", i, err))
			}
		}()
	}
	wg.Wait()
	err, _ := first.Load().(error)
	return err
}

// publishPhase measures per publishes from each of D devices (gateway) or D
// MQTT clients (direct), and the server's RSS before and after.
func (c *coapBenchConfig) publishPhase(sub *coapBenchSub, con bool, per int, gateway bool) (*coapBenchPhase, error) {
	pid := c.brokerPID
	if gateway {
		pid = c.gatewayPID
	}
	start := rssKB(pid)
	p, err := c.publishes(sub, con, per, gateway)
	if err != nil {
		return nil, err
	}
	p.rssBefore, p.rssEnd = start, rssKB(pid)
	return p, nil
}

func (c *coapBenchConfig) publishes(sub *coapBenchSub, con bool, per int, gateway bool) (*coapBenchPhase, error) {
	mode, qos := "NON", byte(0)
	if con {
		mode, qos = "CON", 1
	}
	name := "gateway CoAP " + mode
	if !gateway {
		name = fmt.Sprintf("direct MQTT QoS %d", qos)
	}
	kind := strings.ToLower(mode)
	if !gateway {
		kind = "mqtt" + kind
	}
	p := newCoAPBenchPhase(name, c.devices, per)
	p.acks = gateway || con // the gateway answers NON requests too; MQTT QoS 0 has no ack
	ctx, cancel := context.WithTimeout(context.Background(), c.limit)
	defer cancel()

	var publish func(ctx context.Context, i int, b []byte) error
	start := time.Now()
	if gateway {
		conns := make([]*udpclient.Conn, c.devices)
		closers := make([]func(), c.devices)
		defer func() {
			for _, f := range closers {
				if f != nil {
					f()
				}
			}
		}()
		if err := parallel(c.devices, func(i int) error {
			cc, closeConn, err := dialBenchCoAP(c.host)
			conns[i], closers[i] = cc, closeConn
			return err
		}); err != nil {
			return nil, err
		}
		publish = func(ctx context.Context, i int, b []byte) error {
			path := fmt.Sprintf("/ps/%s/%s/pub/%s/%d", c.topic, c.run, kind, i)
			return coapPublish(ctx, conns[i], path, true, !con, b, c.deviceQuery(fmt.Sprintf("cb-%s-%d", c.run, i)))
		}
	} else {
		clients := make([]paho.Client, c.devices)
		defer func() {
			for _, cl := range clients {
				if cl != nil {
					cl.Disconnect(0)
				}
			}
		}()
		if err := parallel(c.devices, func(i int) error {
			cl, err := benchMQTT(c.mqttURL, c.user, c.pass, fmt.Sprintf("mqttgw-cbench-%s-%s-%d", c.run, kind, i))
			clients[i] = cl
			return err
		}); err != nil {
			return nil, err
		}
		publish = func(ctx context.Context, i int, b []byte) error {
			topic := fmt.Sprintf("%s%s/%s/pub/%s/%d", c.mountpoint, c.topic, c.run, kind, i)
			return waitTok(ctx, clients[i].Publish(topic, qos, false, b))
		}
	}
	p.connect = time.Since(start)
	if gateway {
		p.rssAfter = rssKB(c.gatewayPID)
	} else {
		p.rssAfter = rssKB(c.brokerPID)
	}
	sub.mu.Lock()
	sub.phase = p
	sub.mu.Unlock()
	defer func() {
		sub.mu.Lock()
		sub.phase = nil
		sub.mu.Unlock()
	}()
	stop := startProgress(c.progress, name, p.expected, func() int64 { return p.sent.Load() + p.failed.Load() }, p.count)
	defer stop()

	dropsBefore := int64(-1)
	if gateway {
		dropsBefore = udpDrops(c.host)
	}
	cpuBefore := cpuTimes(c.gatewayPID, c.brokerPID)
	p.firstSend = time.Now()
	var wg sync.WaitGroup
	var lastAns atomic.Int64
	var refused atomic.Pointer[error] // the gateway refused the devices: no use going on
	for i := range c.devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range per {
				if err := publish(ctx, i, coapBenchPayload(c.size, i, seq)); err != nil {
					p.failed.Add(1)
					if isRefusal(err) && refused.CompareAndSwap(nil, &err) {
						cancel()
					}
					if ctx.Err() != nil {
						return
					}
					continue
				}
				p.sent.Add(1)
				lastAns.Store(time.Now().UnixNano())
			}
		}()
	}
	wg.Wait()
	if err := refused.Load(); err != nil {
		return nil, fmt.Errorf("%s: the gateway refused a device: %w (give credentials with --device-user and --device-pass)", name, *err)
	}
	p.lastAns = time.Unix(0, lastAns.Load())
	// Non-confirmable QoS 0 messages may be lost on the way; wait a bounded
	// moment for stragglers, then report what arrived.
	p.finish(ctx, min(c.limit, 5*time.Second), cpuBefore, c)
	if dropsBefore >= 0 {
		if after := udpDrops(c.host); after >= 0 {
			p.kernelDrops = after - dropsBefore
		}
	}
	return p, nil
}

// dialBenchCoAP is one simulated device's connection; closeConn closes it and
// returns once the goroutines it started ended (go-coap's own periodic runner
// would outlive it by up to 4 s).
func dialBenchCoAP(hostport string) (cc *udpclient.Conn, closeConn func(), err error) {
	r := newCoAPRunner()
	cc, err = udp.Dial(hostport, options.WithErrors(func(error) {}), options.WithPeriodicRunner(r.run))
	if err != nil {
		r.stop()
		return nil, nil, err
	}
	return cc, func() {
		cc.Close()
		<-cc.Done()
		r.stop()
	}, nil
}

// count is how many messages arrived so far.
func (p *coapBenchPhase) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.received
}

// observePhase registers K observers (gateway) or K MQTT subscribers (direct)
// on one topic, publishes M messages to it and measures the fan-out, and the
// server's RSS after the observers are gone.
func (c *coapBenchConfig) observePhase(gateway bool) (*coapBenchPhase, error) {
	p, err := c.observe(gateway)
	if err != nil {
		return nil, err
	}
	if gateway {
		p.rssEnd = rssKB(c.gatewayPID)
	} else {
		p.rssEnd = rssKB(c.brokerPID)
	}
	return p, nil
}

func (c *coapBenchConfig) observe(gateway bool) (*coapBenchPhase, error) {
	k, m := c.observers, c.notifications
	name, pid := "gateway CoAP observers", c.gatewayPID
	sub := "obs"
	if !gateway {
		name, pid, sub = "direct MQTT subscribers", c.brokerPID, "obs-mqtt"
	}
	devTopic := fmt.Sprintf("%s/%s/%s", c.topic, c.run, sub)
	// Every observer gets every message: count them per (observer, message).
	p := newCoAPBenchPhase(name, k, m)
	ctx, cancel := context.WithTimeout(context.Background(), c.limit)
	defer cancel()
	record := func(i int, b []byte) {
		if len(b) < coapBenchHeader {
			return
		}
		c := append([]byte(nil), b...)
		binary.BigEndian.PutUint32(c[8:], uint32(i)) // the observer, not the publisher
		p.arrived(c, time.Now())
	}

	p.rssBefore = rssKB(pid)
	start := time.Now()
	var cleanup []func()
	defer func() {
		for _, f := range cleanup {
			f()
		}
	}()
	var mu sync.Mutex
	if gateway {
		if err := parallel(k, func(i int) error {
			cc, closeConn, err := dialBenchCoAP(c.host)
			if err != nil {
				return err
			}
			var registered atomic.Bool
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
			defer rcancel()
			opts := c.deviceQuery(fmt.Sprintf("co-%s-%d", c.run, i))
			obs, err := cc.Observe(rctx, "/ps/"+devTopic, func(msg *pool.Message) {
				b, _ := msg.ReadBody()
				if registered.CompareAndSwap(false, true) && len(b) == 0 {
					return // the registration response
				}
				record(i, b)
			}, opts...)
			if err != nil {
				// A refused registration leaves no observation to cancel.
				closeConn()
				return fmt.Errorf("observer %d: %w (a listener that checks passwords needs --device-user and --device-pass)", i, err)
			}
			mu.Lock()
			cleanup = append(cleanup, func() {
				dctx, dcancel := context.WithTimeout(context.Background(), time.Second)
				_ = obs.Cancel(dctx, opts...)
				dcancel()
				closeConn()
			})
			mu.Unlock()
			return nil
		}); err != nil {
			return nil, err
		}
	} else {
		if err := parallel(k, func(i int) error {
			cl, err := benchMQTT(c.mqttURL, c.user, c.pass, fmt.Sprintf("mqttgw-cbench-%s-obs-%d", c.run, i))
			if err != nil {
				return err
			}
			mu.Lock()
			cleanup = append(cleanup, func() { cl.Disconnect(0) })
			mu.Unlock()
			return waitTok(ctx, cl.Subscribe(c.mountpoint+devTopic, 0, func(_ paho.Client, msg paho.Message) { record(i, msg.Payload()) }))
		}); err != nil {
			return nil, err
		}
	}
	p.connect = time.Since(start)
	time.Sleep(500 * time.Millisecond) // let the servers settle before measuring memory
	p.rssAfter = rssKB(pid)

	pub, err := benchMQTT(c.mqttURL, c.user, c.pass, "mqttgw-cbench-"+c.run+"-obs-pub-"+sub)
	if err != nil {
		return nil, err
	}
	defer pub.Disconnect(0)
	stop := startProgress(c.progress, name, p.expected, p.sent.Load, p.count)
	defer stop()
	dropsBefore := int64(-1)
	if gateway {
		dropsBefore = udpDrops(c.host)
	}
	cpuBefore := cpuTimes(c.gatewayPID, c.brokerPID)
	p.firstSend = time.Now()
	for seq := range m {
		if err := waitTok(ctx, pub.Publish(c.mountpoint+devTopic, 1, false, coapBenchPayload(c.size, 0, seq))); err != nil {
			p.failed.Add(1)
			continue
		}
		p.sent.Add(1)
	}
	p.finish(ctx, min(c.limit, 10*time.Second), cpuBefore, c)
	if dropsBefore >= 0 {
		if after := udpDrops(c.host); after >= 0 {
			p.kernelDrops = after - dropsBefore
		}
	}
	return p, nil
}

// finish waits a bounded moment for the last arrivals (or the phase's end), then
// records the CPU each process spent since cpuBefore and sorts the latencies.
func (p *coapBenchPhase) finish(ctx context.Context, grace time.Duration, cpuBefore map[string]cpuTime, c *coapBenchConfig) {
	wait := time.NewTimer(grace)
	select {
	case <-p.done:
	case <-ctx.Done():
	case <-wait.C:
	}
	wait.Stop()
	p.cpu = cpuSince(cpuBefore, c.gatewayPID, c.brokerPID)
	p.mu.Lock()
	slices.Sort(p.latencies)
	p.mu.Unlock()
}

// --- report ---

// figures are p's figures for the report and the matrix, once p ended.
func (p *coapBenchPhase) figures() *benchFigures {
	p.mu.Lock()
	defer p.mu.Unlock()
	sent, failed := int(p.sent.Load()), int(p.failed.Load())
	f := &benchFigures{name: p.name, expected: p.expected, sent: sent + failed, failed: failed, acked: sent, acks: p.acks,
		delivered: p.received, dups: p.dups, cpu: p.cpu, rssStart: p.rssBefore, rssConnected: p.rssAfter, rssEnd: p.rssEnd,
		kernelDrops: p.kernelDrops}
	if !p.lastRecv.IsZero() {
		f.wall = p.lastRecv.Sub(p.firstSend)
	}
	latencies(p.latencies, f)
	return f
}

// answered is requests per second from the first send to the last answer.
func (p *coapBenchPhase) answered() float64 {
	d := p.lastAns.Sub(p.firstSend).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(p.sent.Load()) / d
}

func printCoAPPublishes(w io.Writer, cols []*coapBenchPhase) {
	if len(cols) == 0 {
		return
	}
	figs := make([]*benchFigures, len(cols))
	for i, p := range cols {
		figs[i] = p.figures()
	}
	byName := func(f *benchFigures) *coapBenchPhase {
		for _, p := range cols {
			if p.name == f.name {
				return p
			}
		}
		return cols[0]
	}
	fmt.Fprintln(w, "publishes (acknowledged: answered requests; latency: send → subscriber)")
	printFigures(w, figs, true,
		benchRow{"answered/s (device side)", func(f *benchFigures) string { return fmt.Sprintf("%.0f", byName(f).answered()) }})
	fmt.Fprintln(w)
}

func printCoAPObservers(w io.Writer, c coapBenchConfig, gw, direct *coapBenchPhase) {
	figs := []*benchFigures{gw.figures(), direct.figures()}
	byName := func(f *benchFigures) *coapBenchPhase {
		if f.name == gw.name {
			return gw
		}
		return direct
	}
	fmt.Fprintf(w, "%d observers × %d messages (sent: messages published; latency: publish → observer)\n", c.observers, c.notifications)
	printFigures(w, figs, true,
		benchRow{"register/subscribe all", func(f *benchFigures) string { return byName(f).connect.Round(time.Millisecond).String() }},
		benchRow{"server RSS per observer", func(f *benchFigures) string {
			p := byName(f)
			if p.rssBefore == 0 || p.rssAfter == 0 {
				return "-"
			}
			return fmt.Sprintf("%.1f KiB", float64(p.rssAfter-p.rssBefore)/float64(c.observers))
		}})
}
