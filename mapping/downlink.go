package mapping

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mqttgw/mqttgw/config"
)

// Downlinks carry MQTT messages down to plain-UDP devices ([[downlink]]): the
// gateway subscribes to each downlink's Filter and hands every message it gets to
// Encode, which checks the topic against the filter, takes the device from the
// {device} level and renders the datagram. Encode runs once per broker message and
// allocates freely (the datagram belongs to the caller).

// Downlink is a compiled [[downlink]]. It is immutable: Encode may be called from
// any number of goroutines at once.
type Downlink struct {
	Name     string
	Listener string // a listener of type "udp"
	// Filter is the broker-side MQTT filter to subscribe to: the listener's
	// mountpoint prefixed, each {capture} level replaced by '+'.
	Filter string
	// OnUplink queues the datagram until right after the device's next datagram;
	// otherwise it goes at once to the device's last address.
	OnUplink bool
	// TTL drops a queued datagram older than it; MaxQueued bounds the queue per
	// device. Both matter only with OnUplink.
	TTL       time.Duration
	MaxQueued int

	index   int    // position in the config, for key paths
	gateway string // for {gateway}
	mount   string
	pattern string // the filter as written, without mountpoint
	levels  []filterLevel
	ncap    int // captures, {device} among them
	device  int // capture number of {device}
	payload downPayload
	tmpl    []segment // slots: captures, then downTopic(ncap), then downPayload(ncap)
	fields  []packField
	tests   []downlinkTest
}

// levelKind is the kind of one level of a downlink's filter.
type levelKind uint8

const (
	levelLiteral levelKind = iota
	levelCapture           // {name}: any one level, captured
	levelPlus              // +: any one level
	levelHash              // #: the rest, zero or more levels; last
)

// filterLevel is one compiled level of a downlink's filter.
type filterLevel struct {
	kind    levelKind
	lit     string // levelLiteral
	capture int    // levelCapture: capture number
}

// downPayload is how a downlink renders its datagram.
type downPayload uint8

const (
	downRaw      downPayload = iota // the MQTT payload as it is
	downTemplate                    // a template of the captures, topic and payload
	downFields                      // numbers from a JSON payload, packed in order
)

// packField is one compiled config.DownlinkField.
type packField struct {
	pointer string // as written, for errors
	ptr     []ptrToken
	num     numType
	little  bool
}

// downlinkTest is one compiled config.DownlinkTest.
type downlinkTest struct {
	key      string // "downlink[i].tests[j]"
	topic    string
	payload  []byte
	want     []byte
	wantText bool   // want was written as text: report it as text
	device   string // "" = not checked
}

// downlinkBuiltins are the template names of every downlink besides its captures;
// a capture may not take one.
var downlinkBuiltins = []string{"gateway", "listener", "topic", "payload"}

// Downlinks returns the compiled downlinks in file order; nil for a nil Table.
func (t *Table) Downlinks() []*Downlink {
	if t == nil {
		return nil
	}
	return slices.Clone(t.downlinks)
}

// Downlink returns the downlink named name, or nil.
func (t *Table) Downlink(name string) *Downlink {
	if t == nil {
		return nil
	}
	for _, d := range t.downlinks {
		if d.Name == name {
			return d
		}
	}
	return nil
}

// Encode matches topic, as the broker has it (mountpoint included), against the
// downlink's filter and renders the datagram for payload. ok is false when the topic
// does not match; then nothing else is set. device is the {device} level. err wraps
// ErrDecode when the datagram cannot be made: an empty {device} level, or for
// "fields" a payload that is not a JSON object, a pointer that matches nothing, a
// value that is not a number or is out of range for its type. The datagram is a new
// slice, never payload itself.
func (d *Downlink) Encode(topic string, payload []byte) (device string, datagram []byte, ok bool, err error) {
	spans, m := d.match(topic)
	if m.kind != matched {
		return "", nil, false, nil
	}
	device = topic[spans[2*d.device]:spans[2*d.device+1]]
	if device == "" {
		return "", nil, true, d.decodeError("the {device} level is empty")
	}
	switch d.payload {
	case downRaw:
		datagram = append([]byte{}, payload...)
	case downTemplate:
		// One text holds every value: the topic (whose spans are the captures),
		// then the payload.
		text := make([]byte, 0, len(topic)+len(payload))
		text = append(append(text, topic...), payload...)
		vals := make([]value, d.ncap+2)
		for n := range d.ncap {
			vals[n] = value{t0: spans[2*n], t1: spans[2*n+1]}
		}
		vals[d.ncap] = value{t0: 0, t1: len(topic)}
		vals[d.ncap+1] = value{t0: len(topic), t1: len(text)}
		datagram = appendText([]byte{}, d.tmpl, vals, text)
	case downFields:
		if datagram, err = d.pack(payload); err != nil {
			return device, nil, true, err
		}
	}
	return device, datagram, true, nil
}

