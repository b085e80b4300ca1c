package proxy

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mqttgw/mqttgw/auth"
	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

// The embedded broker's tests run the real mosquitto_pub and mosquitto_sub
// against it, and make password files with the real mosquitto_passwd: the
// embedded broker must treat Mosquitto's clients and files as Mosquitto does.

const (
	// embeddedStatus is the status topic of the proxies started here.
	embeddedStatus = "mqttgw/test/status"
	// embeddedClientID is their own client id.
	embeddedClientID = "mqttgw-test"
	// embeddedWait bounds every wait for something to happen.
	embeddedWait = 10 * time.Second
)

// embeddedTools are the programs the embedded broker's tests run.
var embeddedTools = []string{"mosquitto_pub", "mosquitto_sub", "mosquitto_passwd", "stdbuf"}

// startEmbeddedProxy starts a proxy with an embedded broker on a free loopback
// port, waits until the proxy is connected to it, and returns a
// mosquittotest.Broker whose Publish and Subscribe reach the embedded broker.
// Cleanup closes the proxy.
func startEmbeddedProxy(t *testing.T, o Options) (*Proxy, *mosquittotest.Broker) {
	t.Helper()
	mosquittotest.RequireTools(t, embeddedTools...)
	o.URL = "embedded"
	o.EmbeddedListen = "127.0.0.1:0"
	if o.ClientID == "" {
		o.ClientID = embeddedClientID
	}
	if o.StatusTopic == "" {
		o.StatusTopic = embeddedStatus
	}
	if o.Logger == nil {
		o.Logger = zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	}
	o.ReconnectMin = 50 * time.Millisecond
	o.ReconnectMax = 200 * time.Millisecond
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), embeddedWait)
		defer cancel()
		_ = p.Close(ctx)
	})
	waitFor(t, embeddedWait, "the gateway's connection to the embedded broker", p.Connected)
	host, port, err := net.SplitHostPort(p.EmbeddedAddr())
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(port)
	return p, &mosquittotest.Broker{Host: host, Port: n, Addr: p.EmbeddedAddr(), URL: "tcp://" + p.EmbeddedAddr()}
}

// passwordCheck makes a password file with mosquitto_passwd -b and returns the
// check the gateway gives EmbeddedAuth: users by the file, anonymous clients
// when anonymous.
func passwordCheck(t *testing.T, anonymous bool, users map[string]string) func(remote netip.Addr, user, password string) bool {
	t.Helper()
	file := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for u, pw := range users {
		out, err := exec.Command("mosquitto_passwd", "-b", file, u, pw).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_passwd: %v: %s", err, out)
		}
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pws, err := auth.ParsePasswords(file, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return func(remote netip.Addr, user, password string) bool {
		if user == "" {
			return anonymous
		}
		return pws.Check(user, password)
	}
}

// aclCheck parses an acl_file's text and returns the check the gateway gives
// EmbeddedACL.
func aclCheck(t *testing.T, text string) func(clientID, user, topic string, write bool) bool {
	t.Helper()
	a, err := auth.ParseACL("acl", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return func(clientID, user, topic string, write bool) bool {
		access := auth.Read
		if write {
			access = auth.Write
		}
		return a.Allowed(clientID, user, topic, access)
	}
}

// mosquittoPub runs mosquitto_pub with args against b and returns its output
// and error (non-nil when it exits non-zero, e.g. on a refused CONNECT).
func mosquittoPub(t *testing.T, b *mosquittotest.Broker, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), embeddedWait)
	defer cancel()
	args = append([]string{"-h", b.Host, "-p", strconv.Itoa(b.Port)}, args...)
	out, err := exec.CommandContext(ctx, "mosquitto_pub", args...).CombinedOutput()
	return string(bytes.TrimSpace(out)), err
}

