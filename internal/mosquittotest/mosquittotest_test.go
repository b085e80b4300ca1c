package mosquittotest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	waitpkg "github.com/mqttgw/mqttgw/internal/wait"
)

// wait is how long the tests wait for a message that should arrive.
const wait = 5 * time.Second

func TestPlainUserPublishSubscribe(t *testing.T) {
	t.Parallel()
	b := Start(t, Options{Users: map[string]string{"alice": "s3cret", "bob": "other"}})
	if !strings.HasPrefix(b.URL, "tcp://127.0.0.1:") || b.Addr != b.URL[len("tcp://"):] || b.CAFile != "" {
		t.Fatalf("Broker = %+v", b)
	}
	s := b.Subscribe(t, SubOptions{Username: "alice", Password: "s3cret", QoS: 1, Topics: []string{"dev/+/temp"}})
	b.Publish(t, PubOptions{Username: "bob", Password: "other", Topic: "dev/7/temp", Payload: []byte("21.5"), QoS: 1})
	m := s.Expect(t, wait, "dev/7/temp", "21.5")
	if m.QoS != 1 || m.Retain {
		t.Errorf("got %v, want qos 1, not retained", m)
	}

	// Every byte value survives the trip, and so does an empty payload.
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	b.Publish(t, PubOptions{Username: "bob", Password: "other", Topic: "dev/8/temp", Payload: all})
	if m := s.Next(t, wait); !bytes.Equal(m.Payload, all) || m.QoS != 0 {
		t.Errorf("got %v, want the 256 byte values at qos 0", m)
	}
	b.Publish(t, PubOptions{Username: "bob", Password: "other", Topic: "dev/9/temp"})
	s.Expect(t, wait, "dev/9/temp", "")
	s.None(t, 200*time.Millisecond)
}

func TestWrongPasswordRefused(t *testing.T) {
	t.Parallel()
	b := Start(t, Options{Users: map[string]string{"alice": "s3cret"}})
	err := b.PublishErr(t, PubOptions{Username: "alice", Password: "wrong", Topic: "a", Payload: []byte("x")})
	if err == nil || !strings.Contains(err.Error(), "not authorised") {
		t.Errorf("PublishErr with a wrong password = %v, want a refusal", err)
	}
	err = b.PublishErr(t, PubOptions{Topic: "a", Payload: []byte("x")})
	if err == nil {
		t.Errorf("anonymous PublishErr without allow_anonymous = nil, want a refusal")
	}
	if _, err := b.SubscribeErr(t, SubOptions{Username: "alice", Password: "wrong", Topics: []string{"a"}}); err == nil ||
		!strings.Contains(err.Error(), "not authorised") {
		t.Errorf("SubscribeErr with a wrong password = %v, want a refusal", err)
	}
	if err := b.PublishErr(t, PubOptions{Username: "alice", Password: "s3cret", Topic: "a", Payload: []byte("x")}); err != nil {
		t.Errorf("PublishErr with the right password: %v", err)
	}
}

