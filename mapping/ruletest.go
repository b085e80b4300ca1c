package mapping

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/mqttgw/mqttgw/config"
)

// RunTests runs every rule's inline tests ([[rule.tests]]) through the table, in file
// order, then every downlink's. Each test datagram goes through all the rules of its
// rule's listener, as a real datagram would, so a test also fails when an earlier
// rule takes the datagram. A failing test is one Problem at key "rule[i].tests[j]"
// or "downlink[i].tests[j]" that says what was expected and what came out. Topics in
// expect, and a downlink test's message topic, are full topics, mountpoint included;
// payloads, acks and datagrams are compared byte for byte, and the set of topics
// must be exactly the expected one.
func (t *Table) RunTests() config.Problems {
	var ps config.Problems
	var r Result
	for _, ru := range t.rules {
		for k := range ru.tests {
			if msg := t.runTest(ru, &ru.tests[k], &r); msg != "" {
				ps = append(ps, config.Problemf(ru.tests[k].key, "%s", msg))
			}
		}
	}
	for _, d := range t.downlinks {
		for k := range d.tests {
			if msg := d.runTest(&d.tests[k]); msg != "" {
				ps = append(ps, config.Problemf(d.tests[k].key, "%s", msg))
			}
		}
	}
	return ps
}

// runTest returns what is wrong, or "" if the test passes.
func (d *Downlink) runTest(tc *downlinkTest) string {
	device, got, ok, err := d.Encode(tc.topic, tc.payload)
	switch {
	case !ok:
		return fmt.Sprintf("the message does not match: %s", d.ExplainTopic(tc.topic))
	case err != nil:
		return fmt.Sprintf("expected datagram %s, got error: %v", showBytes(tc.want, tc.wantText), err)
	}
	var diffs []string
	if tc.device != "" && device != tc.device {
		diffs = append(diffs, fmt.Sprintf("expected device %q, got %q", tc.device, device))
	}
	if !bytes.Equal(got, tc.want) {
		diffs = append(diffs, fmt.Sprintf("expected datagram %s, got %s", showBytes(tc.want, tc.wantText), showBytes(got, tc.wantText)))
	}
	return strings.Join(diffs, "; ")
}

// showBytes shows a datagram or ack as it was written in the test: text quoted, or
// hex.
func showBytes(b []byte, text bool) string {
	if text {
		return strconv.Quote(string(b))
	}
	if len(b) == 0 {
		return "(empty)"
	}
	return hex.EncodeToString(b)
}

// runTest returns what is wrong, or "" if the test passes.
func (t *Table) runTest(ru *rule, tc *ruleTest, r *Result) string {
	err := t.Map(Datagram{Listener: ru.listener, From: tc.from, Payload: tc.payload}, r)
	if tc.noMatch {
		// No rule, or another rule, takes it: either way not this one.
		if r.Rule == ru.name {
			if err != nil {
				return fmt.Sprintf("expected no match, but rule %q matched (and failed: %v)", ru.name, err)
			}
			return fmt.Sprintf("expected no match, but rule %q matched and published %s", ru.name, describe(r.Publishes))
		}
		return ""
	}
	switch {
	case errors.Is(err, ErrNoMatch):
		return fmt.Sprintf("expected rule %q to match, but no rule matched", ru.name)
	case r.Rule != ru.name:
		return fmt.Sprintf("expected rule %q to match, but %s matched first", ru.name, t.ruleRef(r.Rule))
	case err != nil:
		return fmt.Sprintf("expected %s, got error: %v", describeExpect(tc.expect), err)
	}

	var diffs []string
	seen := map[string]bool{}
	for _, m := range r.Publishes {
		want, ok := tc.expect[m.Topic]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("unexpected publish to %q with payload %q", m.Topic, m.Payload))
		case string(m.Payload) != want:
			diffs = append(diffs, fmt.Sprintf("topic %q: expected payload %q, got %q", m.Topic, want, m.Payload))
		}
		seen[m.Topic] = true
	}
	var missing []string
	for topic := range tc.expect {
		if !seen[topic] {
			missing = append(missing, topic)
		}
	}
	slices.Sort(missing)
	for _, topic := range missing {
		diffs = append(diffs, fmt.Sprintf("expected a publish to %q, got none (published: %s)", topic, describe(r.Publishes)))
	}
	if tc.ack != nil && !bytes.Equal(r.Ack, tc.ack) {
		diffs = append(diffs, fmt.Sprintf("expected ack %s, got %s", showBytes(tc.ack, tc.ackText), showBytes(r.Ack, tc.ackText)))
	}
	return strings.Join(diffs, "; ")
}

// ruleRef names a rule for a message: `rule "x" (rule[3])`.
func (t *Table) ruleRef(name string) string {
	for _, ru := range t.rules {
		if ru.name == name {
			return fmt.Sprintf("rule %q (rule[%d])", name, ru.index)
		}
	}
	return fmt.Sprintf("rule %q", name)
}

func describe(ms []Message) string {
	if len(ms) == 0 {
		return "nothing"
	}
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = fmt.Sprintf("%q = %q", m.Topic, m.Payload)
	}
	return strings.Join(parts, ", ")
}

func describeExpect(expect map[string]string) string {
	topics := make([]string, 0, len(expect))
	for topic := range expect {
		topics = append(topics, topic)
	}
	slices.Sort(topics)
	parts := make([]string, len(topics))
	for i, topic := range topics {
		parts[i] = fmt.Sprintf("%q = %q", topic, expect[topic])
	}
	return strings.Join(parts, ", ")
}