func (d *Downlink) decodeError(reason string) error {
	return fmt.Errorf("mapping: downlink %q: %w: %s", d.Name, ErrDecode, reason)
}

// pack renders a "fields" datagram: each field's number, in order, in its type's
// width and byte order.
func (d *Downlink) pack(payload []byte) ([]byte, error) {
	if !validJSON(payload, true) {
		return nil, d.decodeError("payload is not a JSON object: " + quote(payload))
	}
	size := 0
	for _, f := range d.fields {
		size += f.num.size()
	}
	out := make([]byte, 0, size)
	for n := range d.fields {
		f := &d.fields[n]
		s, e, ok := resolvePointer(payload, f.ptr)
		if !ok {
			return nil, d.decodeError(fmt.Sprintf("fields[%d]: JSON pointer %q matches nothing", n, f.pointer))
		}
		raw := payload[s:e]
		if raw[0] != '-' && !isDigit(raw[0]) {
			return nil, d.decodeError(fmt.Sprintf("fields[%d]: %q is %s, not a number", n, f.pointer, quote(raw)))
		}
		u, why := numberBits(string(raw), f.num)
		if why != "" {
			return nil, d.decodeError(fmt.Sprintf("fields[%d]: %q is %s", n, f.pointer, why))
		}
		var order binary.AppendByteOrder = binary.BigEndian
		if f.little {
			order = binary.LittleEndian
		}
		switch f.num.size() {
		case 1:
			out = append(out, byte(u))
		case 2:
			out = order.AppendUint16(out, uint16(u))
		case 4:
			out = order.AppendUint32(out, uint32(u))
		case 8:
			out = order.AppendUint64(out, u)
		}
	}
	return out, nil
}

// numberBits returns the bits of the JSON number s as num: two's complement for
// integers, IEEE 754 for floats. On failure it says why, starting with s. An integer
// type takes an integer written with a fraction or an exponent too (1.0, 1e3), as
// JSON encoders may write it, but not 1.5.
func numberBits(s string, num numType) (uint64, string) {
	bits := 8 * num.size()
	outOfRange := s + ", out of range for " + numTypeString(num)
	switch {
	case num.float():
		f, err := strconv.ParseFloat(s, bits)
		if err != nil {
			return 0, outOfRange
		}
		if num == numFloat32 {
			return uint64(math.Float32bits(float32(f))), ""
		}
		return math.Float64bits(f), ""
	case num.signed():
		i, err := strconv.ParseInt(s, 10, bits)
		if err == nil {
			return uint64(i), ""
		}
		if errors.Is(err, strconv.ErrRange) {
			return 0, outOfRange
		}
	default:
		u, err := strconv.ParseUint(s, 10, bits)
		if err == nil {
			return u, ""
		}
		if errors.Is(err, strconv.ErrRange) {
			return 0, outOfRange
		}
	}
	// Not written as a plain integer (a fraction, an exponent, or a sign ParseUint
	// refuses): take it if it is a whole number in range. The bounds are powers of
	// two, exact in float64.
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, outOfRange
	}
	if f != math.Trunc(f) {
		return 0, s + ", not an integer (type " + numTypeString(num) + ")"
	}
	lo, hi := 0.0, math.Ldexp(1, bits) // [lo, hi)
	if num.signed() {
		lo, hi = -math.Ldexp(1, bits-1), math.Ldexp(1, bits-1)
	}
	if f < lo || f >= hi {
		return 0, outOfRange
	}
	if num.signed() {
		return uint64(int64(f)), ""
	}
	return uint64(f), ""
}

// missKind says why a topic does not match a downlink's filter.
type missKind uint8

const (
	matched missKind = iota
	missNotTopic
	missMount
	missDollar
	missShort
	missLiteral
	missLong
)

