package coap

import (
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mqttgw/mqttgw/udpgw"
)

// TestLogMessagesPlain: the listener's messages do not name the component
// ("coap: broker refused"): the logger the gateway passes down is named for
// it already (coap, coaps), so the messages are plain.
func TestLogMessagesPlain(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	tl := startListener(t, udpgw.Env{Logger: zap.New(core).Named("coap")}, Options{})
	tl.broker.mu.Lock()
	tl.broker.pubErr = udpgw.ErrForbidden
	tl.broker.mu.Unlock()
	p := newRawPeer(t, tl.addr)
	if r := p.do(req{typ: message.Confirmable, code: codes.PUT, path: "/ps/no/t", token: "f", observe: -1, payload: "x"}); r.Code() != codes.Forbidden {
		t.Fatalf("publish: %v, want 4.03", r.Code())
	}
	p.send([]byte{0x40, 0x01, 0x12, 0x34, 0xb5, 'p'}) // a truncated option: malformed
	waitFor(t, 5*time.Second, "logs", func() bool {
		return logs.FilterMessage("broker refused").Len() == 1 && logs.FilterMessage("malformed datagram").Len() == 1
	})
	for _, e := range logs.All() {
		if strings.HasPrefix(e.Message, "coap") {
			t.Errorf("message %q names its component; the logger %q does", e.Message, e.LoggerName)
		}
		if e.LoggerName != "coap" && !strings.HasPrefix(e.LoggerName, "coap.") {
			t.Errorf("logger %q for %q", e.LoggerName, e.Message)
		}
	}
}
