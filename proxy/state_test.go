package proxy

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

// startProblem starts a proxy with o against the test's broker and waits until
// it reports a problem (or connects): the cause of a failed connection must be
// known at once, in State and in one warning, not at shutdown.
func startProblem(t *testing.T, o Options) (*Proxy, State, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	o.Logger = zap.New(core)
	if o.ClientID == "" {
		o.ClientID = "problem-" + strings.ReplaceAll(t.Name(), "/", "-")
	}
	o.ReconnectMin = 50 * time.Millisecond
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		p.Close(ctx)
	})
	var st State
	waitFor(t, 10*time.Second, "a connection problem", func() bool { st = p.State(); return st.Problem != "" })
	return p, st, logs
}

// TestConnectionProblems: a wrong password, an unknown CA and a refused port
// each say what to check, at once, in State and in one warning however many
// attempts fail.
func TestConnectionProblems(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{Users: map[string]string{"gw": "pw"}})
	p, st, logs := startProblem(t, Options{URL: b.URL, Username: "gw", Password: "wrong"})
	if !strings.Contains(st.Problem, "upstream.username and upstream.password") || st.Connected {
		t.Errorf("wrong password: %+v", st)
	}
	waitFor(t, 10*time.Second, "three failed attempts", func() bool {
		return p.m.connectFailures.Value() >= 3
	})
	if n := logs.FilterMessage("cannot connect to broker; retrying with backoff").Len(); n != 1 {
		t.Errorf("%d warnings for one unchanged cause, want 1", n)
	}

	tb := mosquittotest.Start(t, mosquittotest.Options{AllowAnonymous: true, TLS: true})
	_, st, _ = startProblem(t, Options{URL: tb.URL, TLS: &tls.Config{ServerName: "localhost"}})
	if !strings.Contains(st.Problem, "upstream.tls.ca_file") {
		t.Errorf("unknown CA: %+v", st)
	}

	_, st, _ = startProblem(t, Options{URL: "tcp://127.0.0.1:1"})
	if !strings.Contains(st.Problem, "connection refused") {
		t.Errorf("nothing listening: %+v", st)
	}
}

// TestClientIDTaken: a second MQTT client with the gateway's client id makes the
// broker drop the gateway right after each connect; the problem says so
// instead of showing an endless reconnect loop with EOF.
func TestClientIDTaken(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{AllowAnonymous: true})
	o := Options{URL: b.URL, ClientID: "same-id", ReconnectMin: 50 * time.Millisecond, ReconnectMax: 200 * time.Millisecond, Logger: zap.NewNop()}
	first, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	defer first.Close(context.Background())
	waitFor(t, 10*time.Second, "the first client connected", first.Connected)
	startProblem(t, Options{URL: b.URL, ClientID: "same-id", ReconnectMax: 200 * time.Millisecond})
	waitFor(t, 10*time.Second, "the client-id hint", func() bool {
		return strings.Contains(first.State().Problem, `client id "same-id"`)
	})
}

// TestCloseNeverConnected: a proxy whose broker never answered does not wait
// out the drain bound at shutdown: it tries once more at once, and when that
// fails too its queued messages cannot drain. (TestQueuedBeforeBrokerExists
// shows the other side: a broker that comes up meanwhile is drained to.)
func TestCloseNeverConnected(t *testing.T) {
	p, err := New(Options{URL: "tcp://127.0.0.1:1", ClientID: "never", ReconnectMin: time.Hour, ReconnectMax: time.Hour, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := p.Enqueue(Message{Topic: "q", Payload: []byte("x"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	// A bound far beyond the test's deadline: reaching it would fail by timeout.
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	done := make(chan struct{})
	go func() { p.Close(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Close waited for a broker that never connected")
	}
	if p.m.dropped.Value() != 1 {
		t.Errorf("dropped %d, want the 1 queued message counted", p.m.dropped.Value())
	}
}
