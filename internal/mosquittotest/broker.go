package mosquittotest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/mqttgw/mqttgw/internal/testproc"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// readyTimeout bounds the wait for a started broker to accept connections.
	readyTimeout = 10 * time.Second
	// rebindTimeout bounds how long Restart retries a port still in use.
	rebindTimeout = 5 * time.Second
	// startAttempts is how many free ports Start tries when another process
	// takes the chosen port before mosquitto binds it.
	startAttempts = 5
	// stopGrace is how long Stop waits after SIGTERM before SIGKILL.
	stopGrace = 5 * time.Second
	// dialTimeout bounds one readiness probe.
	dialTimeout = time.Second
	// logTail is how much of each log file a failed test logs.
	logTail = 64 << 10
)

// Options configures a broker started by Start.
type Options struct {
	// Users maps user names to passwords. The password file is made by the
	// real `mosquitto_passwd -b`. Names must not contain ':'.
	Users map[string]string
	// ACL is the acl_file contents in Mosquitto's format; "" means no
	// acl_file, so every client may use every topic.
	ACL string
	// AllowAnonymous lets clients connect without a user name.
	AllowAnonymous bool
	// TLS makes the listener TLS only, with a CA and a server certificate for
	// 127.0.0.1, ::1 and localhost generated in the test's temp dir.
	// Broker.CAFile is the CA's PEM file.
	TLS bool
	// Extra lines are appended to mosquitto.conf after the listener and its
	// TLS settings, so listener options there apply to the test listener.
	Extra string
}

// Broker is a running (or stopped) mosquitto process.
type Broker struct {
	Host   string // "127.0.0.1"
	Port   int    // the listener's port; the same after Restart
	Addr   string // "127.0.0.1:PORT"
	URL    string // "tcp://127.0.0.1:PORT" or, with TLS, "ssl://127.0.0.1:PORT"
	CAFile string // PEM of the generated CA when TLS, else ""
	Dir    string // holds mosquitto.conf, mosquitto.log and the other files

	t        testing.TB
	opts     Options
	bin      string // mosquitto's path
	confPath string
	logPath  string // mosquitto's log_dest file
	outPath  string // mosquitto's stdout and stderr (errors before logging starts)
	tls      testproc.TLSFiles
	rootCAs  *x509.CertPool // nil without TLS

	mu   sync.Mutex
	proc *testproc.Process // nil when stopped
}

// runningRE matches the line mosquitto logs once every listener is open.
var runningRE = regexp.MustCompile(`(?m): mosquitto version \S+ running$`)

// errAddrInUse means mosquitto exited because its port was taken.
var errAddrInUse = errors.New("address already in use")

// Start starts mosquitto on a free port of 127.0.0.1 with a generated
// config and returns once it accepts connections. It registers a cleanup
// that stops the broker and, when the test failed, logs the broker's log.
func Start(t testing.TB, opts Options) *Broker {
	t.Helper()
	b := &Broker{
		Host: "127.0.0.1",
		Dir:  t.TempDir(),
		t:    t,
		opts: opts,
		bin:  mustTool(t, "mosquitto"),
	}
	if strings.ContainsAny(b.Dir, " \t\r\n#") {
		// mosquitto.conf values end at white space.
		t.Fatalf("mosquittotest: temp dir %q holds a character mosquitto.conf cannot quote; set TMPDIR", b.Dir)
	}
	b.confPath = filepath.Join(b.Dir, "mosquitto.conf")
	b.logPath = filepath.Join(b.Dir, "mosquitto.log")
	b.outPath = filepath.Join(b.Dir, "mosquitto.out")
	if err := b.writeAuxFiles(t); err != nil {
		t.Fatalf("mosquittotest: %v", err)
	}

	// Cleanups run last registered first: stop, then log the whole log.
	t.Cleanup(func() {
		if t.Failed() {
			b.logLogs(t)
		}
	})
	t.Cleanup(b.Stop)

	var err error
	for range startAttempts {
		var port int
		port, err = freePort()
		if err != nil {
			t.Fatalf("mosquittotest: pick a port: %v", err)
		}
		b.setPort(port)
		if err = os.WriteFile(b.confPath, []byte(b.config()), 0o600); err != nil {
			t.Fatalf("mosquittotest: %v", err)
		}
		if err = b.launch(); !errors.Is(err, errAddrInUse) {
			break
		}
	}
	if err != nil {
		t.Fatalf("mosquittotest: start mosquitto: %v", err)
	}
	return b
}

