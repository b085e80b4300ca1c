package mapping

import (
	"fmt"
	"slices"
	"time"

	"github.com/mqttgw/mqttgw/config"
)

// Classes give every device, whatever its protocol, a keepalive, a will and a birth
// by its listener and id ([[class]]). The gateway asks Table.Class once per session
// start; that is rare next to datagrams, so rendering favours simplicity over Map's
// allocation budget.

// Class is a compiled [[class]]. It is immutable: Will and Birth may be called from
// any number of goroutines at once.
type Class struct {
	Name string
	// Keepalive replaces the listener's keepalive for the class's devices; 0: not
	// set, the listener's own applies.
	Keepalive time.Duration

	index       int       // position in the config, for key paths
	listeners   []string  // nil: every listener
	glob        string    // the match as written
	globToks    []globTok // compiled
	will, birth *classMessage
	mountpoints map[string]string // the table's: listener → mountpoint
}

// DeviceVars are the values of a class template besides {gateway} and {class},
// which are the same for every device of the class.
type DeviceVars struct {
	Device   string
	Listener string
	Addr     string // the device's ip:port
}

// Value slots of a class template.
const (
	classDevice = iota
	classListener
	classAddr
	classSlots
)

// classNames are the names a class template knows, in the order messages list them.
var classNames = []string{"device", "listener", "gateway", "class", "addr"}

// classMessage is a compiled will or birth. {gateway} and {class} are folded into
// the literals; the mountpoint is not, since it depends on the device's listener.
type classMessage struct {
	topic   []segment
	payload []segment
	qos     byte
	retain  bool
}

// Class returns the class of a device: the first class, in file order, whose
// listeners include listener (a class listing none applies to all) and whose glob
// matches device; nil when none does, or t is nil.
func (t *Table) Class(listener, device string) *Class {
	if t == nil {
		return nil
	}
	for _, c := range t.classes {
		if c.listeners != nil && !slices.Contains(c.listeners, listener) {
			continue
		}
		if matchGlob(c.globToks, device) {
			return c
		}
	}
	return nil
}

// Will renders the class's will for a device: ok is false when the class has none.
// The listener's mountpoint is prefixed to the topic. A value that cannot be a topic
// level (the rule of Map's topics: see the package doc) gives an error wrapping
// ErrUnsafeTopic; err is non-nil only when ok is true.
func (c *Class) Will(v DeviceVars) (m Message, ok bool, err error) {
	return c.render(c.will, "will", v)
}

// Birth renders the class's birth for a device, as Will does its will.
func (c *Class) Birth(v DeviceVars) (m Message, ok bool, err error) {
	return c.render(c.birth, "birth", v)
}

func (c *Class) render(cm *classMessage, what string, v DeviceVars) (Message, bool, error) {
	if cm == nil {
		return Message{}, false, nil
	}
	var text []byte
	vals := make([]value, classSlots)
	for slot, s := range [classSlots]string{classDevice: v.Device, classListener: v.Listener, classAddr: v.Addr} {
		t0 := len(text)
		text = append(text, s...)
		vals[slot] = value{kind: KindString, t0: t0, t1: len(text)}
	}
	// The mountpoint goes in as a literal, so a value right after it is not at the
	// start of the topic (and may start with '$').
	segs := cm.topic
	if mount := c.mountpoints[v.Listener]; mount != "" {
		segs = append([]segment{{lit: mount, slot: -1}}, segs...)
	}
	topic, bad, why := appendTopic(nil, segs, vals, text)
	if bad >= 0 {
		s := segs[bad]
		val := vals[s.slot]
		return Message{}, true, fmt.Errorf("mapping: class %q: %s: %w: {%s} = %s %s", c.Name, what, ErrUnsafeTopic, s.name, quote(text[val.t0:val.t1]), why)
	}
	if len(topic) > maxTopicLen {
		return Message{}, true, fmt.Errorf("mapping: class %q: %s: %w: topic is %d bytes, longer than MQTT's %d", c.Name, what, ErrUnsafeTopic, len(topic), maxTopicLen)
	}
	return Message{
		Topic:   string(topic),
		Payload: appendText([]byte{}, cm.payload, vals, text),
		QoS:     cm.qos,
		Retain:  cm.retain,
	}, true, nil
}

