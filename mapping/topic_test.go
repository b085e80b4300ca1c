package mapping

import (
	"errors"
	"testing"

	"github.com/mqttgw/mqttgw/config"
)

func topicTable(t *testing.T, rules ...config.Rule) *Table {
	t.Helper()
	ls := []config.Listener{{Name: "sn", Type: "mqttsn", Mountpoint: "site1/"}, {Name: "co", Type: "coap"}}
	tb, ps := Compile("gw1", ls, rules)
	if len(ps) > 0 {
		t.Fatalf("problems: %v", ps)
	}
	return tb
}

func TestMapTopic(t *testing.T) {
	tb := topicTable(t,
		config.Rule{Name: "kinds", Listener: "sn", Match: config.Match{Topic: "d/{device}/{kind}"},
			Publish: []config.Publish{{Topic: "devices/{device}/{kind}"}}},
		config.Rule{Name: "rest", Listener: "sn", Match: config.Match{Topic: "raw/{path...}"},
			Publish: []config.Publish{{Topic: "{gateway}/{listener}/{device}/{path}"}}},
		config.Rule{Name: "coap", Listener: "co", Match: config.Match{Topic: "t/{room}"},
			Publish: []config.Publish{{Topic: "rooms/{room}/temp"}}},
	)
	tests := []struct {
		listener, device, topic string
		want, rule              string
	}{
		{"sn", "c1", "d/dev9/temp", "site1/devices/dev9/temp", "kinds"},
		{"sn", "c1", "d/dev9", "site1/d/dev9", ""},               // too few levels: unchanged
		{"sn", "c1", "d/dev9/temp/x", "site1/d/dev9/temp/x", ""}, // too many
		{"sn", "c1", "d//temp", "site1/d//temp", ""},             // an empty level is no capture
		{"sn", "c1", "raw/a/b/c", "site1/gw1/sn/c1/a/b/c", "rest"},
		{"sn", "c1", "raw", "site1/raw", ""},
		{"sn", "c1", "other/x", "site1/other/x", ""},
		{"co", "ep", "t/kitchen", "rooms/kitchen/temp", "coap"},
	}
	for _, tt := range tests {
		got, rule, err := tb.MapTopic(tt.listener, tt.device, tt.topic)
		if err != nil || got != tt.want || rule != tt.rule {
			t.Errorf("MapTopic(%q, %q, %q) = %q, %q, %v; want %q, %q", tt.listener, tt.device, tt.topic, got, rule, err, tt.want, tt.rule)
		}
	}
	if !tb.HasTopicRule("co", "t/x") || tb.HasTopicRule("co", "u/x") {
		t.Error("HasTopicRule")
	}
	// A client id cannot inject levels through {device}.
	if _, _, err := tb.MapTopic("sn", "a/b", "raw/x"); !errors.Is(err, ErrUnsafeTopic) {
		t.Errorf("unsafe device id: err = %v", err)
	}
}

func TestTopicRuleProblems(t *testing.T) {
	ls := []config.Listener{{Name: "sn", Type: "mqttsn"}, {Name: "u", Type: "udp"}}
	_, ps := Compile("gw1", ls, []config.Rule{
		{Name: "a", Listener: "sn", Match: config.Match{Topic: "d/{x...}/y"}, Publish: []config.Publish{{Topic: "n/{nope}", QoS: 1}}},
		{Name: "b", Listener: "u", Match: config.Match{Topic: "d/{x}"}, Publish: []config.Publish{{Topic: "n"}}},
	})
	checkProblems(t, ps, []problem{
		{key: "rule[0].match.topic", msg: `{x...} must be the last level of "d/{x...}/y"`},
		{key: "rule[0].publish[0]", msg: "a topic rule keeps the device's payload, QoS and retain"},
		{key: "rule[0].publish[0].topic", msg: "unknown placeholder {nope}"},
		{key: "rule[1].match.topic", msg: "topic patterns are for rules of mqttsn and coap listeners"},
	})
}
