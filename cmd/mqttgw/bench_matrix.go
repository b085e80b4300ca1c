package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The standard matrix (bench --matrix, make bench): its own Mosquitto and
// gateway on free loopback ports, with generated configs; every path of the
// issue's goals table measured beside its direct baseline, one after another;
// a Markdown table with the ratio and the goal of each row. The gateway and
// Mosquitto are child processes, stopped (SIGTERM, then SIGKILL) before it
// returns; their configs and logs live in a temporary directory removed at the
// end (kept, and named, when a server failed).

// The matrix's flags.
var benchMatrixFlags = []string{"matrix", "scale", "max-clients", "out", "gateway-bin", "pin"}

type matrixConfig struct {
	on              bool
	scale           float64
	maxClients      int
	out, gatewayBin string
	pin             bool
	limit           time.Duration
}

// matrixTopic is the topic prefix of every row.
const matrixTopic = "mqttgw-bench"

// matrixRow is one line of the table.
type matrixRow struct {
	path       string
	kind       matrixKind
	gw, direct *benchFigures
	err        error
	acked      bool   // an acknowledged path: a loss fails the matrix
	goal       string // filled by judge
}

// matrixKind is which goal a row is judged by.
type matrixKind int

const (
	kindSN0 matrixKind = iota
	kindSN1
	kindUDP0
	kindUDP1
	kindNON
	kindCON
	kindObservers
	kindRate
)

// matrixEnv is what the rows load: the servers and their addresses.
type matrixEnv struct {
	m                            matrixConfig
	mqttURL                      string
	snAddr, udp0, udp1, coapAddr string
	gatewayPID, brokerPID        int
	progress                     io.Writer
}

func runBenchMatrix(cmd *command, m matrixConfig, stdout, stderr io.Writer) int {
	switch {
	case !(m.scale > 0 && m.scale <= 10):
		return cmd.usageError(stderr, "--scale %v: want more than 0, at most 10", m.scale)
	case m.maxClients < 0:
		return cmd.usageError(stderr, "--max-clients %d: want 0 (no cap) or more", m.maxClients)
	case m.limit <= 0 || m.limit > time.Hour:
		return cmd.usageError(stderr, "--duration-limit %v: want up to 1h", m.limit)
	}
	gwBin := m.gatewayBin
	if gwBin == "" {
		self, err := os.Executable()
		if err != nil {
			fmt.Fprintf(stderr, "mqttgw bench: the gateway binary: %v (give --gateway-bin)\n", err)
			return 1
		}
		gwBin = self
	}
	mosq, err := lookSbin("mosquitto")
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw bench: mosquitto: %v (scripts/install-test-deps.sh installs it)\n", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "mqttgw-bench-")
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw bench: %v\n", err)
		return 1
	}
	keep := false
	defer func() {
		if keep {
			fmt.Fprintf(stderr, "mqttgw bench: configs and logs kept in %s\n", dir)
			return
		}
		os.RemoveAll(dir)
	}()

	// CPUs: the gateway alone on the last one, Mosquitto and this load
	// generator on the others, so that the gateway's figures are its own.
	gwCPUs, otherCPUs, split := cpuPlan(m.pin)
	fmt.Fprintf(stderr, "bench: %s\n", split)
	if otherCPUs != "" {
		if out, err := exec.Command("taskset", "-a", "-p", "-c", otherCPUs, strconv.Itoa(os.Getpid())).CombinedOutput(); err != nil {
			fmt.Fprintf(stderr, "mqttgw bench: taskset: %v: %s\n", err, out)
		}
	}

	broker, err := startMatrixBroker(dir, mosq, otherCPUs)
	if err != nil {
		keep = true
		fmt.Fprintf(stderr, "mqttgw bench: mosquitto: %v\n", err)
		return 1
	}
	defer broker.stop()
	env := matrixEnv{m: m, mqttURL: "tcp://" + broker.addr, brokerPID: broker.pid(), progress: stderr}
	gw, err := startMatrixGateway(dir, gwBin, gwCPUs, &env)
	if err != nil {
		keep = true
		fmt.Fprintf(stderr, "mqttgw bench: gateway: %v\n", err)
		return 1
	}
	defer gw.stop()
	env.gatewayPID = gw.pid()
	rssStart := rssKB(env.gatewayPID)

	rows := env.plan()
	for i, r := range rows {
		fmt.Fprintf(stderr, "bench: row %d/%d: %s\n", i+1, len(rows), r.path)
		r.run()
		if r.row.err != nil {
			fmt.Fprintf(stderr, "mqttgw bench: %s: %v\n", r.path, r.row.err)
		}
		if !gw.alive() {
			keep = true
			fmt.Fprintf(stderr, "mqttgw bench: the gateway exited; its log: %s\n", filepath.Join(dir, "gateway.log"))
			break
		}
	}
	time.Sleep(time.Second) // let the last clients' sessions end before the final RSS
	rssEnd := rssKB(env.gatewayPID)

	var b strings.Builder
	code := writeMatrix(&b, m, split, rows, rssStart, rssEnd)
	io.WriteString(stdout, b.String())
	if m.out != "" {
		err := os.MkdirAll(filepath.Dir(m.out), 0o755)
		if err == nil {
			err = os.WriteFile(m.out, []byte(b.String()), 0o644)
		}
		if err != nil {
			fmt.Fprintf(stderr, "mqttgw bench: --out: %v\n", err)
			code = 1
		}
	}
	if code != 0 {
		keep = true
	}
	return code
}