// class compiles class i; it returns nil if the class has errors.
func (c *compiler) class(i int, cc *config.Class, names map[string]int) *Class {
	c.bad = false
	key := fmt.Sprintf("class[%d]", i)
	switch first, dup := names[cc.Name]; {
	case cc.Name == "":
		c.add(key+".name", "name is empty")
	case dup:
		c.add(key+".name", "duplicate class name %q (also class[%d])", cc.Name, first)
	default:
		names[cc.Name] = i
	}
	out := &Class{index: i, Name: cc.Name, Keepalive: cc.Keepalive.D(), glob: cc.Match}
	for j, l := range cc.Listeners {
		if c.listeners[l] == nil {
			c.add(fmt.Sprintf("%s.listeners[%d]", key, j), "unknown listener %q (listeners: %s)", l, list(c.listenerNames))
		}
		if !slices.Contains(out.listeners, l) {
			out.listeners = append(out.listeners, l)
		}
	}
	// A hand-built config may leave match empty; config.Load defaults it to "*".
	if out.glob == "" {
		out.glob = "*"
	}
	toks, err := compileGlob(out.glob)
	if err != nil {
		c.add(key+".match", "bad glob %q: want * (any text), ? (one character), [a-z] or [^a-z] (a class), \\ escapes", out.glob)
	}
	out.globToks = toks
	lookup := func(name string) (binding, bool) {
		switch name {
		case "device":
			return binding{slot: classDevice}, true
		case "listener":
			return binding{slot: classListener}, true
		case "addr":
			return binding{slot: classAddr}, true
		case "gateway":
			return binding{slot: -1, constant: c.gateway}, true
		case "class":
			return binding{slot: -1, constant: cc.Name}, true
		}
		return binding{}, false
	}
	out.will = c.classMessage(key+".will", cc.Will, lookup)
	out.birth = c.classMessage(key+".birth", cc.Birth, lookup)
	if c.bad {
		return nil
	}
	return out
}

// classMessage compiles a will or birth; nil when the table is not given.
func (c *compiler) classMessage(key string, m *config.ClassMessage, lookup func(string) (binding, bool)) *classMessage {
	if m == nil {
		return nil
	}
	out := &classMessage{qos: byte(m.QoS), retain: m.Retain}
	if m.QoS > 2 {
		c.add(key+".qos", "qos %d is not 0, 1 or 2", m.QoS)
	}
	out.topic = c.topicTemplate(key+".topic", m.Topic, "missing: a will or birth needs a topic, such as \"devices/{device}/status\"", "", lookup, classNames)
	parts, err := parseTemplate(m.Payload)
	if err != nil {
		c.add(key+".payload", "payload: %v", err)
		return out
	}
	segs, unknown := bindTemplate("", parts, lookup)
	if len(unknown) > 0 {
		c.add(key+".payload", "unknown placeholder %s in payload (known: %s)", braces(unknown), list(classNames))
	}
	out.payload = segs
	return out
}

// warnUnreachableClasses warns about each class that an earlier one with match "*"
// always takes first.
func (c *compiler) warnUnreachableClasses(classes []*Class) {
	for j, later := range classes {
		for _, earlier := range classes[:j] {
			if earlier.glob == "*" && covers(earlier.listeners, later.listeners) {
				c.warn(fmt.Sprintf("class[%d]", later.index), "unreachable: class[%d] %q before it matches every device of its listeners", earlier.index, earlier.Name)
				break
			}
		}
	}
}

// covers reports whether the listeners a cover those of b (nil: every listener).
func covers(a, b []string) bool {
	if a == nil {
		return true
	}
	if b == nil {
		return false
	}
	for _, l := range b {
		if !slices.Contains(a, l) {
			return false
		}
	}
	return true
}