func TestRetainedSeenByLaterSubscriber(t *testing.T) {
	t.Parallel()
	b := Start(t, Options{AllowAnonymous: true})
	b.Publish(t, PubOptions{Topic: "state/lamp", Payload: []byte("on"), QoS: 1, Retain: true})
	s := b.Subscribe(t, SubOptions{Topics: []string{"state/#"}, QoS: 1})
	if m := s.Expect(t, wait, "state/lamp", "on"); !m.Retain {
		t.Errorf("got %v, want retained", m)
	}
	// A live message to the same subscriber is not flagged retained.
	b.Publish(t, PubOptions{Topic: "state/lamp", Payload: []byte("off"), Retain: true})
	if m := s.Expect(t, wait, "state/lamp", "off"); m.Retain {
		t.Errorf("got %v, want not retained", m)
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	b := Start(t, Options{TLS: true, Users: map[string]string{"dev": "pw"}})
	if !strings.HasPrefix(b.URL, "ssl://127.0.0.1:") || b.CAFile == "" {
		t.Fatalf("Broker = %+v", b)
	}
	s := b.Subscribe(t, SubOptions{Username: "dev", Password: "pw", Topics: []string{"t"}})
	b.Publish(t, PubOptions{Username: "dev", Password: "pw", Topic: "t", Payload: []byte("over tls")})
	s.Expect(t, wait, "t", "over tls")

	// A Go client verifies the server with the CA under each name.
	pem, err := os.ReadFile(b.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", b.CAFile)
	}
	for _, name := range []string{"127.0.0.1", "localhost"} {
		c, err := tls.Dial("tcp", b.Addr, &tls.Config{RootCAs: pool, ServerName: name})
		if err != nil {
			t.Errorf("TLS dial as %s: %v", name, err)
			continue
		}
		c.Close()
	}
	// Without the CA the certificate is not trusted.
	if c, err := tls.Dial("tcp", b.Addr, &tls.Config{ServerName: "127.0.0.1"}); err == nil {
		c.Close()
		t.Errorf("TLS dial without the CA succeeded")
	}
}

func TestRestartKeepsPort(t *testing.T) {
	t.Parallel()
	b := Start(t, Options{AllowAnonymous: true})
	port, addr, url := b.Port, b.Addr, b.URL
	s := b.Subscribe(t, SubOptions{Topics: []string{"r/#"}})
	b.Restart()
	if b.Port != port || b.Addr != addr || b.URL != url {
		t.Fatalf("after Restart: %s, want %s", b.URL, url)
	}
	s.WaitSubscribed(t, 10*time.Second)
	b.Publish(t, PubOptions{Topic: "r/1", Payload: []byte("after restart")})
	s.Expect(t, wait, "r/1", "after restart")

	// Restart of a stopped broker starts it.
	b.Stop()
	b.Restart()
	s.WaitSubscribed(t, 10*time.Second)
	b.Publish(t, PubOptions{Topic: "r/2", Payload: []byte("again")})
	s.Expect(t, wait, "r/2", "again")
}

func TestRestartWaitsForPort(t *testing.T) {
	t.Parallel()
	b := Start(t, Options{AllowAnonymous: true})
	b.Stop()
	// Another socket holds the port until mosquitto failed to bind it:
	// Restart retries until the port is free, and does not take the
	// squatter for the broker.
	l, err := net.Listen("tcp", b.Addr)
	if err != nil {
		t.Fatal(err)
	}
	freed := make(chan bool, 1)
	go func() {
		refused := waitpkg.Until(wait, func() bool { return strings.Contains(b.Log(), "Address already in use") })
		l.Close()
		freed <- refused
	}()
	b.Restart()
	if !<-freed {
		t.Fatalf("broker log shows no failed bind within %v", wait)
	}
	s := b.Subscribe(t, SubOptions{Topics: []string{"p"}})
	b.Publish(t, PubOptions{Topic: "p", Payload: []byte("mine")})
	s.Expect(t, wait, "p", "mine")
}

func TestPersistentSession(t *testing.T) {
	t.Parallel()
	b := Start(t, Options{AllowAnonymous: true})
	o := SubOptions{ClientID: "keeper", QoS: 1, Topics: []string{"q"}}
	s := b.Subscribe(t, o)
	s.Close()
	b.Publish(t, PubOptions{Topic: "q", Payload: []byte("queued"), QoS: 1})
	s = b.Subscribe(t, o)
	s.Expect(t, wait, "q", "queued")
}

// persistExtra turns persistence on, in dir: the in-memory database is saved
// after every autosave changes (autosave_on_changes), or with 0 only when the
// broker exits.
func persistExtra(dir string, autosave int) string {
	return fmt.Sprintf("persistence true\npersistence_location %s/\nautosave_on_changes true\nautosave_interval %d\n", dir, autosave)
}

// TestKillSavesNothing: Kill is a crash. A QoS 1 message queued for an
// offline persistent session survives Stop (the broker saves on its way out)
// but not Kill when the broker saves only at exit; with a save after every
// change, it survives Kill once that save is complete.
func TestKillSavesNothing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		autosave int
		stop     func(*Broker)
		kept     bool
	}{
		{"stop", 0, (*Broker).Stop, true},
		{"kill", 0, (*Broker).Kill, false},
		{"kill after autosave", 1, (*Broker).Kill, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			b := Start(t, Options{AllowAnonymous: true, Extra: persistExtra(dir, tc.autosave)})
			o := SubOptions{ClientID: "keeper", QoS: 1, Topics: []string{"q"}}
			b.Subscribe(t, o).Close()
			b.Publish(t, PubOptions{Topic: "q", Payload: []byte("queued"), QoS: 1})
			if tc.autosave > 0 {
				// Mosquitto acknowledges first, then saves at the end of its
				// loop iteration (logging "Saving" before it writes): wait
				// until the saved file, renamed into place when complete,
				// holds the message.
				saved := func() bool {
					db, _ := os.ReadFile(filepath.Join(dir, "mosquitto.db"))
					return bytes.Contains(db, []byte("queued"))
				}
				waitpkg.For(t, wait, "the message saved", saved)
			}
			tc.stop(b)
			b.Restart()
			s := b.Subscribe(t, o)
			if tc.kept {
				s.Expect(t, wait, "q", "queued")
			} else {
				s.None(t, 300*time.Millisecond)
			}
		})
	}
}

