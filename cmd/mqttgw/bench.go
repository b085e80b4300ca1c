package main

// The load tool, bench: its flags for every protocol (one set, as for pub and
// sub, so that --help shows them all), and the helpers they share: /proc
// figures, progress lines, the figures each side of a run reports. Each
// protocol's phases are in its own file (mqttsn_bench.go, raw_bench.go,
// coap_bench.go); the standard matrix of `make bench` is bench_matrix.go.

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Flags of one protocol's load only.
var (
	benchMQTTSNFlags = []string{"clients", "messages", "qos", "rate", "connect-parallel", "skip-direct"}
	benchCoAPFlags   = []string{"devices", "requests", "con", "non", "observers", "notifications", "device-user", "device-pass"}
)

// benchFlags are bench's flags: the MQTT-SN load fills sn, the CoAP load co;
// the flags both take are set in sn and copied to co by cmdBench.
func benchFlags() (*flag.FlagSet, *benchConfig, *coapBenchConfig) {
	fs, sn, co, _ := benchFlagsMatrix()
	return fs, sn, co
}

// benchFlagsMatrix is benchFlags with the matrix's own flags (bench_matrix.go).
func benchFlagsMatrix() (*flag.FlagSet, *benchConfig, *coapBenchConfig, *matrixConfig) {
	var sn benchConfig
	var co coapBenchConfig
	var mx matrixConfig
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&sn.snAddr, "mqttsn", "127.0.0.1:1884", "the gateway's MQTT-SN listener, `HOST:PORT`; MQTT-SN is the default protocol")
	fs.StringVar(&sn.udpAddr, "udp", "", "load a plain-UDP listener instead, at `HOST:PORT` (its rule: see the README, \"mqttgw bench\")")
	fs.Var(optString{&co.coapURL}, "coap", "load the gateway's CoAP listener instead, at `URL`: coap://HOST:PORT, by default coap://127.0.0.1:5683 (plain CoAP only)")
	fs.StringVar(&sn.mqttURL, "mqtt", "tcp://127.0.0.1:1883", "the broker, `URL`, for the measuring subscriber and the direct baseline")
	fs.StringVar(&sn.user, "u", "", "the broker `USER` name")
	fs.StringVar(&sn.pass, "P", "", "the broker `PASSWORD`")
	fs.IntVar(&sn.size, "size", 32, "the payload size in octets, `N` (at least 16)")
	fs.DurationVar(&sn.limit, "duration-limit", 60*time.Second, "the bound on each phase, `DURATION`")
	fs.StringVar(&sn.topic, "topic", "mqttgw-bench", "the topic `PREFIX`")
	fs.StringVar(&sn.mountpoint, "mountpoint", "", "the listener's mountpoint, `PREFIX`, as the broker sees the topics")
	fs.IntVar(&sn.gatewayPID, "gateway-pid", 0, "the gateway's process `ID` (Linux), for memory and CPU figures")
	fs.IntVar(&sn.brokerPID, "broker-pid", 0, "the broker's process `ID` (Linux), for memory and CPU figures")

	fs.IntVar(&sn.clients, "clients", 100, "simulated devices, `N` (and MQTT clients in the baseline)")
	fs.IntVar(&sn.messages, "messages", 10, "messages each client publishes, `N`")
	fs.IntVar(&sn.qos, "qos", 1, "the `QOS` of the publishes and the subscription")
	fs.Float64Var(&sn.rate, "rate", 0, "send at a fixed rate, `N` messages/s from all clients together (0: as fast as acknowledged)")
	fs.IntVar(&sn.connectParallel, "connect-parallel", 50, "clients connecting at once, `N`")
	fs.BoolVar(&sn.skipDirect, "skip-direct", false, "skip the direct-to-broker baseline")

	fs.IntVar(&co.devices, "devices", 100, "simulated devices, `N` (and MQTT clients in the baseline)")
	fs.IntVar(&co.requests, "requests", 10000, "publishes per mode, `N`, in all")
	fs.BoolVar(&co.con, "con", false, "measure Confirmable publishes only (default: both)")
	fs.BoolVar(&co.non, "non", false, "measure Non-confirmable publishes only (default: both)")
	fs.IntVar(&co.observers, "observers", 100, "observers in the observe phase, `N` (0: skip it)")
	fs.IntVar(&co.notifications, "notifications", 100, "messages published to the observed topic, `N`")
	fs.StringVar(&co.deviceUser, "device-user", "", "every simulated device's `USER` name (the query's u), for a listener that checks passwords")
	fs.StringVar(&co.devicePass, "device-pass", "", "every simulated device's `PASSWORD` (the query's p)")

	fs.BoolVar(&mx.on, "matrix", false, "run the standard matrix (make bench): its own Mosquitto and gateway, every path, a Markdown table")
	fs.Float64Var(&mx.scale, "scale", 1, "scale the matrix's message counts by `F` (0.05: a smoke run)")
	fs.IntVar(&mx.maxClients, "max-clients", 0, "cap the matrix's clients and observers at `N` (0: the standard 20, 200, 1000)")
	fs.StringVar(&mx.out, "out", "", "also write the matrix's Markdown table to `FILE`")
	fs.StringVar(&mx.gatewayBin, "gateway-bin", "", "the gateway the matrix runs, `PATH` (default: this program)")
	fs.BoolVar(&mx.pin, "pin", true, "pin the matrix's gateway to the last CPU, Mosquitto and the load to the others (taskset, 2 CPUs or more)")
	return fs, &sn, &co, &mx
}