// Stop stops the broker: SIGTERM, then SIGKILL if it has not exited after
// a bound. It returns after the process exited and does nothing when the
// broker is stopped already.
func (b *Broker) Stop() {
	b.mu.Lock()
	p := b.proc
	b.proc = nil
	b.mu.Unlock()
	if p == nil {
		return
	}
	p.StopFor(b.t, "mosquittotest: mosquitto", stopGrace)
}

// Kill ends the broker with SIGKILL, as a crash or the OOM killer would: it
// saves nothing on the way out and its connections close at once, with no
// DISCONNECT. It returns after the process exited and does nothing when the
// broker is stopped already; Restart starts it again.
func (b *Broker) Kill() {
	b.mu.Lock()
	p := b.proc
	b.proc = nil
	b.mu.Unlock()
	if p == nil {
		return
	}
	if err := p.Kill(); err != nil {
		b.t.Errorf("mosquittotest: kill mosquitto: %v", err)
	}
}

// Restart stops the broker if it is running and starts it again on the same
// port, with the same config, and waits until it accepts connections. A
// port still held by the old socket is retried for a few seconds. Failures
// fail the test given to Start. Retained messages and sessions survive only
// when Options.Extra turns persistence on ("persistence true" and a
// "persistence_location"), and then only what the broker saved: all of it
// after Stop, what the last autosave wrote after Kill.
func (b *Broker) Restart() {
	b.t.Helper()
	b.Stop()
	deadline := time.Now().Add(rebindTimeout)
	for {
		err := b.launch()
		if err == nil {
			return
		}
		if !errors.Is(err, errAddrInUse) || time.Now().After(deadline) {
			b.t.Fatalf("mosquittotest: restart mosquitto on port %d: %v", b.Port, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Log returns the broker's log so far (log_type all).
func (b *Broker) Log() string {
	data, _ := os.ReadFile(b.logPath)
	return string(data)
}

func (b *Broker) setPort(port int) {
	b.Port = port
	b.Addr = net.JoinHostPort(b.Host, strconv.Itoa(port))
	scheme := "tcp"
	if b.opts.TLS {
		scheme = "ssl"
	}
	b.URL = scheme + "://" + b.Addr
}

// writeAuxFiles writes the password, ACL and TLS files that config names.
func (b *Broker) writeAuxFiles(t testing.TB) error {
	if len(b.opts.Users) > 0 {
		pw := mustTool(t, "mosquitto_passwd")
		path := filepath.Join(b.Dir, "passwd")
		// -c creates the file; later users are added to it.
		create := true
		for _, name := range slices.Sorted(maps.Keys(b.opts.Users)) {
			if strings.Contains(name, ":") {
				return fmt.Errorf("user name %q contains ':'", name)
			}
			args := []string{"-b", path, name, b.opts.Users[name]}
			if create {
				args = append([]string{"-c"}, args...)
				create = false
			}
			if out, err := exec.Command(pw, args...).CombinedOutput(); err != nil {
				return fmt.Errorf("mosquitto_passwd %s: %v: %s", name, err, bytes.TrimSpace(out))
			}
		}
	}
	if b.opts.ACL != "" {
		if err := os.WriteFile(filepath.Join(b.Dir, "acl"), []byte(b.opts.ACL), 0o600); err != nil {
			return err
		}
	}
	if b.opts.TLS {
		f, err := testproc.WriteTLSFiles(b.Dir, "mosquittotest CA")
		if err != nil {
			return fmt.Errorf("generate TLS files: %w", err)
		}
		b.tls = f
		b.CAFile = f.CAFile
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return err
		}
		b.rootCAs = x509.NewCertPool()
		b.rootCAs.AppendCertsFromPEM(pem)
	}
	return nil
}

// config returns mosquitto.conf for the current port.
func (b *Broker) config() string {
	var c strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&c, format+"\n", args...) }
	w("# Generated by mosquittotest.")
	// Started as root, mosquitto switches to the user "mosquitto" before it
	// opens the password, ACL, TLS and log files, and that user cannot enter
	// t.TempDir() (mode 0700, owned by root). "user root" keeps it as root;
	// when the tests do not run as root the option is ignored and mosquitto
	// runs as the test's user, who owns the files.
	w("user root")
	w("persistence false")
	w("log_dest file %s", b.logPath)
	w("log_type all")
	w("log_timestamp_format %%H:%%M:%%S")
	w("allow_anonymous %t", b.opts.AllowAnonymous)
	if len(b.opts.Users) > 0 {
		w("password_file %s", filepath.Join(b.Dir, "passwd"))
	}
	if b.opts.ACL != "" {
		w("acl_file %s", filepath.Join(b.Dir, "acl"))
	}
	w("listener %d %s", b.Port, b.Host)
	if b.opts.TLS {
		w("cafile %s", b.tls.CAFile)
		w("certfile %s", b.tls.CertFile)
		w("keyfile %s", b.tls.KeyFile)
	}
	if b.opts.Extra != "" {
		w("%s", b.opts.Extra)
	}
	return c.String()
}

// launch starts mosquitto with the current config and waits until it is
// ready. It returns an error wrapping errAddrInUse when mosquitto could not
// bind its port.
func (b *Broker) launch() error {
	logOff := testproc.FileSize(b.logPath)
	outOff := testproc.FileSize(b.outPath)
	out, err := os.OpenFile(b.outPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(b.bin, "-c", b.confPath)
	cmd.Stdout = out
	cmd.Stderr = out
	p, err := testproc.Start(cmd)
	out.Close() // the child has its own descriptor
	if err != nil {
		return err
	}
	if err := b.waitReady(p, logOff); err != nil {
		if _, serr := p.Stop(stopGrace); serr != nil {
			b.t.Errorf("mosquittotest: stop mosquitto: %v", serr)
		}
		news := testproc.ReadFrom(b.outPath, outOff) + testproc.ReadFrom(b.logPath, logOff)
		if strings.Contains(news, "Address already in use") {
			return fmt.Errorf("port %d: %w", b.Port, errAddrInUse)
		}
		return fmt.Errorf("%w; output:\n%s", err, news)
	}
	b.mu.Lock()
	b.proc = p
	b.mu.Unlock()
	return nil
}

// waitReady polls until the broker has logged that it runs (so it bound
// every listener: a connection alone could reach another process that holds
// the port) and accepts a connection (for TLS: completes a handshake that
// verifies the CA), until the process exits, or until readyTimeout.
// logOff is the log's size before the process started.
func (b *Broker) waitReady(p *testproc.Process, logOff int64) error {
	deadline := time.Now().Add(readyTimeout)
	last := errors.New("no \"mosquitto version ... running\" line in the log yet")
	for {
		if p.Exited() {
			return fmt.Errorf("mosquitto exited before it was ready: %v", p.Err())
		}
		if runningRE.MatchString(testproc.ReadFrom(b.logPath, logOff)) {
			last = b.probe()
			if last == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mosquitto not ready on %s after %v: %v", b.Addr, readyTimeout, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// probe opens one connection to the broker and closes it.
func (b *Broker) probe() error {
	d := &net.Dialer{Timeout: dialTimeout}
	if !b.opts.TLS {
		c, err := d.Dial("tcp", b.Addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
	c, err := tls.DialWithDialer(d, "tcp", b.Addr, &tls.Config{
		RootCAs:    b.rootCAs,
		ServerName: b.Host,
	})
	if err != nil {
		return err
	}
	return c.Close()
}

// logLogs logs the tail of the broker's log files.
func (b *Broker) logLogs(t testing.TB) {
	for _, path := range []string{b.outPath, b.logPath} {
		s := testproc.ReadFrom(path, max(0, testproc.FileSize(path)-logTail))
		if strings.TrimSpace(s) == "" {
			continue
		}
		t.Logf("mosquittotest: %s:\n%s", path, s)
	}
}

// freePort returns a port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