func TestEmbeddedPasswordFile(t *testing.T) {
	check := passwordCheck(t, false, map[string]string{"alice": "alice-pw"})
	p, b := startEmbeddedProxy(t, Options{EmbeddedAuth: check})

	// The gateway's own connection is up although its credentials are in no
	// password file: it proves itself with the process's secret.
	if !p.Connected() {
		t.Fatal("the gateway is not connected to its embedded broker")
	}
	sub := b.Subscribe(t, mosquittotest.SubOptions{Username: "alice", Password: "alice-pw", QoS: 1, Topics: []string{"t/#", embeddedStatus}})
	sub.Expect(t, embeddedWait, embeddedStatus, "online")

	for _, c := range []struct{ name, user, password string }{
		{"wrong password", "alice", "wrong"},
		{"unknown user", "mallory", "alice-pw"},
		{"anonymous", "", ""},
		{"the gateway's username without its secret", embeddedUser, ""},
	} {
		err := b.PublishErr(t, mosquittotest.PubOptions{Username: c.user, Password: c.password, Topic: "t/x", Payload: []byte(c.name), QoS: 1})
		if err == nil {
			t.Errorf("%s: mosquitto_pub connected, want it refused", c.name)
		} else if !strings.Contains(err.Error(), "Connection Refused") {
			t.Errorf("%s: mosquitto_pub failed, but not with a refusal: %v", c.name, err)
		}
	}
	b.Publish(t, mosquittotest.PubOptions{Username: "alice", Password: "alice-pw", Topic: "t/ok", Payload: []byte("right password"), QoS: 1})
	// Nothing from the refused clients came before it.
	sub.Expect(t, embeddedWait, "t/ok", "right password")
}

func TestEmbeddedAnonymousAllowed(t *testing.T) {
	check := passwordCheck(t, true, map[string]string{"alice": "alice-pw"})
	_, b := startEmbeddedProxy(t, Options{EmbeddedAuth: check})
	sub := b.Subscribe(t, mosquittotest.SubOptions{QoS: 1, Topics: []string{"t/#"}})
	b.Publish(t, mosquittotest.PubOptions{Topic: "t/anon", Payload: []byte("anonymous"), QoS: 1})
	sub.Expect(t, embeddedWait, "t/anon", "anonymous")
	// A username still needs its password when anonymous clients are allowed.
	if err := b.PublishErr(t, mosquittotest.PubOptions{Username: "alice", Password: "wrong", Topic: "t/x", QoS: 1}); err == nil {
		t.Error("alice with a wrong password connected")
	}
}

const embeddedACL = `# anonymous clients
topic read public/#

user alice
topic readwrite sensors/#
topic read cmd/#

user bob
topic read sensors/#
topic readwrite #
topic deny secret/#
`

func TestEmbeddedACL(t *testing.T) {
	check := passwordCheck(t, true, map[string]string{"alice": "alice-pw", "bob": "bob-pw"})
	_, b := startEmbeddedProxy(t, Options{EmbeddedAuth: check, EmbeddedACL: aclCheck(t, embeddedACL)})
	alice := func(topic, payload string) mosquittotest.PubOptions {
		return mosquittotest.PubOptions{Username: "alice", Password: "alice-pw", Topic: topic, Payload: []byte(payload), QoS: 1}
	}

	t.Run("publish", func(t *testing.T) {
		sub := b.Subscribe(t, mosquittotest.SubOptions{Username: "alice", Password: "alice-pw", QoS: 1, Topics: []string{"sensors/#", "cmd/#"}})
		// alice may read cmd/ but not write it: mosquitto_pub is acknowledged
		// (as by Mosquitto) and the message is dropped.
		b.Publish(t, alice("cmd/reboot", "denied"))
		b.Publish(t, alice("sensors/t", "marker"))
		sub.Expect(t, embeddedWait, "sensors/t", "marker")
	})

	t.Run("subscribe", func(t *testing.T) {
		for _, c := range []struct{ user, password, filter string }{
			{"alice", "alice-pw", "#"},
			{"alice", "alice-pw", "secret/#"},
			{"bob", "bob-pw", "secret/keys"},
			{"bob", "bob-pw", "#"},                 // granted by readwrite #, but it matches secret/: deny wins
			{"bob", "bob-pw", "$share/g/secret/#"}, // the group does not hide the filter
			{"", "", "sensors/#"},                  // anonymous: public/ only
		} {
			_, err := b.SubscribeErr(t, mosquittotest.SubOptions{Username: c.user, Password: c.password, Topics: []string{c.filter}})
			if err == nil {
				t.Errorf("user %q subscribed to %q, want it refused", c.user, c.filter)
			}
		}
		b.Subscribe(t, mosquittotest.SubOptions{Topics: []string{"public/#"}})
		b.Subscribe(t, mosquittotest.SubOptions{Username: "bob", Password: "bob-pw", Topics: []string{"x/#", "sensors/+", "$share/g/x/y"}})
	})
}

