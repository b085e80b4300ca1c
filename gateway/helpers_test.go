package gateway

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/internal/wait"
	"github.com/mqttgw/mqttgw/session"
)

// runningGateway is a gateway started by a test, stopped by t.Cleanup.
type runningGateway struct {
	*Gateway
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// startGateway parses cfgText, starts the gateway and waits until it is connected
// to its broker. Listeners should bind "127.0.0.1:0"; ListenerAddr tells the port.
func startGateway(t *testing.T, cfgText string) *runningGateway {
	t.Helper()
	g := newGateway(t, cfgText)
	rg := g.start(t)
	waitFor(t, 10*time.Second, "gateway connected to the broker", g.proxy.Connected)
	return rg
}

func newGateway(t *testing.T, cfgText string) *Gateway {
	t.Helper()
	cfg, ps := config.Parse("test.toml", []byte(cfgText))
	if errs := ps.Errors(); len(errs) > 0 {
		t.Fatalf("config:\n%v", errs)
	}
	g, err := New(cfg, zaptest.NewLogger(t, zaptest.Level(testLogLevel)))
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	return g
}

func (g *Gateway) start(t *testing.T) *runningGateway {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rg := &runningGateway{Gateway: g, cancel: cancel, done: make(chan error, 1)}
	go func() { rg.done <- g.Run(ctx) }()
	t.Cleanup(func() { rg.stop(t) })
	return rg
}

// stop ends Run and waits for it; it may be called more than once.
func (rg *runningGateway) stop(t *testing.T) {
	t.Helper()
	rg.once.Do(func() {
		rg.cancel()
		select {
		case err := <-rg.done:
			if err != nil {
				t.Errorf("gateway.Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("gateway.Run did not return within 30s of cancel")
		}
	})
}

// waitFor polls cond until it holds, failing the test after bound.
var waitFor = wait.For

// sendUDP sends one datagram to the named listener from a fresh socket.
func sendUDP(t *testing.T, g *Gateway, listener string, payload []byte) {
	t.Helper()
	addr := g.ListenerAddr(listener)
	if addr == nil {
		t.Fatalf("no listener %q", listener)
	}
	c, err := net.Dial("udp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
}

// brokerUser is the gateway's account on test brokers.
var brokerUser = map[string]string{"mqttgw": "gw-secret", "reader": "reader-secret"}

func startMosquitto(t *testing.T, tls bool) *mosquittotest.Broker {
	t.Helper()
	return mosquittotest.Start(t, mosquittotest.Options{Users: brokerUser, TLS: tls})
}

func replaceOnce(t *testing.T, s, old, new string) string {
	t.Helper()
	i := strings.Index(s, old)
	if i < 0 {
		t.Fatalf("%q not in text", old)
	}
	return s[:i] + new + s[i+len(old):]
}

// upstreamTOML is the [gateway] and [upstream] tables of every end-to-end test:
// gateway id "gwtest" (status topic mqttgw/gwtest/status), the test broker with the
// gateway's account (over TLS with the broker's CA when it has one), and timers short
// enough for tests.
func upstreamTOML(b *mosquittotest.Broker) string {
	tls := ""
	if b.CAFile != "" {
		tls = fmt.Sprintf("[upstream.tls]\nca_file = %q\n", b.CAFile)
	}
	return fmt.Sprintf(`
[gateway]
id = "gwtest"
drain_timeout = "5s"
[upstream]
url = %q
username = "mqttgw"
password = "gw-secret"
keepalive = "5s"
reconnect_min = "100ms"
reconnect_max = "300ms"
publish_timeout = "2s"
%s`, b.URL, tls)
}

// liveSessions counts the sessions that are neither lost nor ended: a lost
// session stays listed (GET /devices) for a while.
func liveSessions(g *Gateway) int {
	n := 0
	g.sessions.Range(func(s *session.Session) bool {
		if s.Live() {
			n++
		}
		return true
	})
	return n
}

// testLogLevel is the test gateways' log level: MQTTGW_TEST_DEBUG=1 for
// debug lines.
var testLogLevel = func() zapcore.Level {
	if os.Getenv("MQTTGW_TEST_DEBUG") == "1" {
		return zap.DebugLevel
	}
	return zap.InfoLevel
}()
