package natstest

import (
	"errors"
	"fmt"
	"github.com/mqttgw/mqttgw/internal/testproc"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// readyTimeout bounds the wait for started nodes to be healthy: listening,
	// routed, and JetStream's meta group led.
	readyTimeout = 30 * time.Second
	// startAttempts is how many sets of free ports Start tries when another
	// process takes a chosen port before a node binds it.
	startAttempts = 5
	// rebindTimeout bounds how long Restart retries a port still in use.
	rebindTimeout = 5 * time.Second
	// stopGrace is how long Stop waits after SIGTERM before SIGKILL.
	stopGrace = 10 * time.Second
	// probeTimeout bounds one health probe.
	probeTimeout = 2 * time.Second
	// pollEvery is the pause between readiness probes.
	pollEvery = 50 * time.Millisecond
	// logTail is how much of each node's log a failed test logs.
	logTail = 32 << 10
	// clusterName is the route cluster's name in every node's config.
	clusterName = "natstest"
)

// Options configures a cluster started by Start. The zero value is three
// nodes, no authentication, no TLS.
type Options struct {
	// Nodes is the number of servers; 0 means 3, the smallest cluster that
	// survives the loss of one node with replicas 3.
	Nodes int
	// Username and Password, when set, are the one user clients must log in
	// as. Token, when set, is the token they must present instead. At most
	// one of the two.
	Username, Password string
	Token              string
	// TLS makes the client listeners TLS only, with a CA and a server
	// certificate for 127.0.0.1, ::1 and localhost generated in the test's
	// temp dir; Cluster.CAFile is the CA. Routes between nodes stay plain.
	TLS bool
}

// Cluster is a set of nats-server processes routed to each other, with
// JetStream enabled on each.
type Cluster struct {
	Dir     string // holds each node's config, log and JetStream store
	CAFile  string // PEM of the generated CA when Options.TLS, else ""
	Version string // the server's version, "2.15.3"
	Nodes   []*Node

	t    testing.TB
	opts Options
	bin  string
	tls  testproc.TLSFiles
}

// Node is one server of a Cluster.
type Node struct {
	Name        string // server_name, "n0", "n1", ...
	Port        int    // client port on 127.0.0.1; the same after Restart
	ClusterPort int    // route port
	HTTPPort    int    // monitoring port (/healthz, /jsz)
	URL         string // "nats://127.0.0.1:PORT", or with TLS "tls://127.0.0.1:PORT"

	dir, confPath, logPath, outPath string

	mu   sync.Mutex
	proc *testproc.Process // nil when stopped
}

// errAddrInUse means a node exited because one of its ports was taken.
var errAddrInUse = errors.New("address already in use")

// Start starts a cluster of nats-server nodes with JetStream on free ports of
// 127.0.0.1, with generated configs, and returns once every node reports
// itself healthy (its JetStream has a meta leader). It registers a cleanup
// that stops every node and, when the test failed, logs the nodes' logs. A
// missing or too old nats-server skips the test, or fails it when CI=true.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	bin, version := mustServer(t)
	if o.Nodes <= 0 {
		o.Nodes = 3
	}
	if o.Token != "" && (o.Username != "" || o.Password != "") {
		t.Fatal("natstest: Options.Token and Username/Password exclude each other")
	}
	c := &Cluster{Dir: t.TempDir(), Version: version, t: t, opts: o, bin: bin}
	if strings.ContainsAny(c.Dir, "\"\\\n") {
		t.Fatalf("natstest: temp dir %q holds a character the config cannot quote; set TMPDIR", c.Dir)
	}
	if o.TLS {
		f, err := testproc.WriteTLSFiles(c.Dir, "natstest CA")
		if err != nil {
			t.Fatalf("natstest: generate TLS files: %v", err)
		}
		c.tls, c.CAFile = f, f.CAFile
	}
	for i := range o.Nodes {
		name := fmt.Sprintf("n%d", i)
		dir := filepath.Join(c.Dir, name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatalf("natstest: %v", err)
		}
		c.Nodes = append(c.Nodes, &Node{
			Name:     name,
			dir:      dir,
			confPath: filepath.Join(dir, "nats.conf"),
			logPath:  filepath.Join(dir, "nats.log"),
			outPath:  filepath.Join(dir, "nats.out"),
		})
	}

	// Cleanups run last registered first: stop, then log.
	t.Cleanup(func() {
		if t.Failed() {
			c.logLogs(t)
		}
	})
	t.Cleanup(c.stopAll)

	var err error
	for range startAttempts {
		if err = c.pickPorts(); err != nil {
			t.Fatalf("natstest: pick ports: %v", err)
		}
		if err = c.launchAll(); !errors.Is(err, errAddrInUse) {
			break
		}
		c.stopAll()
	}
	if err != nil {
		t.Fatalf("natstest: start cluster: %v", err)
	}
	return c
}