// TestEmbeddedStatusTopicOnlyGateway: no client but the gateway writes its
// retained status, whatever the ACL grants: not anonymously on an open broker
// (the attack seen), not with a user the ACL gives "#", not by a will, and not
// by taking the gateway's client id (which would fire its will "offline").
func TestEmbeddedStatusTopicOnlyGateway(t *testing.T) {
	for _, c := range []struct {
		name           string
		opts           Options
		user, password string
	}{
		{name: "open broker, anonymous attacker"},
		{
			name: "user granted everything",
			opts: Options{
				EmbeddedAuth: passwordCheck(t, false, map[string]string{"root": "root-pw"}),
				EmbeddedACL:  aclCheck(t, "user root\ntopic readwrite #\n"),
			},
			user: "root", password: "root-pw",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, b := startEmbeddedProxy(t, c.opts)
			creds := []string{}
			if c.user != "" {
				creds = []string{"-u", c.user, "-P", c.password}
			}
			watch := mosquittotest.SubOptions{Username: c.user, Password: c.password, QoS: 1, Topics: []string{embeddedStatus, "marker"}}
			sub := b.Subscribe(t, watch)
			sub.Expect(t, embeddedWait, embeddedStatus, "online")

			b.Publish(t, mosquittotest.PubOptions{Username: c.user, Password: c.password, Topic: embeddedStatus, Payload: []byte("offline"), QoS: 1, Retain: true})
			b.Publish(t, mosquittotest.PubOptions{Username: c.user, Password: c.password, Topic: embeddedStatus, QoS: 1, Retain: true}) // clears a retained message
			b.Publish(t, mosquittotest.PubOptions{Username: c.user, Password: c.password, Topic: embeddedStatus, Payload: []byte("offline"), QoS: 0})

			// A will on the status topic is refused at CONNECT: it would be
			// published without an ACL check when the client dies.
			if out, err := mosquittoPub(t, b, append(creds, "-t", "marker", "-m", "x",
				"--will-topic", embeddedStatus, "--will-payload", "offline", "--will-retain")...); err == nil {
				t.Errorf("a client with a will on the status topic connected: %s", out)
			}
			// The gateway's client id is the gateway's.
			if out, err := mosquittoPub(t, b, append(creds, "-i", embeddedClientID, "-t", "marker", "-m", "x")...); err == nil {
				t.Errorf("a client took the gateway's client id: %s", out)
			}

			b.Publish(t, mosquittotest.PubOptions{Username: c.user, Password: c.password, Topic: "marker", Payload: []byte("after the attacks"), QoS: 1})
			sub.Expect(t, embeddedWait, "marker", "after the attacks")
			if !p.Connected() {
				t.Error("the gateway lost its connection")
			}
			fresh := b.Subscribe(t, watch)
			m := fresh.Next(t, embeddedWait)
			if m.Topic != embeddedStatus || string(m.Payload) != "online" || !m.Retain {
				t.Fatalf("retained status is %v, want retained \"online\"", m)
			}
		})
	}
}

