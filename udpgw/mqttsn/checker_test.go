package mqttsn

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/mqttgw/mqttgw/metrics"
	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// checkingBroker is a fakeBroker with a PublishChecker: it forbids topics
// below "no/" and refuses names below "bad/".
type checkingBroker struct {
	*fakeBroker
}

func (checkingBroker) CheckPublish(device, topic string) error {
	switch {
	case len(topic) > 3 && topic[:3] == "no/":
		return fmt.Errorf("%w: %q for %s", udpgw.ErrForbidden, topic, device)
	case len(topic) > 4 && topic[:4] == "bad/":
		return fmt.Errorf("%w: %q", udpgw.ErrBadTopic, topic)
	}
	return nil
}

// TestRegisterAsksChecker: a REGISTER of a topic the Broker's PublishChecker
// forbids gets REGACK "not supported" and no topic id, one it finds invalid
// gets "invalid topic ID" (MQTT-SN 1.2 §6.5); others are registered.
func TestRegisterAsksChecker(t *testing.T) {
	reg := metrics.New()
	env := udpgw.Env{Name: "sn", Logger: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)), Metrics: reg,
		Broker: checkingBroker{newFakeBroker()}, Sessions: session.New(session.Options{})}
	e, err := New(env, Options{Bind: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	from := mustAddrPort(t, "127.0.0.1:9") // answers go nowhere; the counters tell
	handle := func(m mqttsn.Message) {
		b, err := mqttsn.Append(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		e.handle(from, b, time.Now())
	}
	handle(&mqttsn.Connect{Flags: mqttsn.Flags{CleanSession: true}, Duration: 60, ClientID: "c1"})
	handle(&mqttsn.Register{MsgID: 1, TopicName: "no/way"})
	handle(&mqttsn.Register{MsgID: 2, TopicName: "bad/name"})
	handle(&mqttsn.Register{MsgID: 3, TopicName: "ok/fine"})
	refused := func(r string) float64 {
		return reg.Get("mqttgw_mqttsn_refused_total", "listener", "sn", "reason", r)
	}
	if refused("forbidden") != 1 || refused("invalid_topic") != 1 {
		t.Errorf("refused forbidden %v, invalid_topic %v; want 1 and 1", refused("forbidden"), refused("invalid_topic"))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.byID["c1"]
	if c == nil || c.topics.len() != 1 {
		t.Fatalf("client %+v: want one topic registered", c)
	}
	if _, ok := c.topics.id("ok/fine"); !ok {
		t.Error("ok/fine not registered")
	}
}

func mustAddrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	a, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