// URLs are the client URLs of every node, running or not.
func (c *Cluster) URLs() []string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = n.URL
	}
	return urls
}

// Kill sends node i SIGKILL (no shutdown, like a crash or a power cut) and
// returns once it has exited.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	n := c.Nodes[i]
	n.mu.Lock()
	p := n.proc
	n.proc = nil
	n.mu.Unlock()
	if p == nil {
		return
	}
	if err := p.Kill(); err != nil {
		c.t.Errorf("natstest: kill %s: %v", n.Name, err)
	}
}

// Stop stops node i: SIGTERM, then SIGKILL if it has not exited after a
// bound. It does nothing when the node is stopped already.
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	n := c.Nodes[i]
	n.mu.Lock()
	p := n.proc
	n.proc = nil
	n.mu.Unlock()
	if p == nil {
		return
	}
	p.StopFor(c.t, "natstest: "+n.Name, stopGrace)
}

// Restart starts node i again, stopping it first if it runs, on the same
// ports with the same config and JetStream store, and returns once every
// running node is healthy again (the restarted one has caught up). Failures
// fail the test given to Start.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.Stop(i)
	deadline := time.Now().Add(rebindTimeout)
	for {
		err := c.launch(c.Nodes[i])
		if err == nil {
			break
		}
		if !errors.Is(err, errAddrInUse) || time.Now().After(deadline) {
			c.t.Fatalf("natstest: restart %s: %v", c.Nodes[i].Name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := c.waitHealthy(); err != nil {
		c.t.Fatalf("natstest: restart %s: %v", c.Nodes[i].Name, err)
	}
}

// WaitHealthy waits until every running node reports itself healthy and
// fails the test if that takes longer than a bound. Right after Kill the
// others may still report healthy until they notice the loss (a few
// seconds); a test that needs a new leader polls for what it needs.
func (c *Cluster) WaitHealthy() {
	c.t.Helper()
	if err := c.waitHealthy(); err != nil {
		c.t.Fatalf("natstest: %v", err)
	}
}

// Running reports whether node i's process is running.
func (c *Cluster) Running(i int) bool {
	n := c.Nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc != nil && !n.proc.Exited()
}

// Log returns node i's log so far.
func (c *Cluster) Log(i int) string {
	return testproc.ReadFrom(c.Nodes[i].logPath, 0)
}

// pickPorts gives every node three ports that were free a moment ago.
func (c *Cluster) pickPorts() error {
	ports, err := freePorts(3 * len(c.Nodes))
	if err != nil {
		return err
	}
	scheme := "nats"
	if c.opts.TLS {
		scheme = "tls"
	}
	for i, n := range c.Nodes {
		n.Port, n.ClusterPort, n.HTTPPort = ports[3*i], ports[3*i+1], ports[3*i+2]
		n.URL = scheme + "://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(n.Port))
	}
	for _, n := range c.Nodes {
		if err := os.WriteFile(n.confPath, []byte(c.config(n)), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// launchAll starts every node, then waits until all are healthy: a
// JetStream cluster elects its meta leader only once a quorum runs.
func (c *Cluster) launchAll() error {
	for _, n := range c.Nodes {
		if err := c.launch(n); err != nil {
			return err
		}
	}
	return c.waitHealthy()
}

// launch starts node n's process and waits until it logs that it is ready
// (it bound its ports); it returns an error wrapping errAddrInUse when a port
// was taken.
func (c *Cluster) launch(n *Node) error {
	logOff, outOff := testproc.FileSize(n.logPath), testproc.FileSize(n.outPath)
	out, err := os.OpenFile(n.outPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.bin, "-c", n.confPath)
	cmd.Stdout, cmd.Stderr = out, out
	p, err := testproc.Start(cmd)
	out.Close() // the child has its own descriptor
	if err != nil {
		return err
	}
	deadline := time.Now().Add(readyTimeout)
	for {
		news := testproc.ReadFrom(n.outPath, outOff) + testproc.ReadFrom(n.logPath, logOff)
		if p.Exited() || strings.Contains(news, "address already in use") {
			_ = p.Kill()
			if strings.Contains(news, "address already in use") {
				return fmt.Errorf("%s: %w", n.Name, errAddrInUse)
			}
			return fmt.Errorf("%s exited before it was ready: %v; output:\n%s", n.Name, p.Err(), news)
		}
		if strings.Contains(news, "Server is ready") {
			break
		}
		if time.Now().After(deadline) {
			_ = p.Kill()
			return fmt.Errorf("%s: no \"Server is ready\" within %v; output:\n%s", n.Name, readyTimeout, news)
		}
		time.Sleep(pollEvery)
	}
	n.mu.Lock()
	n.proc = p
	n.mu.Unlock()
	return nil
}

// waitHealthy polls every running node's /healthz until all answer 200 (the
// node is up, and JetStream is enabled and current with its meta leader and
// its streams) or readyTimeout passes.
func (c *Cluster) waitHealthy() error {
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: probeTimeout}
	deadline := time.Now().Add(readyTimeout)
	for {
		var last error
		for i, n := range c.Nodes {
			if !c.Running(i) {
				continue
			}
			if err := healthz(hc, n); err != nil {
				last = fmt.Errorf("%s: %w", n.Name, err)
				break
			}
		}
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not healthy after %v: %v", readyTimeout, last)
		}
		time.Sleep(pollEvery)
	}
}

func healthz(hc *http.Client, n *Node) error {
	resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", n.HTTPPort))
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/healthz: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// config returns node n's nats.conf for the current ports.
func (c *Cluster) config(n *Node) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# Generated by natstest.")
	w("server_name: %q", n.Name)
	w("listen: \"127.0.0.1:%d\"", n.Port)
	w("http: \"127.0.0.1:%d\"", n.HTTPPort)
	w("log_file: %q", n.logPath)
	w("logtime: true")
	w("jetstream {")
	w("  store_dir: %q", filepath.Join(n.dir, "jetstream"))
	w("  max_memory_store: 64MB")
	w("  max_file_store: 1GB")
	w("}")
	if len(c.Nodes) > 1 { // one node runs JetStream unclustered
		w("cluster {")
		w("  name: %q", clusterName)
		w("  listen: \"127.0.0.1:%d\"", n.ClusterPort)
		w("  routes: [")
		for _, o := range c.Nodes {
			if o != n {
				w("    \"nats-route://127.0.0.1:%d\"", o.ClusterPort)
			}
		}
		w("  ]")
		w("}")
	}
	switch {
	case c.opts.Token != "":
		w("authorization { token: %q }", c.opts.Token)
	case c.opts.Username != "":
		w("authorization { user: %q, password: %q }", c.opts.Username, c.opts.Password)
	}
	if c.opts.TLS {
		w("tls { cert_file: %q, key_file: %q }", c.tls.CertFile, c.tls.KeyFile)
	}
	return b.String()
}

// stopAll stops every node, in parallel.
func (c *Cluster) stopAll() {
	var wg sync.WaitGroup
	for i := range c.Nodes {
		wg.Go(func() { c.Stop(i) })
	}
	wg.Wait()
}

// logLogs logs the tail of every node's output and log.
func (c *Cluster) logLogs(t testing.TB) {
	for _, n := range c.Nodes {
		for _, path := range []string{n.outPath, n.logPath} {
			s := testproc.ReadFrom(path, max(0, testproc.FileSize(path)-logTail))
			if strings.TrimSpace(s) != "" {
				t.Logf("natstest: %s:\n%s", path, s)
			}
		}
	}
}

// freePorts returns n distinct ports of 127.0.0.1 that were free a moment
// ago (all held open together, so they differ).
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