// plannedRow is a row and the function that measures it.
type plannedRow struct {
	path string
	row  *matrixRow
	run  func()
}

// plan is the standard matrix, its counts scaled.
func (e *matrixEnv) plan() []plannedRow {
	msgs := func(n int) int { return max(1, int(math.Round(float64(n)*e.m.scale))) }
	clients := func(n int) int {
		if e.m.maxClients > 0 {
			return min(n, e.m.maxClients)
		}
		return n
	}
	var rows []plannedRow
	add := func(path string, kind matrixKind, f func() (gw, direct *benchFigures, err error)) {
		acked := kind == kindSN1 || kind == kindUDP1 || kind == kindCON || kind == kindRate
		r := &matrixRow{path: path, kind: kind, acked: acked}
		rows = append(rows, plannedRow{path: path, row: r, run: func() { r.gw, r.direct, r.err = f() }})
	}
	for _, n := range []int{20, 200} {
		for _, qos := range []int{0, 1} {
			per := msgs(map[int]int{0: 50000, 1: 30000}[qos] / n)
			k := clients(n)
			add(fmt.Sprintf("MQTT-SN QoS %d, %d clients × %d", qos, k, per), []matrixKind{kindSN0, kindSN1}[qos], func() (*benchFigures, *benchFigures, error) {
				return e.load(benchConfig{snAddr: e.snAddr, clients: k, messages: per, qos: qos})
			})
		}
	}
	for _, qos := range []int{0, 1} {
		per, k := msgs(map[int]int{0: 2500, 1: 1500}[qos]), clients(20)
		addr := map[int]string{0: e.udp0, 1: e.udp1}[qos]
		what := map[int]string{0: "QoS 0", 1: "QoS 1 (acked)"}[qos]
		add(fmt.Sprintf("plain UDP %s, %d devices × %d", what, k, per), []matrixKind{kindUDP0, kindUDP1}[qos], func() (*benchFigures, *benchFigures, error) {
			return e.load(benchConfig{udpAddr: addr, clients: k, messages: per, qos: qos})
		})
	}
	for _, con := range []bool{false, true} {
		k := clients(20)
		n := max(k, msgs(30000))
		mode := map[bool]string{false: "NON", true: "CON"}[con]
		add(fmt.Sprintf("CoAP %s, %d devices × %d", mode, k, n/k), map[bool]matrixKind{false: kindNON, true: kindCON}[con], func() (*benchFigures, *benchFigures, error) {
			return e.coap(con, k, n)
		})
	}
	{
		k, n := clients(1000), msgs(100)
		add(fmt.Sprintf("CoAP %d observers × %d", k, n), kindObservers, func() (*benchFigures, *benchFigures, error) {
			return e.observers(k, n)
		})
	}
	{
		k, per, rate := clients(20), msgs(500), 1000.0
		add(fmt.Sprintf("MQTT-SN QoS 1 at %.0f msgs/s, %d clients × %d", rate, k, per), kindRate, func() (*benchFigures, *benchFigures, error) {
			return e.load(benchConfig{snAddr: e.snAddr, clients: k, messages: per, qos: 1, rate: rate})
		})
	}
	return rows
}

