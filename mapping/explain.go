package mapping

import (
	"bytes"
	"fmt"
)

// Explain says, for each rule of d's listener in order, why its match does not
// accept d.Payload ("" for the rule that does; the list stops there). It is for
// `mqttgw rules test` and debugging, not the hot path: it allocates freely.
func (t *Table) Explain(d Datagram) []RuleVerdict {
	if t == nil {
		return nil
	}
	var out []RuleVerdict
	js := jsonUnchecked
	for _, ru := range t.byListener[d.Listener] {
		reason := ru.rejects(d.Payload, &js)
		out = append(out, RuleVerdict{Rule: ru.name, Reason: reason})
		if reason == "" {
			break
		}
	}
	return out
}

// RuleVerdict is one rule's answer to a datagram: Reason is empty when it matches.
type RuleVerdict struct {
	Rule   string
	Reason string
}

// rejects mirrors accepts, naming the first condition that fails.
func (ru *rule) rejects(p []byte, js *jsonState) string {
	m := &ru.match
	switch {
	case len(p) < m.minLen:
		return fmt.Sprintf("%d bytes, shorter than min_len %d", len(p), m.minLen)
	case m.maxLen > 0 && len(p) > m.maxLen:
		return fmt.Sprintf("%d bytes, longer than max_len %d", len(p), m.maxLen)
	case !bytes.HasPrefix(p, m.hexPrefix):
		return fmt.Sprintf("does not start with hex_prefix %x", m.hexPrefix)
	case len(m.textPrefix) > 0 && !bytes.HasPrefix(p, []byte(m.textPrefix)):
		return fmt.Sprintf("does not start with text_prefix %q", m.textPrefix)
	case m.json && !js.check(p, true):
		return "not a JSON object"
	case m.re != nil && !m.re.Match(p):
		return fmt.Sprintf("regex %s does not match", m.re)
	}
	return ""
}