// miss is why a topic does not match: the kind, and for missShort and missLiteral
// the filter level (0-based) and the topic's level there.
type miss struct {
	kind  missKind
	level int
	got   string
}

// match checks topic against the filter. On a match it returns the byte spans of
// the captures in topic, two per capture.
func (d *Downlink) match(topic string) ([]int, miss) {
	// A broker delivers topic names only; anything else matches nothing.
	if topic == "" || strings.ContainsAny(topic, "+#\x00") {
		return nil, miss{kind: missNotTopic}
	}
	if !strings.HasPrefix(topic, d.mount) {
		return nil, miss{kind: missMount}
	}
	// A filter starting with a wildcard does not match a topic starting with '$'
	// (MQTT 3.1.1 §4.7.2). Compile made a mountpoint end in '/' before such a
	// level, so with one the topic's first level is the mountpoint's.
	if d.mount == "" && topic[0] == '$' && d.levels[0].kind != levelLiteral {
		return nil, miss{kind: missDollar}
	}
	spans := make([]int, 2*d.ncap)
	i, end := len(d.mount), false // i: start of the next topic level; end: no more levels
	for n, lv := range d.levels {
		if lv.kind == levelHash {
			return spans, miss{} // # also matches the parent level: "a/#" matches "a"
		}
		if end {
			return nil, miss{kind: missShort, level: n}
		}
		j := strings.IndexByte(topic[i:], '/')
		next := i + j + 1
		if j < 0 {
			j, next, end = len(topic)-i, len(topic), true
		}
		level := topic[i : i+j]
		switch lv.kind {
		case levelLiteral:
			if level != lv.lit {
				return nil, miss{kind: missLiteral, level: n, got: level}
			}
		case levelCapture:
			spans[2*lv.capture], spans[2*lv.capture+1] = i, i+j
		}
		i = next
	}
	if !end {
		return nil, miss{kind: missLong}
	}
	return spans, miss{}
}

// ExplainTopic says why topic does not match the downlink's filter, or "" when it
// does. It is for `mqttgw rules test`; Encode and it share one matcher.
func (d *Downlink) ExplainTopic(topic string) string {
	_, m := d.match(topic)
	switch m.kind {
	case missNotTopic:
		return fmt.Sprintf("%q is not a topic name: empty, or with '+', '#' or NUL", topic)
	case missMount:
		return fmt.Sprintf("topic %q does not start with the mountpoint %q of listener %q", topic, d.mount, d.Listener)
	case missDollar:
		return fmt.Sprintf("topic %q starts with '$', which a filter starting with a wildcard does not match (MQTT 3.1.1 §4.7.2)", topic)
	case missShort:
		return fmt.Sprintf("topic %q ends before level %d of filter %q", topic, m.level+1, d.pattern)
	case missLiteral:
		return fmt.Sprintf("topic %q has %q where level %d of filter %q is %q", topic, m.got, m.level+1, d.pattern, d.levels[m.level].lit)
	case missLong:
		return fmt.Sprintf("topic %q has more levels than filter %q", topic, d.pattern)
	}
	return ""
}