// load runs one MQTT-SN or plain-UDP row: c names the target and the load.
func (e *matrixEnv) load(c benchConfig) (*benchFigures, *benchFigures, error) {
	if c.snAddr == "" {
		c.snAddr = e.snAddr
	}
	c.mqttURL, c.size, c.limit, c.topic = e.mqttURL, 32, e.m.limit, matrixTopic
	c.gatewayPID, c.brokerPID, c.connectParallel, c.progress = e.gatewayPID, e.brokerPID, 50, e.progress
	if err := c.check(); err != nil {
		return nil, nil, err
	}
	c.newRun()
	rs, err := benchLoad(c)
	if err != nil {
		return nil, nil, err
	}
	return rs[0].figures(), rs[1].figures(), nil
}

func (e *matrixEnv) coapConfig(devices, requests, observers, notifications int) (coapBenchConfig, error) {
	c := coapBenchConfig{coapURL: "coap://" + e.coapAddr, mqttURL: e.mqttURL, devices: devices, requests: requests,
		size: 32, observers: observers, notifications: notifications, limit: e.m.limit, topic: matrixTopic,
		gatewayPID: e.gatewayPID, brokerPID: e.brokerPID, progress: e.progress}
	if err := c.check(); err != nil {
		return c, err
	}
	c.newRun()
	return c, nil
}

func (e *matrixEnv) coap(con bool, devices, requests int) (*benchFigures, *benchFigures, error) {
	c, err := e.coapConfig(devices, requests, 0, 1)
	if err != nil {
		return nil, nil, err
	}
	sub, err := newCoAPBenchSub(c)
	if err != nil {
		return nil, nil, fmt.Errorf("subscriber: %w", err)
	}
	defer sub.client.Disconnect(250)
	per := max(1, requests/devices)
	gw, err := c.publishPhase(sub, con, per, true)
	if err != nil {
		return nil, nil, err
	}
	direct, err := c.publishPhase(sub, con, per, false)
	if err != nil {
		return nil, nil, err
	}
	return gw.figures(), direct.figures(), nil
}

func (e *matrixEnv) observers(k, n int) (*benchFigures, *benchFigures, error) {
	c, err := e.coapConfig(1, 1, k, n)
	if err != nil {
		return nil, nil, err
	}
	gw, err := c.observePhase(true)
	if err != nil {
		return nil, nil, err
	}
	direct, err := c.observePhase(false)
	if err != nil {
		return nil, nil, err
	}
	return gw.figures(), direct.figures(), nil
}

// --- the goals ---