var benchSynopsis = []string{
	"bench [--mqttsn HOST:PORT] [--mqtt URL] [-u USER -P PASS]",
	"    [--clients N] [--messages M] [--qos 0|1|2] ...",
	"bench --udp HOST:PORT [--mqtt URL] [--clients N] [--messages M] [--qos 0|1] ...",
	"bench --coap [URL] [--mqtt URL] [-u USER -P PASS]",
	"    [--devices D] [--requests N] [--con|--non] [--observers K] ...",
	"bench --matrix [--scale F] [--out FILE]",
}

const benchAbout = `Measures what the gateway adds to the broker: throughput and latency from a
device's send to its arrival at an MQTT subscriber, memory and CPU, beside the
same load sent straight to the broker by MQTT clients. Loopback addresses only;
every phase is bounded in count and time.

MQTT-SN (the default): N clients each publish M messages, each after the
previous one's acknowledgement (QoS 0: as fast as sent), or at --rate messages/s
in all. The broker's max_queued_messages must exceed N x M for the subscriber
to miss nothing.
Plain UDP (--udp): N devices each send M datagrams to a plain-UDP listener
whose rule publishes them raw to TOPIC/{run}/udp/{device}; QoS 0 fire and
forget, QoS 1 each after the rule's ack (the README has both rules).
CoAP (--coap): D devices send N publishes in all, Confirmable and
Non-confirmable; then K devices observe one topic that gets M messages, beside
K MQTT subscribers.
The matrix (--matrix, make bench) starts its own Mosquitto and gateway on free
loopback ports, runs every path beside its direct baseline and prints a
Markdown table with the ratio and the goal of each row.

Every run prints sent, acknowledged, delivered and lost messages, messages/s,
latency p50/p99/p99.9, the gateway's CPU (user/sys, from /proc with
--gateway-pid) and RSS, and a progress line on standard error each second.

Exit status: 0 every message arrived; 1 some did not, or a phase failed; 2 bad
usage. The matrix: 1 when a phase failed or an acknowledged path lost a
message.`

var benchGroups = []flagGroup{
	{"Every protocol:", []string{"mqttsn", "udp", "coap", "mqtt", "u", "P", "size", "duration-limit", "topic", "mountpoint", "gateway-pid", "broker-pid"}},
	{"MQTT-SN and plain UDP (--udp):", benchMQTTSNFlags},
	{"CoAP only (--coap):", benchCoAPFlags},
	{"The matrix (--matrix):", benchMatrixFlags},
}

var benchExamples = []string{
	"mqttgw bench --clients 10 --messages 10                  # the example gateway, MQTT-SN",
	"mqttgw bench --clients 1000 --messages 100 --gateway-pid $(pidof mqttgw)",
	"mqttgw bench --clients 20 --messages 500 --rate 1000     # latency at a fixed rate",
	"mqttgw bench --udp 127.0.0.1:1885 --qos 0 --clients 20 --messages 1000",
	"mqttgw bench --coap coap://127.0.0.1:5683 --devices 10 --requests 100 --observers 10",
	"mqttgw bench --matrix --scale 0.05                      # what make bench runs, small",
}