// TestPoll: Poll returns false on a quiet subscriber and the message once
// one arrives.
func TestPoll(t *testing.T) {
	t.Parallel()
	b := Start(t, Options{AllowAnonymous: true})
	s := b.Subscribe(t, SubOptions{Topics: []string{"p"}})
	if m, ok := s.Poll(t, 50*time.Millisecond); ok {
		t.Fatalf("Poll on a quiet subscriber: %v", m)
	}
	b.Publish(t, PubOptions{Topic: "p", Payload: []byte("x")})
	if m, ok := s.Poll(t, wait); !ok || m.Topic != "p" || string(m.Payload) != "x" {
		t.Fatalf("Poll = %v, %t; want p x", m, ok)
	}
}

func TestACLDeniesTopic(t *testing.T) {
	t.Parallel()
	b := Start(t, Options{
		Users: map[string]string{"alice": "a", "bob": "b"},
		ACL: `user alice
topic readwrite ok/#
topic read secret/#

user bob
topic write secret/#
`,
	})
	s := b.Subscribe(t, SubOptions{Username: "alice", Password: "a", Topics: []string{"ok/#", "secret/#"}})
	// alice may not write secret/: the broker drops the message (and,
	// for MQTT 3.1.1, still reports success to the publisher).
	b.Publish(t, PubOptions{Username: "alice", Password: "a", Topic: "secret/x", Payload: []byte("no")})
	// bob may: it arrives, after nothing from alice.
	b.Publish(t, PubOptions{Username: "bob", Password: "b", Topic: "secret/y", Payload: []byte("yes")})
	s.Expect(t, wait, "secret/y", "yes")
	// bob may not write ok/.
	b.Publish(t, PubOptions{Username: "bob", Password: "b", Topic: "ok/z", Payload: []byte("no")})
	s.None(t, 300*time.Millisecond)
	if log := b.Log(); !strings.Contains(log, "Denied PUBLISH") {
		t.Errorf("broker log has no \"Denied PUBLISH\":\n%s", log)
	}
}

func TestBadConfigFailsStart(t *testing.T) {
	t.Parallel()
	ft := &fakeT{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer ft.runCleanups()
		Start(ft, Options{Extra: "no_such_option 1"})
	}()
	<-done
	if !ft.Failed() || !strings.Contains(ft.msg, "no_such_option") {
		t.Errorf("Start with a bad option: failed %t, message %q; want a failure naming the option", ft.Failed(), ft.msg)
	}
}

// TestNoLeaks checks that stopping a broker and closing its subscribers
// ends every goroutine they started. It does not run in parallel, so no
// other test's goroutines are counted.
func TestNoLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("use", func(t *testing.T) {
		b := Start(t, Options{AllowAnonymous: true})
		s := b.Subscribe(t, SubOptions{Topics: []string{"x"}})
		b.Publish(t, PubOptions{Topic: "x", Payload: []byte("1")})
		s.Expect(t, wait, "x", "1")
		b.Restart()
	})
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fakeT records a failure instead of ending the test, so a test can check
// that the helper fails. Fatal ends the calling goroutine, as testing's does.
type fakeT struct {
	testing.TB
	failed   bool
	msg      string
	cleanups []func()
}

func (f *fakeT) Helper()                        {}
func (f *fakeT) Failed() bool                   { return f.failed }
func (f *fakeT) Cleanup(fn func())              { f.cleanups = append(f.cleanups, fn) }
func (f *fakeT) Logf(string, ...any)            {}
func (f *fakeT) Errorf(format string, a ...any) { f.fail(format, a...) }
func (f *fakeT) Fatalf(format string, a ...any) {
	f.fail(format, a...)
	runtime.Goexit()
}

func (f *fakeT) fail(format string, a ...any) {
	f.failed = true
	f.msg += fmt.Sprintf(format, a...) + "\n"
}

func (f *fakeT) runCleanups() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}