// judge fills r.goal: the goal of its path and whether this run met it.
// Throughput ratios are gateway ÷ direct messages/s.
func (r *matrixRow) judge() (met bool) {
	mark := func(ok bool) string {
		if ok {
			return "✓"
		}
		return "✗"
	}
	if r.err != nil || r.gw == nil || r.direct == nil {
		r.goal = "failed"
		return false
	}
	ratio := 0.0
	if d := r.direct.rate(); d > 0 {
		ratio = r.gw.rate() / d
	}
	var parts []string
	met = true
	check := func(text string, ok bool) {
		parts = append(parts, text+" "+mark(ok))
		met = met && ok
	}
	ratioGoal := func(min float64) { check(fmt.Sprintf("≥ %.1f×", min), ratio >= min) }
	cpuGoal := func(min float64) {
		if v := r.gw.perCPU("gateway"); v > 0 {
			check(fmt.Sprintf("≥ %.0fk/CPU-s", min/1000), v >= min)
		}
	}
	switch r.kind {
	case kindSN0:
		ratioGoal(0.8)
		cpuGoal(150_000)
	case kindSN1:
		ratioGoal(0.9)
		cpuGoal(100_000)
	case kindRate:
		added := r.gw.p99 - r.direct.p99
		check(fmt.Sprintf("added p99 %s ≤ 1ms", fmtMS(added)), added <= time.Millisecond)
	case kindUDP0:
		ratioGoal(0.8)
	case kindUDP1:
		parts = append(parts, "(none; lossless)")
		met = r.gw.lost() == 0
	case kindNON:
		ratioGoal(0.8)
	case kindCON:
		ratioGoal(0.7)
	case kindObservers:
		check("0 lost", r.gw.lost() == 0)
		check("p50 ≤ 2× direct", r.direct.p50 > 0 && r.gw.p50 <= 2*r.direct.p50)
	}
	r.goal = strings.Join(parts, ", ")
	return met
}

func fmtMS(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64) + "ms"
}

// writeMatrix writes the Markdown report and returns the exit status: 1 when
// a row failed or an acknowledged path lost a message.
func writeMatrix(w io.Writer, m matrixConfig, split string, rows []plannedRow, rssStart, rssEnd int64) int {
	code := 0
	fmt.Fprintf(w, "## mqttgw bench --matrix (scale %g", m.scale)
	if m.maxClients > 0 {
		fmt.Fprintf(w, ", at most %d clients", m.maxClients)
	}
	fmt.Fprintf(w, ")\n\n%s, %s; %d CPUs; %s.\n\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), split)
	fmt.Fprintln(w, "| path | direct msgs/s | gateway msgs/s | ratio | goal | msgs per gateway CPU-s | gateway CPU user/sys | gateway RSS start/end | p50/p99/p99.9 gateway | p50/p99/p99.9 direct | lost gateway/direct | kernel drops |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, pr := range rows {
		r := pr.row
		r.judge()
		if r.err != nil || r.gw == nil || r.direct == nil {
			code = 1
			fmt.Fprintf(w, "| %s | - | - | - | failed: %s | - | - | - | - | - | - | - |\n", r.path, strings.ReplaceAll(fmt.Sprint(r.err), "|", "/"))
			continue
		}
		if r.acked && (r.gw.lost() > 0 || r.direct.lost() > 0) {
			code = 1
		}
		ratio := "-"
		if d := r.direct.rate(); d > 0 {
			ratio = fmt.Sprintf("%.2f", r.gw.rate()/d)
		}
		cpu := "-"
		if c, ok := r.gw.cpu["gateway"]; ok && c.known {
			cpu = fmt.Sprintf("%.2f/%.2f s", c.user, c.sys)
		}
		drops := "-"
		if r.gw.kernelDrops >= 0 {
			drops = strconv.FormatInt(r.gw.kernelDrops, 10)
		}
		fmt.Fprintf(w, "| %s | %.0f | %.0f | %s | %s | %s | %s | %s / %s | %s | %s | %d/%d | %s |\n",
			r.path, r.direct.rate(), r.gw.rate(), ratio, r.goal, fmtCount(r.gw.perCPU("gateway")), cpu,
			fmtRSS(r.gw.rssStart), fmtRSS(r.gw.rssEnd), fmtLatencies(r.gw), fmtLatencies(r.direct),
			r.gw.lost(), r.direct.lost(), drops)
	}
	fmt.Fprintln(w)
	if rssStart > 0 && rssEnd > 0 {
		growth := float64(rssEnd-rssStart) / float64(rssStart)
		ok := "✓"
		if growth > 0.10 {
			ok = "✗"
		}
		fmt.Fprintf(w, "Gateway RSS after the matrix: %s, at its start %s (%+.0f%%; goal: within 10%% %s).\n\n",
			fmtRSS(rssEnd), fmtRSS(rssStart), 100*growth, ok)
	}
	fmt.Fprintln(w, "ratio: gateway ÷ direct messages/s, each from the first send to the last arrival at the subscriber; "+
		"direct: the same load sent straight to Mosquitto by MQTT clients (plain UDP QoS 0 and CoAP NON beside MQTT QoS 0, "+
		"acknowledged paths beside QoS 1). CPU and messages per CPU-second are the gateway's over the gateway phase "+
		"(/proc/PID/stat utime/stime); RSS before the phase's clients connect and after they left. "+
		"Latency: device send to subscriber (observers: publish to observer), in ms. "+
		"Kernel drops: datagrams the gateway's UDP socket refused (/proc/net/udp).")
	return code
}

func fmtLatencies(f *benchFigures) string {
	ms := func(d time.Duration) string {
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64)
	}
	return ms(f.p50) + "/" + ms(f.p99) + "/" + ms(f.p999)
}