func cmdBench(c *command, args []string, stdout, stderr io.Writer) int {
	fs, sn, co, mx := benchFlagsMatrix()
	if code, done := c.parse(fs, withOptionalValues(fs, args), stdout, stderr); done {
		return code
	}
	if fs.NArg() > 0 {
		return c.usageError(stderr, "unexpected argument %q", fs.Arg(0))
	}
	set := visited(fs)
	for _, n := range benchMatrixFlags[1:] {
		if set[n] && !mx.on {
			return c.usageError(stderr, "%s is for the matrix: add --matrix", dashed(n))
		}
	}
	if mx.on {
		for n := range set {
			if !slices.Contains(benchMatrixFlags, n) && n != "duration-limit" {
				return c.usageError(stderr, "--matrix runs its own servers and loads: %s does not apply", dashed(n))
			}
		}
		mx.limit = sn.limit
		return runBenchMatrix(c, *mx, stdout, stderr)
	}
	coap, udp := set["coap"], set["udp"]
	if (coap && set["mqttsn"]) || (udp && set["mqttsn"]) || (coap && udp) {
		return c.usageError(stderr, "give one of --mqttsn, --udp and --coap")
	}
	for _, n := range benchMQTTSNFlags {
		if coap && set[n] {
			return c.usageError(stderr, "%s is for the MQTT-SN load (and --udp), and --coap loads CoAP", dashed(n))
		}
	}
	for _, n := range benchCoAPFlags {
		if !coap && set[n] {
			return c.usageError(stderr, "%s is for the CoAP load: add --coap URL", dashed(n))
		}
	}
	if !coap {
		sn.progress = stderr
		return runBenchMQTTSN(c, *sn, stdout, stderr)
	}
	co.progress = stderr
	if co.coapURL == "" {
		co.coapURL = "coap://127.0.0.1:5683"
	}
	co.mqttURL, co.user, co.pass = sn.mqttURL, sn.user, sn.pass
	co.size, co.limit, co.topic, co.mountpoint = sn.size, sn.limit, sn.topic, sn.mountpoint
	co.gatewayPID, co.brokerPID = sn.gatewayPID, sn.brokerPID
	return runBenchCoAP(c, *co, stdout, stderr)
}

// loopbackOnly refuses anything but a loopback address: the load tool must not
// be pointed at someone else's gateway or broker.
func loopbackOnly(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT", hostport)
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return fmt.Errorf("%q: %v", host, err)
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return fmt.Errorf("%s is not a loopback address: the load tool runs on loopback only", host)
		}
	}
	return nil
}

// --- /proc figures (Linux; zero elsewhere) ---

// rssKB is a process's resident set in kB, or 0.
func rssKB(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// cpuTime is a process's CPU time in seconds, split as /proc/PID/stat has it
// (utime, stime); known is false when it could not be read.
type cpuTime struct {
	user, sys float64
	known     bool
}

func (t cpuTime) total() float64 { return t.user + t.sys }

// procCPU reads a process's CPU time.
func procCPU(pid int) cpuTime {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return cpuTime{}
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')') // the command may hold spaces
	if i < 0 {
		return cpuTime{}
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return cpuTime{}
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return cpuTime{}
	}
	return cpuTime{user: ut / 100, sys: st / 100, known: true} // USER_HZ is 100 on Linux
}

// cpuTimes samples the bench process and, when their ids are known, the
// gateway and the broker.
func cpuTimes(gatewayPID, brokerPID int) map[string]cpuTime {
	m := map[string]cpuTime{"bench": procCPU(os.Getpid())}
	if gatewayPID > 0 {
		m["gateway"] = procCPU(gatewayPID)
	}
	if brokerPID > 0 {
		m["broker"] = procCPU(brokerPID)
	}
	return m
}

