package mapping

import (
	"fmt"
	"strings"

	"github.com/mqttgw/mqttgw/config"
)

// Topic rules rewrite the topics of protocol listeners (mqttsn, coap, coaps): the
// device names a topic (an MQTT-SN topic name, a CoAP path) and the first rule whose
// match.topic pattern fits it renders its one publish topic from the captured
// levels. Without a matching rule the topic passes unchanged. Payload, QoS and
// retain are the device's. The listener's mountpoint prefixes the result either way.
//
// This runs once per device publish, not per raw datagram, so it favours simplicity
// over the allocation budget of Map.

// topicRule is one compiled topic rule.
type topicRule struct {
	name    string
	pattern []patLevel
	out     []part
}

// patLevel is one level of a topic pattern: a literal, or a capture.
type patLevel struct {
	lit     string
	capture string
	rest    bool // a final {name...}: one or more levels
}

// protocolListener reports whether rules of listener type typ are topic rules.
func protocolListener(typ string) bool {
	k, _ := config.KindOf(typ)
	return k.TopicRules
}

func (c *compiler) topicRule(i int, cr *config.Rule) *topicRule {
	c.bad = false
	key := fmt.Sprintf("rule[%d]", i)
	c.ruleName(key, cr.Name)
	tr := &topicRule{name: cr.Name}
	m := cr.Match
	if m.Topic == "" {
		c.add(key+".match.topic", "missing: a rule of a %s listener matches a topic pattern such as \"d/{device}/{kind}\"", c.listeners[cr.Listener].Type)
	}
	if m.HexPrefix != "" || m.TextPrefix != "" || m.Regex != "" || m.MinLen != 0 || m.MaxLen != 0 || m.JSON {
		c.add(key+".match", "a rule of a %s listener matches by topic only: leave out hex_prefix, text_prefix, regex, min_len, max_len and json", c.listeners[cr.Listener].Type)
	}
	if cr.Device != (config.Extract{}) || len(cr.Fields) > 0 || len(cr.Tests) > 0 {
		c.add(key, "device, fields and tests belong to rules of udp listeners; a topic rule takes its names from match.topic")
	}
	if cr.Ack != nil {
		c.add(key+".ack", "acks answer datagrams of udp listeners; a %s device gets its protocol's own acknowledgement", c.listeners[cr.Listener].Type)
	}
	names := map[string]bool{"device": true, "listener": true, "gateway": true}
	if m.Topic != "" {
		levels := strings.Split(m.Topic, "/")
		for n, l := range levels {
			switch {
			case strings.HasPrefix(l, "{") && strings.HasSuffix(l, "...}"):
				name := l[1 : len(l)-4]
				if n != len(levels)-1 {
					c.add(key+".match.topic", "{%s...} must be the last level of %q", name, m.Topic)
				}
				tr.pattern = append(tr.pattern, patLevel{capture: name, rest: true})
				c.captureName(key, name, names)
			case strings.HasPrefix(l, "{") && strings.HasSuffix(l, "}"):
				name := l[1 : len(l)-1]
				tr.pattern = append(tr.pattern, patLevel{capture: name})
				c.captureName(key, name, names)
			case strings.ContainsAny(l, "{}+#"):
				c.add(key+".match.topic", "level %q of %q: a level is literal text, {name} or a final {name...}", l, m.Topic)
			default:
				tr.pattern = append(tr.pattern, patLevel{lit: l})
			}
		}
	}
	switch {
	case len(cr.Publish) != 1:
		c.add(key+".publish", "a topic rule has exactly one [[rule.publish]] with the new topic, not %d", len(cr.Publish))
	default:
		p := cr.Publish[0]
		pk := key + ".publish[0]"
		if p.Payload != "" || p.Template != "" || p.QoS != 0 || p.Retain {
			c.add(pk, "a topic rule keeps the device's payload, QoS and retain: set only topic")
		}
		parts, err := parseTemplate(p.Topic)
		switch {
		case p.Topic == "":
			c.add(pk+".topic", "topic is empty")
		case err != nil:
			c.add(pk+".topic", "%v", err)
		case strings.ContainsAny(p.Topic, "+#"):
			c.add(pk+".topic", "topic %q contains a wildcard: publish topics cannot", p.Topic)
		}
		var known []string
		for n := range names {
			known = append(known, n)
		}
		for _, pt := range parts {
			if pt.isName && !names[pt.text] {
				c.add(pk+".topic", "unknown placeholder {%s} in topic %q (known: %s)", pt.text, p.Topic, list(sortedStrings(known)))
			}
		}
		tr.out = parts
	}
	if c.bad {
		return nil
	}
	return tr
}

func (c *compiler) captureName(key, name string, names map[string]bool) {
	if !isIdent(name) {
		c.add(key+".match.topic", "capture name %q is not an identifier", name)
		return
	}
	if names[name] && name != "device" {
		c.add(key+".match.topic", "capture name %q is used twice or reserved", name)
	}
	names[name] = true
}

// match returns the captured values if topic fits the pattern.
func (tr *topicRule) match(topic string) (map[string]string, bool) {
	caps := map[string]string{}
	for i, pl := range tr.pattern {
		if pl.rest {
			if topic == "" {
				return nil, false
			}
			caps[pl.capture] = topic
			return caps, true
		}
		level, rest, more := strings.Cut(topic, "/")
		if pl.capture != "" {
			if level == "" {
				return nil, false
			}
			caps[pl.capture] = level
		} else if level != pl.lit {
			return nil, false
		}
		if !more {
			return caps, i == len(tr.pattern)-1
		}
		topic = rest
	}
	return nil, false // the topic has more levels than the pattern
}

// MapTopic rewrites a device's topic on a protocol listener: the first topic rule
// whose pattern fits renders the new topic, else the topic passes unchanged; the
// listener's mountpoint prefixes the result. rule names the rule used ("" for none).
// A value substituted from {device} follows the same safety rule as Map's topics.
func (t *Table) MapTopic(listener, device, topic string) (out, rule string, err error) {
	mount := ""
	if t != nil {
		mount = t.mountpoints[listener]
	}
	if t == nil {
		return topic, "", nil
	}
	for _, tr := range t.topicRules[listener] {
		caps, ok := tr.match(topic)
		if !ok {
			continue
		}
		if _, captured := caps["device"]; !captured {
			if why := unsafeLevel([]byte(device), false); why != "" {
				return "", tr.name, fmt.Errorf("%w: rule %q: {device} = %q %s", ErrUnsafeTopic, tr.name, device, why)
			}
			caps["device"] = device
		}
		caps["listener"], caps["gateway"] = listener, t.gateway
		var b strings.Builder
		b.WriteString(mount)
		for _, p := range tr.out {
			if p.isName {
				b.WriteString(caps[p.text])
			} else {
				b.WriteString(p.text)
			}
		}
		return b.String(), tr.name, nil
	}
	return mount + topic, "", nil
}

// HasTopicRule reports whether a topic rule of listener matches topic.
func (t *Table) HasTopicRule(listener, topic string) bool {
	if t == nil {
		return false
	}
	for _, tr := range t.topicRules[listener] {
		if _, ok := tr.match(topic); ok {
			return true
		}
	}
	return false
}

func sortedStrings(s []string) []string {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}