// --- the servers ---

// cpuPlan is where the gateway and everything else run, as taskset CPU
// lists ("" for no pinning), and a sentence saying so.
func cpuPlan(pin bool) (gateway, others, split string) {
	n := runtime.NumCPU()
	if !pin {
		return "", "", "not pinned to CPUs (--pin=false)"
	}
	if _, err := exec.LookPath("taskset"); err != nil || n < 2 {
		return "", "", fmt.Sprintf("not pinned to CPUs (%d CPUs; taskset %s)", n, map[bool]string{true: "found", false: "missing"}[err == nil])
	}
	gateway = strconv.Itoa(n - 1)
	others = "0"
	if n > 2 {
		others = fmt.Sprintf("0-%d", n-2)
	}
	return gateway, others, fmt.Sprintf("gateway pinned to CPU %s; Mosquitto and the load generator to CPU %s (taskset)", gateway, others)
}

// pinned prefixes a command with taskset when cpus is set.
func pinned(cpus, bin string, args ...string) *exec.Cmd {
	if cpus == "" {
		return exec.Command(bin, args...)
	}
	return exec.Command("taskset", append([]string{"-c", cpus, bin}, args...)...)
}

// lookSbin finds a program on PATH or in the sbin directories, where Debian
// installs mosquitto.
func lookSbin(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		if p, err2 := exec.LookPath(filepath.Join(d, name)); err2 == nil {
			return p, nil
		}
	}
	return "", err
}

