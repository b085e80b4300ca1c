package mosquittotest

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/mqttgw/mqttgw/internal/testproc"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// subackTimeout bounds the wait for mosquitto_sub's SUBACK.
	subackTimeout = 10 * time.Second
	// subStopGrace is how long Close waits after SIGTERM before SIGKILL.
	subStopGrace = 2 * time.Second
	// msgQueue is how many unread messages a Sub holds.
	msgQueue = 1024
	// subOutputLines is how many of mosquitto_sub's last output lines a Sub
	// keeps for failure messages.
	subOutputLines = 200
	// msgMarker starts the lines that mosquitto_sub prints for messages; its
	// -d debug lines start with "Client " or "Subscribed ".
	msgMarker = "MOSQUITTOTEST-MSG"
	// msgFormat is mosquitto_sub's -F format: QoS, retain flag (0 or 1),
	// payload length, payload in lower case hex (empty for an empty
	// payload) and, last so it may hold spaces, the topic.
	msgFormat = msgMarker + " %q %r %l %x %t"
	// subackPrefix starts the line mosquitto_sub -d prints for a SUBACK,
	// "Subscribed (mid: 1): 0, 1" with one granted QoS per topic; 128 is
	// a refusal.
	subackPrefix = "Subscribed (mid: "
)

// SubOptions configures a mosquitto_sub subscriber.
type SubOptions struct {
	Username, Password string
	// QoS is the subscription's maximum QoS, 0 to 2.
	QoS int
	// Topics are the topic filters, subscribed in one SUBSCRIBE.
	Topics []string
	// ClientID is the MQTT client id; "" lets the broker choose one.
	ClientID string
	// CleanSession asks for a clean session. It applies only with a ClientID:
	// without one the session is always clean, and with one a false
	// CleanSession keeps the session (and queued QoS 1 and 2 messages) on
	// the broker between subscribers with that ClientID.
	CleanSession bool
}

// Message is one message printed by mosquitto_sub.
type Message struct {
	Topic   string
	Payload []byte
	QoS     int  // the QoS it was delivered with
	Retain  bool // set for retained messages sent on subscribe
}

func (m Message) String() string {
	return fmt.Sprintf("topic %q payload %q qos %d retain %t", m.Topic, m.Payload, m.QoS, m.Retain)
}

// Sub is a running mosquitto_sub.
type Sub struct {
	desc    string // for messages: the topics
	proc    *testproc.Process
	msgs    chan Message  // closed when the output ends
	subacks chan []int    // granted QoS per SUBACK; closed when the output ends
	readerD chan struct{} // closed when the reader goroutine returned

	closeOnce sync.Once

	mu       sync.Mutex
	lines    []string // the last subOutputLines output lines
	overflow int      // messages dropped because msgs was full
	badLines int      // message lines that did not parse
}

// Subscribe starts mosquitto_sub and returns once the broker acknowledged the
// subscription with every topic granted. It fails the test otherwise.
// Cleanup closes the Sub.
func (b *Broker) Subscribe(t testing.TB, o SubOptions) *Sub {
	t.Helper()
	s, err := b.SubscribeErr(t, o)
	if err != nil {
		t.Fatalf("mosquittotest: %v", err)
	}
	return s
}

// SubscribeErr is Subscribe returning the error (a refused connection, a
// refused topic, no SUBACK in time) instead of failing the test. It fails
// the test only when a tool is missing.
func (b *Broker) SubscribeErr(t testing.TB, o SubOptions) (*Sub, error) {
	t.Helper()
	stdbuf := mustTool(t, "stdbuf")
	bin := mustTool(t, "mosquitto_sub")
	if len(o.Topics) == 0 {
		return nil, errors.New("subscribe: no topics")
	}
	if o.QoS < 0 || o.QoS > 2 {
		return nil, fmt.Errorf("subscribe: QoS %d", o.QoS)
	}
	// mosquitto_sub's stdout is fully buffered when it is a pipe, so its -d
	// lines (the SUBACK) would not arrive until a message flushes them; stdbuf
	// makes it line buffered.
	args := []string{"-oL", bin, "-d", "-q", strconv.Itoa(o.QoS), "-F", msgFormat}
	args = append(args, b.clientArgs(o.Username, o.Password)...)
	if o.ClientID != "" {
		args = append(args, "-i", o.ClientID)
		if !o.CleanSession {
			args = append(args, "-c")
		}
	}
	for _, tp := range o.Topics {
		args = append(args, "-t", tp)
	}

	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(stdbuf, args...)
	cmd.Stdout = w
	cmd.Stderr = w
	p, err := testproc.Start(cmd)
	w.Close() // the child has its own descriptor
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("subscribe %s: %w", b.Addr, err)
	}
	s := &Sub{
		desc:    fmt.Sprintf("mosquitto_sub %s -t %s", b.Addr, strings.Join(o.Topics, " -t ")),
		proc:    p,
		msgs:    make(chan Message, msgQueue),
		subacks: make(chan []int, 16),
		readerD: make(chan struct{}),
	}
	go s.read(r)

	if err := s.waitSubscribed(subackTimeout); err != nil {
		s.Close()
		return nil, err
	}
	t.Cleanup(func() {
		s.Close()
		if t.Failed() {
			t.Logf("mosquittotest: %s output:\n%s", s.desc, s.output())
		}
	})
	return s, nil
}

