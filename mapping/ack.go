package mapping

import (
	"time"

	"github.com/mqttgw/mqttgw/config"
)

// Acks answer a rule's datagram ([rule.ack]) once the broker has its publishes, so a
// battery sensor that retries until answered gets at-least-once delivery. Map
// renders the ack and the dedup key with the rule's values, into the same two blocks
// as the topics and payloads: a rule with an ack costs no extra allocation, and a
// rule without one nothing at all.

// ack is one compiled config.Ack.
type ack struct {
	hex  []byte    // the fixed ack; nil when tmpl is used
	tmpl []segment // the ack template
	// dedup renders the dedup key, the rule's name and a NUL folded in first so that
	// the keys of two rules never meet; nil without dedup.
	dedup  []segment
	window time.Duration
}

// ack compiles a rule's [rule.ack]. lookup and known are the rule's template names.
func (c *compiler) ack(key, rule string, a *config.Ack, lookup func(string) (binding, bool), known []string) *ack {
	out := &ack{window: a.Window.D()}
	switch {
	case a.Template != "" && a.Hex != "":
		c.add(key, "set one of template and hex, not both")
	case a.Hex != "":
		b, err := decodeHex(a.Hex)
		switch {
		case err != nil:
			c.add(key+".hex", "%v", err)
		case len(b) == 0:
			c.add(key+".hex", "hex has no bytes: an ack is at least one byte")
		}
		out.hex = b
	case a.Template != "":
		out.tmpl = c.ackTemplate(key+".template", "", a.Template, lookup, known)
	default:
		c.add(key, "set template or hex: the datagram that answers the device")
	}
	if a.Dedup != "" {
		out.dedup = c.ackTemplate(key+".dedup", rule+"\x00", a.Dedup, lookup, known)
	}
	return out
}

func (c *compiler) ackTemplate(key, prefix, text string, lookup func(string) (binding, bool), known []string) []segment {
	parts, err := parseTemplate(text)
	if err != nil {
		c.add(key, "template: %v", err)
		return nil
	}
	segs, unknown := bindTemplate(prefix, parts, lookup)
	if len(unknown) > 0 && !c.reBroken {
		c.add(key, "unknown placeholder %s in template (known: %s)", braces(unknown), list(known))
	}
	return segs
}