// freeLoopbackPort is a port of 127.0.0.1 free a moment ago, for network "tcp" or "udp".
func freeLoopbackPort(network string) (int, error) {
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

type matrixBroker struct {
	*child
	addr string
}

// startMatrixBroker starts Mosquitto on a free port with a config for loads:
// queues large enough that the measuring subscriber misses nothing.
func startMatrixBroker(dir, bin, cpus string) (*matrixBroker, error) {
	var lastErr error
	for range 3 {
		port, err := freeLoopbackPort("tcp")
		if err != nil {
			return nil, err
		}
		conf := filepath.Join(dir, "mosquitto.conf")
		text := fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 10000000
max_queued_bytes 0
max_inflight_messages 1000
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
`, port)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			return nil, err
		}
		cmd := pinned(cpus, bin, "-c", conf)
		logf, err := os.Create(filepath.Join(dir, "mosquitto.log"))
		if err != nil {
			return nil, err
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		ch, err := startChild(cmd)
		logf.Close()
		if err != nil {
			return nil, err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		err = pollReady(10*time.Second, ch.exited, func() bool {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
		if err == nil {
			return &matrixBroker{child: ch, addr: addr}, nil
		}
		ch.stop()
		log, _ := os.ReadFile(filepath.Join(dir, "mosquitto.log"))
		lastErr = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(log)))
	}
	return nil, lastErr
}

// startMatrixGateway writes the gateway's config (an MQTT-SN listener, two
// plain-UDP listeners with the bench's rules, a CoAP listener, the metrics
// listener) and starts it; it returns once /healthz says the broker is
// connected. It fills e's addresses.
func startMatrixGateway(dir, bin, cpus string, e *matrixEnv) (*child, error) {
	ports := make([]int, 4)
	for i := range ports {
		p, err := freeLoopbackPort("udp")
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	metricsPort, err := freeLoopbackPort("tcp")
	if err != nil {
		return nil, err
	}
	addr := func(p int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)) }
	e.snAddr, e.udp0, e.udp1, e.coapAddr = addr(ports[0]), addr(ports[1]), addr(ports[2]), addr(ports[3])
	text := fmt.Sprintf(`# generated by mqttgw bench --matrix
[gateway]
id = "bench"
[log]
level = "warn"
[upstream]
url = %q
client_id = "mqttgw-bench-gateway"
queue_messages = 1000000
[metrics]
listen = %q

[[listener]]
name = "sn"
type = "mqttsn"
bind = %q

[[listener]]
name = "udp0"
type = "udp"
bind = %q

[[listener]]
name = "udp1"
type = "udp"
bind = %q

[[listener]]
name = "coap"
type = "coap"
bind = %q
[listener.coap]
max_observers_per_topic = 2000
observer_queue = 128          # the 100 messages of the observer row fit

%s`, e.mqttURL, addr(metricsPort), e.snAddr, e.udp0, e.udp1, e.coapAddr, rawBenchRules("udp0", "udp1", matrixTopic))
	conf := filepath.Join(dir, "gateway.toml")
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return nil, err
	}
	cmd := pinned(cpus, bin, "run", "--config", conf)
	logf, err := os.Create(filepath.Join(dir, "gateway.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	ch, err := startChild(cmd)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: time.Second}
	health := "http://" + addr(metricsPort) + "/healthz"
	err = pollReady(20*time.Second, ch.exited, func() bool {
		resp, err := hc.Get(health)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err != nil {
		ch.stop()
		log, _ := os.ReadFile(filepath.Join(dir, "gateway.log"))
		return nil, fmt.Errorf("%w: %s", err, strings.TrimSpace(string(log)))
	}
	return ch, nil
}

// child is a started server process and its Wait result.
type child struct {
	cmd    *exec.Cmd
	exited chan error // holds Wait's result once it returned
}

// startChild starts cmd and waits for it in the background.
func startChild(cmd *exec.Cmd) (*child, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, exited: make(chan error, 1)}
	go func() { c.exited <- cmd.Wait() }()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// alive reports whether the child still runs.
func (c *child) alive() bool {
	select {
	case err := <-c.exited:
		c.exited <- err
		return false
	default:
		return true
	}
}

// stop ends the child: SIGTERM, SIGKILL after 15 s; it returns once the
// child exited.
func (c *child) stop() {
	if !c.alive() {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c.exited:
		c.exited <- err
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		c.exited <- <-c.exited
	}
}

var errExited = errors.New("exited")

// pollReady polls ready every 50 ms until it holds, the child exits, or bound
// passes.
func pollReady(bound time.Duration, exited chan error, ready func() bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if ready() {
			return nil
		}
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("%w: %v", errExited, err)
		case <-ctx.Done():
			return fmt.Errorf("not ready after %v", bound)
		case <-t.C:
		}
	}
}