// cpuSince is the CPU each process spent since before.
func cpuSince(before map[string]cpuTime, gatewayPID, brokerPID int) map[string]cpuTime {
	out := map[string]cpuTime{}
	for k, v := range cpuTimes(gatewayPID, brokerPID) {
		b := before[k]
		if v.known && b.known {
			out[k] = cpuTime{user: v.user - b.user, sys: v.sys - b.sys, known: true}
		}
	}
	return out
}

// udpDrops is the kernel's drop count of the UDP sockets bound to the port of
// hostport (the last column of /proc/net/udp and udp6: datagrams the socket's
// full receive buffer refused), or -1 when unknown.
func udpDrops(hostport string) int64 {
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return -1
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 {
		return -1
	}
	want := fmt.Sprintf(":%04X", port)
	var total int64 = -1
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\n")[1:] {
			fs := strings.Fields(l)
			if len(fs) < 13 || !strings.HasSuffix(fs[1], want) {
				continue
			}
			n, err := strconv.ParseInt(fs[len(fs)-1], 10, 64)
			if err != nil {
				continue
			}
			total = max(total, 0) + n
		}
	}
	return total
}

// --- progress ---

// startProgress prints one line to w each second until stop is called: the
// phase, the time since it began, and what was sent and delivered so far. A
// nil w prints nothing. stop may be called more than once.
func startProgress(w io.Writer, name string, expected int, sent func() int64, delivered func() int) (stop func()) {
	if w == nil {
		return func() {}
	}
	start := time.Now()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				fmt.Fprintf(w, "bench: %s %3.0fs: sent %d, delivered %d of %d\n",
					name, now.Sub(start).Seconds(), sent(), delivered(), expected)
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// waitDelivered waits until done is closed, ctx ends, or count has not moved
// for idle: the last arrivals of a phase whose sending ended.
func waitDelivered(ctx context.Context, done <-chan struct{}, count func() int, idle time.Duration) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	last, since := count(), time.Now()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case now := <-t.C:
			if n := count(); n != last {
				last, since = n, now
			} else if now.Sub(since) >= idle {
				return
			}
		}
	}
}

// --- the figures of one side of a run ---

// benchFigures are what one side of a run (gateway or direct) measured, as
// the reports and the matrix print them.
type benchFigures struct {
	name                           string
	expected, sent, failed         int // sent: publishes attempted; failed: of those, errors
	acked                          int // acknowledged publishes (QoS >= 1, CoAP answers)
	acks                           bool
	delivered, dups                int
	wall                           time.Duration // first send to last arrival
	p50, p99, p999                 time.Duration
	cpu                            map[string]cpuTime
	rssStart, rssConnected, rssEnd int64 // kB; 0 unknown
	kernelDrops                    int64 // -1 unknown
}

func (f *benchFigures) lost() int { return f.expected - f.delivered }

func (f *benchFigures) rate() float64 {
	if f.wall <= 0 {
		return 0
	}
	return float64(f.delivered) / f.wall.Seconds()
}

// perCPU is delivered messages per CPU-second of who, or 0.
func (f *benchFigures) perCPU(who string) float64 {
	c, ok := f.cpu[who]
	if !ok || !c.known || c.total() <= 0 {
		return 0
	}
	return float64(f.delivered) / c.total()
}

func latencies(sorted []time.Duration, f *benchFigures) {
	f.p50, f.p99, f.p999 = percentile(sorted, 0.5), percentile(sorted, 0.99), percentile(sorted, 0.999)
}

// cpuSplit is "user/sys s (share of one core)" for who, or "-".
func (f *benchFigures) cpuSplit(who string) string {
	c, ok := f.cpu[who]
	if !ok || !c.known {
		return "-"
	}
	s := fmt.Sprintf("%.2f/%.2f s", c.user, c.sys)
	if f.wall > 0 {
		s += fmt.Sprintf(" (%.0f%%)", 100*c.total()/f.wall.Seconds())
	}
	return s
}

func fmtRSS(kb int64) string {
	if kb <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(kb)/1024)
}

func fmtCount(v float64) string {
	if v <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", v)
}