// downlink compiles downlink i; it returns nil if the downlink has errors.
func (c *compiler) downlink(i int, cd *config.Downlink, names map[string]int) *Downlink {
	c.bad = false
	key := fmt.Sprintf("downlink[%d]", i)
	d := &Downlink{index: i, Name: cd.Name, Listener: cd.Listener, TTL: cd.TTL.D(), MaxQueued: cd.MaxQueued, gateway: c.gateway, device: -1}
	switch first, dup := names[cd.Name]; {
	case cd.Name == "":
		c.add(key+".name", "name is empty")
	case dup:
		c.add(key+".name", "duplicate downlink name %q (also downlink[%d])", cd.Name, first)
	default:
		names[cd.Name] = i
	}
	var udp []string
	for _, name := range c.listenerNames {
		if c.listeners[name].Type == config.ListenerUDP {
			udp = append(udp, name)
		}
	}
	switch l := c.listeners[cd.Listener]; {
	case cd.Listener == "":
		c.add(key+".listener", "missing: name the udp listener whose socket sends the datagrams (udp listeners: %s)", list(udp))
	case l == nil:
		c.add(key+".listener", "unknown listener %q (listeners: %s)", cd.Listener, list(c.listenerNames))
	case l.Type != config.ListenerUDP:
		c.add(key+".listener", "listener %q is of type %q: downlinks go to plain-UDP devices, on a listener of type \"udp\" (mqttsn and coap devices subscribe or observe themselves; udp listeners: %s)", cd.Listener, l.Type, list(udp))
	default:
		d.mount = l.Mountpoint
	}
	captures := c.filter(key+".filter", cd.Filter, d)

	switch cd.Deliver {
	case "", "now":
	case "on_uplink":
		d.OnUplink = true
	default:
		c.add(key+".deliver", "unknown deliver %q (want now or on_uplink)", cd.Deliver)
	}

	mode := cd.Payload
	if mode == "" {
		switch {
		case cd.Template != "" && len(cd.Fields) > 0:
			c.add(key, "template and fields are both set: set payload = \"template\" or \"fields\" and drop the other")
		case cd.Template != "":
			mode = "template"
		case len(cd.Fields) > 0:
			mode = "fields"
		default:
			mode = "raw"
		}
	}
	switch mode {
	case "", "raw":
	case "template":
		d.payload = downTemplate
		if cd.Template == "" {
			c.add(key+".template", "missing: payload is \"template\", so give the template")
		}
	case "fields":
		d.payload = downFields
		if len(cd.Fields) == 0 {
			c.add(key+".fields", "missing: payload is \"fields\", so list the numbers to pack, such as [ { value = \"/open\", type = \"uint8\" } ]")
		}
	default:
		c.add(key+".payload", "unknown payload %q (want raw, template or fields)", cd.Payload)
	}
	if cd.Payload == "raw" || cd.Payload == "fields" {
		if cd.Template != "" {
			c.add(key+".template", "template is set but payload is %q; set payload = \"template\" or drop template", cd.Payload)
		}
	}
	if cd.Payload == "raw" || cd.Payload == "template" {
		if len(cd.Fields) > 0 {
			c.add(key+".fields", "fields are set but payload is %q; set payload = \"fields\" or drop fields", cd.Payload)
		}
	}
	if d.payload == downTemplate && cd.Template != "" {
		d.tmpl = c.downlinkTemplate(key+".template", cd.Template, cd.Listener, captures)
	}
	if d.payload == downFields {
		for j := range cd.Fields {
			d.fields = append(d.fields, c.packField(fmt.Sprintf("%s.fields[%d]", key, j), &cd.Fields[j]))
		}
	}
	for j := range cd.Tests {
		if tc, ok := c.downlinkTest(fmt.Sprintf("%s.tests[%d]", key, j), &cd.Tests[j]); ok {
			d.tests = append(d.tests, tc)
		}
	}
	if c.bad {
		return nil
	}
	return d
}

// filter compiles a downlink's filter into d and returns its capture names, in
// order.
func (c *compiler) filter(key, f string, d *Downlink) []string {
	switch {
	case f == "":
		c.add(key, "missing: an MQTT filter with a {device} level, such as \"cmd/{device}/valve\"")
		return nil
	case strings.ContainsRune(f, 0):
		c.add(key, "filter %q contains NUL", f)
		return nil
	case !utf8.ValidString(f):
		c.add(key, "filter %q is not UTF-8", f)
		return nil
	}
	d.pattern = f
	var captures []string
	var broker strings.Builder
	broker.WriteString(d.mount)
	levels := strings.Split(f, "/")
	for n, lv := range levels {
		if n > 0 {
			broker.WriteByte('/')
		}
		switch {
		case lv == "#":
			if n != len(levels)-1 {
				c.add(key, "filter %q: '#' must be the last level (MQTT 3.1.1 §4.7.1.2)", f)
			}
			d.levels = append(d.levels, filterLevel{kind: levelHash})
			broker.WriteByte('#')
		case lv == "+":
			d.levels = append(d.levels, filterLevel{kind: levelPlus})
			broker.WriteByte('+')
		case len(lv) >= 2 && lv[0] == '{' && lv[len(lv)-1] == '}' && !strings.ContainsAny(lv[1:len(lv)-1], "{}"):
			name := lv[1 : len(lv)-1]
			switch {
			case !isIdent(name):
				c.add(key, "filter %q: bad capture {%s}: want {name} with name a letter or '_' followed by letters, digits or '_'", f, name)
			case slices.Contains(downlinkBuiltins, name):
				c.add(key, "filter %q: {%s} is a built-in name (%s); name the capture otherwise", f, name, list(downlinkBuiltins))
			case slices.Contains(captures, name):
				c.add(key, "filter %q: capture {%s} appears twice", f, name)
			}
			if name == "device" && d.device < 0 {
				d.device = len(captures)
			}
			d.levels = append(d.levels, filterLevel{kind: levelCapture, capture: len(captures)})
			captures = append(captures, name)
			broker.WriteByte('+')
		case strings.ContainsAny(lv, "+#{}"):
			c.add(key, "filter %q: level %q mixes text with a wildcard or capture: a level is literal text, +, # (last) or {name}, whole", f, lv)
		default:
			d.levels = append(d.levels, filterLevel{kind: levelLiteral, lit: lv})
			broker.WriteString(lv)
		}
	}
	if d.device < 0 {
		c.add(key, "filter %q has no {device} level: it names the device the datagram goes to", f)
	}
	// A mountpoint is prefixed without a separator; before a wildcard level it
	// would make a level such as "site1+", which is no filter.
	if d.mount != "" && !strings.HasSuffix(d.mount, "/") && len(d.levels) > 0 && d.levels[0].kind != levelLiteral {
		c.add(key, "filter %q starts with a wildcard or capture, but the mountpoint %q of listener %q does not end in '/'", f, d.mount, d.Listener)
	}
	d.Filter = broker.String()
	if len(d.Filter) > maxTopicLen {
		c.add(key, "filter is %d bytes with the mountpoint, longer than MQTT's %d", len(d.Filter), maxTopicLen)
	}
	d.ncap = len(captures)
	return captures
}