// TestEmbeddedDisconnectNotWarned: clients coming and going (a clean
// DISCONNECT, a refused login, a hang-up without DISCONNECT, a port probe) log
// nothing above debug, and no message is empty. mochi's listener logs each
// connection that ends with an error as a warning with an empty message.
func TestEmbeddedDisconnectNotWarned(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	check := passwordCheck(t, true, map[string]string{"alice": "alice-pw"})
	_, b := startEmbeddedProxy(t, Options{EmbeddedAuth: check, Logger: zap.New(core)})

	b.Publish(t, mosquittotest.PubOptions{Topic: "t/clean", Payload: []byte("x"), QoS: 1})
	_ = b.PublishErr(t, mosquittotest.PubOptions{Username: "alice", Password: "wrong", Topic: "t/refused", QoS: 1})
	// A client that hangs up after its CONNACK, without DISCONNECT.
	c, err := net.DialTimeout("tcp", b.Addr, embeddedWait)
	if err != nil {
		t.Fatal(err)
	}
	// MQTT 3.1.1 §3.1: CONNECT, protocol "MQTT" level 4, clean session,
	// keepalive 60 s, client id "hangup".
	connect := []byte{0x10, 18, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 6, 'h', 'a', 'n', 'g', 'u', 'p'}
	if _, err := c.Write(connect); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	_ = c.SetReadDeadline(time.Now().Add(embeddedWait))
	if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK % x, %v", ack, err)
	}
	c.Close()

	// A port probe: connect, close, no CONNECT.
	probe, err := net.DialTimeout("tcp", b.Addr, embeddedWait)
	if err != nil {
		t.Fatal(err)
	}
	probe.Close()

	// The refused login, the hang-up and the probe each end with an error.
	waitFor(t, embeddedWait, "three connection ends logged", func() bool {
		return logs.FilterMessage(connectionEnded).Len() >= 3
	})
	for _, e := range logs.All() {
		if e.Message == "" {
			t.Errorf("empty log message at %v: %v", e.Level, e.ContextMap())
		}
		if e.LoggerName == "embedded" && e.Message == connectionEnded && e.Level > zapcore.DebugLevel {
			t.Errorf("%q logged at %v, want debug", e.Message, e.Level)
		}
		if e.Level >= zapcore.WarnLevel {
			t.Errorf("%v %s: %s %v", e.Level, e.LoggerName, e.Message, e.ContextMap())
		}
	}
}

// TestZapHandlerEmptyMessage: the record mochi's listener writes when a
// connection ends becomes a debug line with a message and the error.
func TestZapHandlerEmptyMessage(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	log := slog.New(zapHandler{zap.New(core)}).With("listener", "embedded")
	log.Warn("", "error", io.EOF) // listeners/tcp.go
	log.Warn("error processing packet", "error", io.ErrUnexpectedEOF)
	log.Info("added hook") // chatter: not passed on

	all := logs.All()
	if len(all) != 2 {
		t.Fatalf("%d entries, want 2: %v", len(all), all)
	}
	if e := all[0]; e.Message != connectionEnded || e.Level != zapcore.DebugLevel || e.ContextMap()["error"] != "EOF" || e.ContextMap()["listener"] != "embedded" {
		t.Errorf("connection end logged as %v %q %v", e.Level, e.Message, e.ContextMap())
	}
	if e := all[1]; e.Message != "error processing packet" || e.Level != zapcore.WarnLevel {
		t.Errorf("warning logged as %v %q", e.Level, e.Message)
	}
}

func TestUnshare(t *testing.T) {
	for in, want := range map[string]string{
		"a/b":               "a/b",
		"$share/g/a/#":      "a/#",
		"$share/g/#":        "#",
		"$share/g":          "$share/g", // no filter: refused by the broker anyway
		"$SYS/broker/load":  "$SYS/broker/load",
		"$shared/g/x":       "$shared/g/x",
		"$share/grp/+/temp": "+/temp",
	} {
		if got := unshare(in); got != want {
			t.Errorf("unshare(%q) = %q, want %q", in, got, want)
		}
	}
}