// clientArgs are the connection arguments of mosquitto_sub and mosquitto_pub.
func (b *Broker) clientArgs(user, password string) []string {
	args := []string{"-h", b.Host, "-p", strconv.Itoa(b.Port)}
	if b.CAFile != "" {
		args = append(args, "--cafile", b.CAFile)
	}
	if user != "" {
		args = append(args, "-u", user)
	}
	if password != "" {
		args = append(args, "-P", password)
	}
	return args
}

// read reads mosquitto_sub's output until it ends.
func (s *Sub) read(r *os.File) {
	defer close(s.readerD)
	defer close(s.subacks)
	defer close(s.msgs)
	defer r.Close()
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if line = strings.TrimSuffix(line, "\n"); line != "" {
			s.handle(line)
		}
		if err != nil {
			return
		}
	}
}

// handle records one output line and passes on messages and SUBACKs. It
// never blocks: a full queue is counted and reported by the next read.
func (s *Sub) handle(line string) {
	s.mu.Lock()
	if len(s.lines) == subOutputLines {
		s.lines = s.lines[1:]
	}
	s.lines = append(s.lines, line)
	s.mu.Unlock()

	switch {
	case strings.HasPrefix(line, msgMarker+" "):
		m, err := parseMessage(line)
		if err != nil {
			s.mu.Lock()
			s.badLines++
			s.mu.Unlock()
			return
		}
		select {
		case s.msgs <- m:
		default:
			s.mu.Lock()
			s.overflow++
			s.mu.Unlock()
		}
	case strings.HasPrefix(line, subackPrefix):
		_, list, _ := strings.Cut(line, "): ")
		var granted []int
		for f := range strings.SplitSeq(list, ", ") {
			q, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				q = 128
			}
			granted = append(granted, q)
		}
		select {
		case s.subacks <- granted:
		default: // nobody waits for that many re-subscriptions
		}
	}
}

// parseMessage parses a line printed with msgFormat.
func parseMessage(line string) (Message, error) {
	// The hex payload is empty for an empty payload, leaving two spaces.
	f := strings.SplitN(line, " ", 6)
	if len(f) != 6 {
		return Message{}, fmt.Errorf("short message line %q", line)
	}
	qos, err1 := strconv.Atoi(f[1])
	n, err2 := strconv.Atoi(f[3])
	payload, err3 := hex.DecodeString(f[4])
	if err := errors.Join(err1, err2, err3); err != nil {
		return Message{}, fmt.Errorf("message line %q: %w", line, err)
	}
	if len(payload) != n {
		return Message{}, fmt.Errorf("message line %q: payload has %d bytes, want %d", line, len(payload), n)
	}
	return Message{Topic: f[5], Payload: payload, QoS: qos, Retain: f[2] == "1"}, nil
}

// waitSubscribed waits for the next SUBACK line and checks every topic was
// granted.
func (s *Sub) waitSubscribed(timeout time.Duration) error {
	select {
	case granted, ok := <-s.subacks:
		if !ok {
			return fmt.Errorf("%s exited before its SUBACK: %s; output:\n%s", s.desc, s.exitStatus(), s.output())
		}
		for _, q := range granted {
			if q < 0 || q > 2 {
				return fmt.Errorf("%s: subscription refused (granted %v)", s.desc, granted)
			}
		}
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s: no SUBACK within %v; output:\n%s", s.desc, timeout, s.output())
	}
}