// downlinkTemplate compiles a "template" payload: the filter's captures, {topic},
// {payload}, and the constants {listener} and {gateway}.
func (c *compiler) downlinkTemplate(key, text, listener string, captures []string) []segment {
	parts, err := parseTemplate(text)
	if err != nil {
		c.add(key, "template: %v", err)
		return nil
	}
	lookup := func(name string) (binding, bool) {
		switch name {
		case "listener":
			return binding{slot: -1, constant: listener}, true
		case "gateway":
			return binding{slot: -1, constant: c.gateway}, true
		case "topic":
			return binding{slot: len(captures)}, true
		case "payload":
			return binding{slot: len(captures) + 1}, true
		}
		if n := slices.Index(captures, name); n >= 0 {
			return binding{slot: n}, true
		}
		return binding{}, false
	}
	segs, unknown := bindTemplate("", parts, lookup)
	if len(unknown) > 0 {
		known := append([]string{"device"}, downlinkBuiltins...)
		for _, name := range captures {
			if !slices.Contains(known, name) {
				known = append(known, name)
			}
		}
		c.add(key, "unknown placeholder %s in template (known: %s)", braces(unknown), list(known))
	}
	return segs
}

func (c *compiler) packField(key string, f *config.DownlinkField) packField {
	out := packField{pointer: f.Value}
	if f.Value == "" {
		c.add(key+".value", "missing: a JSON pointer into the MQTT payload, such as \"/open\"")
	} else {
		toks, err := parsePointer(f.Value)
		if err != nil {
			c.add(key+".value", "%v", err)
		}
		out.ptr = toks
	}
	out.num = parseNumType(f.Type)
	switch {
	case f.Type == "":
		c.add(key+".type", "missing: want one of %s", numTypeNames)
	case out.num == numNone:
		c.add(key+".type", "unknown type %q (want %s)", f.Type, numTypeNames)
	}
	switch f.Endian {
	case "", "big":
	case "little":
		out.little = true
	default:
		c.add(key+".endian", "unknown endian %q (want big or little)", f.Endian)
	}
	return out
}

func (c *compiler) downlinkTest(key string, t *config.DownlinkTest) (downlinkTest, bool) {
	bad := false
	fail := func(k, format string, args ...any) {
		c.add(k, format, args...)
		bad = true
	}
	tc := downlinkTest{key: key, topic: t.Message.Topic, payload: []byte(t.Message.Payload), device: t.Device}
	if t.Message.Topic == "" {
		fail(key+".message.topic", "missing: the topic of the test message, as the broker has it (mountpoint included)")
	}
	tc.want, tc.wantText = testBytes(key, t.Hex, t.Text, "the datagram the message must encode to", fail)
	return tc, !bad
}