// printFigures prints the common rows of a run's report, one column per side;
// pairs: the columns are gateway, direct, gateway, direct…, and each gateway
// column gets its ratio to the direct one beside it. extra rows go after
// messages/s.
func printFigures(w io.Writer, cols []*benchFigures, pairs bool, extra ...benchRow) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(label string, f func(r *benchFigures) string) {
		fmt.Fprintf(tw, "%s\t", label)
		for _, r := range cols {
			fmt.Fprintf(tw, "%s\t", f(r))
		}
		fmt.Fprintln(tw)
	}
	row("", func(r *benchFigures) string { return r.name })
	row("sent", func(r *benchFigures) string { return strconv.Itoa(r.sent) })
	row("acknowledged", func(r *benchFigures) string {
		if !r.acks {
			return "-"
		}
		return strconv.Itoa(r.acked)
	})
	row("delivered", func(r *benchFigures) string { return fmt.Sprintf("%d/%d", r.delivered, r.expected) })
	row("lost", func(r *benchFigures) string { return strconv.Itoa(r.lost()) })
	row("publish errors", func(r *benchFigures) string { return strconv.Itoa(r.failed) })
	row("duplicates", func(r *benchFigures) string { return strconv.Itoa(r.dups) })
	row("first send → last receipt", func(r *benchFigures) string { return r.wall.Round(time.Millisecond).String() })
	row("messages/s", func(r *benchFigures) string { return fmt.Sprintf("%.0f", r.rate()) })
	if pairs {
		fmt.Fprintf(tw, "gateway/direct messages/s\t")
		for i, r := range cols {
			switch {
			case i%2 == 1 || i+1 >= len(cols):
				fmt.Fprint(tw, "\t")
			case cols[i+1].rate() > 0:
				fmt.Fprintf(tw, "%.2f×\t", r.rate()/cols[i+1].rate())
			default:
				fmt.Fprint(tw, "-\t")
			}
		}
		fmt.Fprintln(tw)
	}
	for _, e := range extra {
		row(e.label, e.cell)
	}
	row("latency p50", func(r *benchFigures) string { return r.p50.Round(time.Microsecond).String() })
	row("latency p99", func(r *benchFigures) string { return r.p99.Round(time.Microsecond).String() })
	row("latency p99.9", func(r *benchFigures) string { return r.p999.Round(time.Microsecond).String() })
	row("gateway CPU user/sys", func(r *benchFigures) string { return r.cpuSplit("gateway") })
	row("messages per gateway CPU-s", func(r *benchFigures) string { return fmtCount(r.perCPU("gateway")) })
	row("broker CPU user/sys", func(r *benchFigures) string { return r.cpuSplit("broker") })
	row("bench CPU user/sys", func(r *benchFigures) string { return r.cpuSplit("bench") })
	row("server RSS start → connected → end", func(r *benchFigures) string {
		if r.rssStart <= 0 {
			return "-"
		}
		return fmt.Sprintf("%s → %s → %s", fmtRSS(r.rssStart), fmtRSS(r.rssConnected), fmtRSS(r.rssEnd))
	})
	row("kernel drops (UDP socket)", func(r *benchFigures) string {
		if r.kernelDrops < 0 {
			return "-"
		}
		return strconv.FormatInt(r.kernelDrops, 10)
	})
	tw.Flush()
}

// benchRow is a report row only some runs have.
type benchRow struct {
	label string
	cell  func(r *benchFigures) string
}

// --- the straight-to-the-broker side, over paho ---

// benchMQTT connects one MQTT client for the direct baseline or the measuring
// subscriber: clean session, no reconnect (a lost connection is a failed run), and
// handlers that need not keep order.
func benchMQTT(url, user, pass, clientID string) (paho.Client, error) {
	o := paho.NewClientOptions().AddBroker(url).SetClientID(clientID).
		SetUsername(user).SetPassword(pass).SetCleanSession(true).SetAutoReconnect(false).
		SetOrderMatters(false).SetConnectTimeout(10 * time.Second).SetKeepAlive(5 * time.Minute)
	cl := paho.NewClient(o)
	if tok := cl.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("connect %s: %v", url, tok.Error())
	}
	return cl, nil
}

// waitTok waits for a paho token or the end of ctx.
func waitTok(ctx context.Context, tok paho.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// percentile of sorted latencies, p in [0, 1].
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(float64(len(sorted)-1)*p)]
}