// WaitSubscribed waits until the subscription has been acknowledged again
// since Subscribe or the previous WaitSubscribed: mosquitto_sub reconnects by
// itself (about a second after a lost connection, e.g. Broker.Restart) and
// subscribes again.
func (s *Sub) WaitSubscribed(t testing.TB, timeout time.Duration) {
	t.Helper()
	if err := s.waitSubscribed(timeout); err != nil {
		t.Fatalf("mosquittotest: %v", err)
	}
}

// Next returns the next message, failing the test when none arrives within
// timeout.
func (s *Sub) Next(t testing.TB, timeout time.Duration) Message {
	t.Helper()
	return s.next(t, timeout, "any message")
}

// Poll returns the next message if one arrives within timeout, and false if
// none does: unlike Next, a quiet subscriber is not a failure, so a test can
// read while it waits for something else (a timer, a condition it polls). It
// fails the test when messages were lost or mosquitto_sub exited.
func (s *Sub) Poll(t testing.TB, timeout time.Duration) (Message, bool) {
	t.Helper()
	s.checkLosses(t)
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	select {
	case m, ok := <-s.msgs:
		if !ok {
			t.Fatalf("mosquittotest: %s exited: %s; output:\n%s", s.desc, s.exitStatus(), s.output())
		}
		return m, true
	case <-tm.C:
		return Message{}, false
	}
}

// Expect returns the next message, failing the test when none arrives within
// timeout or it does not have the topic and payload.
func (s *Sub) Expect(t testing.TB, timeout time.Duration, topic string, payload string) Message {
	t.Helper()
	want := fmt.Sprintf("topic %q payload %q", topic, payload)
	m := s.next(t, timeout, want)
	if m.Topic != topic || string(m.Payload) != payload {
		t.Fatalf("mosquittotest: %s: got %v, want %s", s.desc, m, want)
	}
	return m
}

// None fails the test if a message arrives within d.
func (s *Sub) None(t testing.TB, d time.Duration) {
	t.Helper()
	s.checkLosses(t)
	select {
	case m, ok := <-s.msgs:
		if ok {
			t.Fatalf("mosquittotest: %s: got %v, want no message for %v", s.desc, m, d)
		}
		// The subscriber exited: nothing more can arrive, but the test
		// asked for a live subscriber.
		t.Fatalf("mosquittotest: %s exited: %s; output:\n%s", s.desc, s.exitStatus(), s.output())
	case <-time.After(d):
	}
}

func (s *Sub) next(t testing.TB, timeout time.Duration, want string) Message {
	t.Helper()
	s.checkLosses(t)
	select {
	case m, ok := <-s.msgs:
		if !ok {
			t.Fatalf("mosquittotest: %s exited while waiting for %s: %s; output:\n%s", s.desc, want, s.exitStatus(), s.output())
		}
		return m
	case <-time.After(timeout):
		t.Fatalf("mosquittotest: %s: no message within %v, want %s", s.desc, timeout, want)
	}
	panic("unreachable")
}

// checkLosses fails the test when messages were dropped or unparsable.
func (s *Sub) checkLosses(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	overflow, bad := s.overflow, s.badLines
	s.mu.Unlock()
	if overflow > 0 {
		t.Fatalf("mosquittotest: %s: %d messages dropped: more than %d unread", s.desc, overflow, msgQueue)
	}
	if bad > 0 {
		t.Fatalf("mosquittotest: %s: %d message lines did not parse; output:\n%s", s.desc, bad, s.output())
	}
}

// Close stops mosquitto_sub (SIGTERM, SIGKILL after a bound) and returns
// after it and the Sub's goroutines exited. It is idempotent.
func (s *Sub) Close() {
	s.closeOnce.Do(func() {
		_, _ = s.proc.Stop(subStopGrace)
		select {
		case <-s.readerD:
		case <-time.After(testproc.KillWait):
			// Only a grandchild holding the pipe could cause this; the
			// reader exits when it does.
		}
	})
}

func (s *Sub) exitStatus() string {
	select {
	case <-s.proc.Done():
		if s.proc.Err() == nil {
			return "exit status 0"
		}
		return s.proc.Err().Error()
	case <-time.After(time.Second):
		return "still running"
	}
}

// output returns mosquitto_sub's last output lines.
func (s *Sub) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b bytes.Buffer
	for _, l := range s.lines {
		b.WriteString("\t")
		b.WriteString(l)
		b.WriteString("\n")
	}
	return b.String()
}
