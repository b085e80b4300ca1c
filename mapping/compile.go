package mapping

import (
	"encoding/hex"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/mqttgw/mqttgw/config"
)

// Table is a compiled rules table, with the classes and downlinks. It is immutable:
// its methods may be called from any number of goroutines at once (Map each with its
// own Result).
type Table struct {
	gateway     string
	rules       []*rule                 // every rule, in file order
	byListener  map[string][]*rule      // a listener's rules, in file order
	topicRules  map[string][]*topicRule // a protocol listener's topic rules, in file order
	mountpoints map[string]string       // listener → mountpoint
	classes     []*Class                // in file order
	downlinks   []*Downlink             // in file order
}

// rule is one compiled config.Rule.
type rule struct {
	index    int // position in the config, for key paths
	name     string
	listener string

	match        matcher
	needJSON     bool // an extractor reads the payload as JSON
	needSubmatch bool // an extractor or template reads a regex group

	device     extractor
	fields     []field     // sorted by name; field n is value slot n+1
	groupSlots []groupSlot // groups used by templates; slot 1+len(fields)+k
	jsonPlan   []jsonEntry // the "json" payload: device and fields, keys sorted
	pubs       []publish
	ack        *ack // nil: the rule does not acknowledge
	tests      []ruleTest
}

// Value slots: 0 is the device, then the fields, then the regex groups that templates
// name directly.
const deviceSlot = 0

func (ru *rule) nslots() int { return 1 + len(ru.fields) + len(ru.groupSlots) }

// matcher holds a rule's match conditions; unset ones are zero.
type matcher struct {
	hexPrefix  []byte
	textPrefix string
	re         *regexp.Regexp
	minLen     int
	maxLen     int // 0 = no limit
	json       bool
}

func (m *matcher) empty() bool {
	return len(m.hexPrefix) == 0 && m.textPrefix == "" && m.re == nil && m.minLen == 0 && m.maxLen == 0 && !m.json
}

// srcKind says where an extractor takes its value from.
type srcKind uint8

const (
	srcIP     srcKind = iota // the sender's IP (the default device)
	srcAddr                  // the sender's ip:port
	srcJSON                  // an RFC 6901 pointer into the payload
	srcGroup                 // a named group of match.regex
	srcBytes                 // offset and length, rendered as hex or ascii
	srcNumber                // a binary number at offset
)

// numType is a binary number type of a field.
type numType uint8

const (
	numNone numType = iota
	numInt8
	numInt16
	numInt32
	numInt64
	numUint8
	numUint16
	numUint32
	numUint64
	numFloat32
	numFloat64
)

const numTypeNames = "int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, float64"

func parseNumType(s string) numType {
	switch s {
	case "int8":
		return numInt8
	case "int16":
		return numInt16
	case "int32":
		return numInt32
	case "int64":
		return numInt64
	case "uint8":
		return numUint8
	case "uint16":
		return numUint16
	case "uint32":
		return numUint32
	case "uint64":
		return numUint64
	case "float32":
		return numFloat32
	case "float64":
		return numFloat64
	}
	return numNone
}

// size is the number's width in bytes.
func (n numType) size() int {
	switch n {
	case numInt8, numUint8:
		return 1
	case numInt16, numUint16:
		return 2
	case numInt32, numUint32, numFloat32:
		return 4
	case numInt64, numUint64, numFloat64:
		return 8
	}
	return 0
}

func (n numType) signed() bool { return n >= numInt8 && n <= numInt64 }
func (n numType) float() bool  { return n == numFloat32 || n == numFloat64 }

// extractor is a compiled config.Extract or config.Field.
type extractor struct {
	src    srcKind
	ptr    []ptrToken // srcJSON
	group  int        // srcGroup: submatch number
	gname  string     // srcGroup: its name, for errors
	off, n int        // srcBytes, srcNumber
	ascii  bool       // srcBytes: render as text rather than hex
	num    numType    // srcNumber; srcGroup: parse the text as this number (numNone: keep text)
	little bool       // srcNumber: little endian
	affine bool       // value*scale + add changes the value
	scale  float64
	add    float64
	// decimals is k > 0 when scale is exactly 10^-k and add is 0: an integer is then
	// rendered exactly, with k decimals, without going through float64.
	decimals int
}

// field is one compiled config.Field.
type field struct {
	name string
	ex   extractor
}

// groupSlot is a regex group named by a template (and not shadowed by a field).
type groupSlot struct {
	name string
	sub  int // submatch number
}

// jsonEntry is one member of a "json" payload.
type jsonEntry struct {
	key  string // `"name":`
	slot int
}

// payloadKind is how a publish's payload is made.
type payloadKind uint8

const (
	payloadJSON payloadKind = iota
	payloadRaw
	payloadTemplate
)

// publish is one compiled config.Publish.
type publish struct {
	topic   []segment // mountpoint included
	payload payloadKind
	tmpl    []segment
	qos     byte
	retain  bool
}

// ruleTest is one compiled config.RuleTest.
type ruleTest struct {
	key     string // "rule[i].tests[j]"
	payload []byte
	from    netip.AddrPort
	expect  map[string]string
	noMatch bool
	ack     []byte // the expected ack; nil: not checked
	ackText bool   // ack was written as text: report it as text
}

// defaultTestFrom is the sender of an inline test datagram without "from".
var defaultTestFrom = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 40000)

// reserved names are placeholders every rule has; fields may not take them.
var reserved = []string{"device", "gateway", "listener"}

// CompileConfig checks and compiles the rules, classes and downlinks of a config. It
// reports every problem it finds, each with the key path of the offending setting
// ("rule[2].match.regex", "class[0].will.topic", "downlink[1].listener"), for
// config.(*Config).Locate to turn into a line. Warnings (an unreachable rule or
// class, a topic starting with '$') do not stop compilation; any other problem does,
// and the Table is then nil.
//
// Values are taken as config.Load validated and defaulted them: listener names,
// mountpoints free of '+', '#' and NUL, durations, downlink ttl and max_queued are not
// checked again here, so that a mistake is reported once.
func CompileConfig(cfg *config.Config) (*Table, config.Problems) {
	return compile(cfg.Gateway.ID, cfg.Listeners, cfg.Rules, cfg.Classes, cfg.Downlinks)
}

// Compile is CompileConfig for rules alone: the table has no classes and no
// downlinks. Tests and tools that build rules by hand use it.
func Compile(gatewayID string, listeners []config.Listener, rules []config.Rule) (*Table, config.Problems) {
	return compile(gatewayID, listeners, rules, nil, nil)
}

func compile(gatewayID string, listeners []config.Listener, rules []config.Rule, classes []config.Class, downlinks []config.Downlink) (*Table, config.Problems) {
	c := compiler{gateway: gatewayID, listeners: map[string]*config.Listener{}}
	for i := range listeners {
		l := &listeners[i]
		if _, dup := c.listeners[l.Name]; !dup {
			c.listeners[l.Name] = l
			c.listenerNames = append(c.listenerNames, l.Name)
		}
	}
	t := &Table{gateway: gatewayID, byListener: map[string][]*rule{}, topicRules: map[string][]*topicRule{}, mountpoints: map[string]string{}}
	for _, l := range listeners {
		t.mountpoints[l.Name] = l.Mountpoint
	}
	c.ruleNames = map[string]int{}
	for i := range rules {
		if l := c.listeners[rules[i].Listener]; l != nil && protocolListener(l.Type) {
			if tr := c.topicRule(i, &rules[i]); tr != nil {
				t.topicRules[l.Name] = append(t.topicRules[l.Name], tr)
			}
			continue
		}
		if rules[i].Match.Topic != "" {
			c.add(fmt.Sprintf("rule[%d].match.topic", i), "topic patterns are for rules of mqttsn and coap listeners; a udp listener's rules match datagrams")
		}
		ru := c.rule(i, &rules[i])
		if ru == nil {
			continue
		}
		t.rules = append(t.rules, ru)
		t.byListener[ru.listener] = append(t.byListener[ru.listener], ru)
	}
	for _, l := range c.listenerNames {
		rs := t.byListener[l]
		for k, ru := range rs {
			if ru.match.empty() {
				for _, later := range rs[k+1:] {
					c.ps = append(c.ps, config.Problem{
						Key:     fmt.Sprintf("rule[%d]", later.index),
						Msg:     fmt.Sprintf("unreachable: rule[%d] %q before it has an empty match and takes every datagram of listener %q", ru.index, ru.name, l),
						Warning: true,
					})
				}
				break
			}
		}
	}
	c.reBroken = false // a rule's state: classes have no regex
	classNames := map[string]int{}
	for i := range classes {
		if cl := c.class(i, &classes[i], classNames); cl != nil {
			cl.mountpoints = t.mountpoints
			t.classes = append(t.classes, cl)
		}
	}
	c.warnUnreachableClasses(t.classes)
	downlinkNames := map[string]int{}
	for i := range downlinks {
		if d := c.downlink(i, &downlinks[i], downlinkNames); d != nil {
			t.downlinks = append(t.downlinks, d)
		}
	}
	if len(c.ps.Errors()) > 0 {
		return nil, c.ps
	}
	return t, c.ps
}

// compiler collects problems while compiling.
type compiler struct {
	gateway       string
	listeners     map[string]*config.Listener
	listenerNames []string
	ps            config.Problems
	bad           bool // the current rule has an error
	reBroken      bool // the current rule's regex did not compile: its groups are unknown
	ruleNames     map[string]int
}

func (c *compiler) add(key, format string, args ...any) {
	c.ps = append(c.ps, config.Problemf(key, format, args...))
	c.bad = true
}

func (c *compiler) warn(key, format string, args ...any) {
	p := config.Problemf(key, format, args...)
	p.Warning = true
	c.ps = append(c.ps, p)
}

// ruleName checks that a rule's name is set and unique across all rules.
func (c *compiler) ruleName(key, name string) {
	if name == "" {
		c.add(key+".name", "name is empty")
	} else if first, dup := c.ruleNames[name]; dup {
		c.add(key+".name", "duplicate rule name %q (also rule[%d])", name, first)
	} else {
		c.ruleNames[name] = len(c.ruleNames)
	}
}

// rule compiles rule i; it returns nil if the rule has errors.
func (c *compiler) rule(i int, cr *config.Rule) *rule {
	c.bad, c.reBroken = false, false
	key := fmt.Sprintf("rule[%d]", i)
	ru := &rule{index: i, name: cr.Name, listener: cr.Listener}
	c.ruleName(key, cr.Name)
	l := c.listeners[cr.Listener]
	switch {
	case cr.Listener == "":
		c.add(key+".listener", "missing: name the listener this rule maps (listeners: %s)", list(c.listenerNames))
	case l == nil:
		c.add(key+".listener", "unknown listener %q (listeners: %s)", cr.Listener, list(c.listenerNames))
	}
	maxLen := cr.Match.MaxLen
	if l != nil && l.MaxPacket > 0 && (maxLen == 0 || l.MaxPacket < maxLen) {
		maxLen = l.MaxPacket
	}

	ru.match = c.matcher(key+".match", &cr.Match)
	var groups map[string]int
	if ru.match.re != nil {
		groups = map[string]int{}
		for n, name := range ru.match.re.SubexpNames() {
			if name != "" {
				if _, dup := groups[name]; !dup {
					groups[name] = n
				}
			}
		}
	}

	ru.device = c.device(key+".device", &cr.Device, groups, maxLen)

	names := make([]string, 0, len(cr.Fields))
	for name := range cr.Fields {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fk := key + ".fields." + name
		switch {
		case !isIdent(name):
			c.add(fk, "field name %q is not an identifier (letters, digits, '_', not starting with a digit)", name)
		case slices.Contains(reserved, name):
			c.add(fk, "field name %q is reserved (reserved: %s)", name, list(reserved))
		}
		f := cr.Fields[name]
		ru.fields = append(ru.fields, field{name: name, ex: c.field(fk, &f, groups, maxLen)})
	}
	for _, ex := range ru.extractors() {
		switch ex.src {
		case srcJSON:
			ru.needJSON = true
		case srcGroup:
			ru.needSubmatch = true
		}
	}

	// Placeholders: built-ins, then fields, then groups.
	known := append([]string(nil), reserved...)
	known = append(known, names...)
	var groupNames []string
	for name := range groups {
		if !slices.Contains(known, name) {
			groupNames = append(groupNames, name)
		}
	}
	slices.Sort(groupNames)
	known = append(known, groupNames...)
	lookup := func(name string) (binding, bool) {
		switch name {
		case "device":
			return binding{slot: deviceSlot}, true
		case "gateway":
			return binding{slot: -1, constant: c.gateway}, true
		case "listener":
			return binding{slot: -1, constant: cr.Listener}, true
		}
		if n, ok := slices.BinarySearch(names, name); ok {
			return binding{slot: 1 + n}, true
		}
		if sub, ok := groups[name]; ok {
			ru.needSubmatch = true
			for k, g := range ru.groupSlots {
				if g.name == name {
					return binding{slot: 1 + len(names) + k}, true
				}
			}
			ru.groupSlots = append(ru.groupSlots, groupSlot{name: name, sub: sub})
			return binding{slot: 1 + len(names) + len(ru.groupSlots) - 1}, true
		}
		return binding{}, false
	}

	mount := ""
	if l != nil {
		mount = l.Mountpoint
	}
	if len(cr.Publish) == 0 {
		c.add(key+".publish", "no publish: a rule needs at least one [[rule.publish]]")
	}
	for j := range cr.Publish {
		ru.pubs = append(ru.pubs, c.publish(fmt.Sprintf("%s.publish[%d]", key, j), &cr.Publish[j], mount, lookup, known))
	}
	if cr.Ack != nil {
		ru.ack = c.ack(key+".ack", cr.Name, cr.Ack, lookup, known)
	}

	ru.jsonPlan = append(ru.jsonPlan, jsonEntry{key: `"device":`, slot: deviceSlot})
	for n, name := range names {
		ru.jsonPlan = append(ru.jsonPlan, jsonEntry{key: `"` + name + `":`, slot: 1 + n})
	}
	slices.SortFunc(ru.jsonPlan, func(a, b jsonEntry) int { return strings.Compare(a.key, b.key) })

	for j := range cr.Tests {
		if tc, ok := c.test(fmt.Sprintf("%s.tests[%d]", key, j), &cr.Tests[j], cr.Ack != nil); ok {
			ru.tests = append(ru.tests, tc)
		}
	}
	if c.bad {
		return nil
	}
	return ru
}

// extractors returns the device's and the fields' extractors.
func (ru *rule) extractors() []*extractor {
	exs := []*extractor{&ru.device}
	for n := range ru.fields {
		exs = append(exs, &ru.fields[n].ex)
	}
	return exs
}

func (c *compiler) matcher(key string, m *config.Match) matcher {
	var out matcher
	if m.HexPrefix != "" {
		b, err := decodeHex(m.HexPrefix)
		if err != nil {
			c.add(key+".hex_prefix", "%v", err)
		}
		out.hexPrefix = b
	}
	out.textPrefix = m.TextPrefix
	if m.Regex != "" {
		re, err := regexp.Compile(m.Regex)
		if err != nil {
			c.add(key+".regex", "%v", err)
			c.reBroken = true
		}
		out.re = re
	}
	if m.MinLen < 0 {
		c.add(key+".min_len", "min_len %d is negative", m.MinLen)
	}
	if m.MaxLen < 0 {
		c.add(key+".max_len", "max_len %d is negative", m.MaxLen)
	}
	if m.MaxLen > 0 && m.MinLen > m.MaxLen {
		c.add(key+".min_len", "min_len %d is greater than max_len %d", m.MinLen, m.MaxLen)
	}
	if m.MaxLen > 0 {
		if n := len(out.hexPrefix); n > m.MaxLen {
			c.add(key+".hex_prefix", "hex_prefix is %d bytes, longer than max_len %d", n, m.MaxLen)
		}
		if n := len(out.textPrefix); n > m.MaxLen {
			c.add(key+".text_prefix", "text_prefix is %d bytes, longer than max_len %d", n, m.MaxLen)
		}
	}
	out.minLen, out.maxLen, out.json = max(m.MinLen, 0), max(m.MaxLen, 0), m.JSON
	return out
}

// decodeHex decodes hex digits; white space between bytes is allowed for readability.
func decodeHex(s string) ([]byte, error) {
	clean := strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\n' || r == '\r' {
			return -1
		}
		return r
	}, s)
	b, err := hex.DecodeString(clean)
	if err != nil {
		return nil, fmt.Errorf("invalid hex %q: %v", s, strings.TrimPrefix(err.Error(), "encoding/hex: "))
	}
	return b, nil
}

// sources lists the sources set, by TOML key.
func sources(pairs ...any) []string {
	var set []string
	for k := 0; k < len(pairs); k += 2 {
		if pairs[k+1].(bool) {
			set = append(set, pairs[k].(string))
		}
	}
	return set
}

func (c *compiler) device(key string, e *config.Extract, groups map[string]int, maxLen int) extractor {
	set := sources("json", e.JSON != "", "group", e.Group != "", "offset", e.Offset != nil, "source", e.Source != "")
	if len(set) > 1 {
		c.add(key, "more than one source set (%s): set exactly one of json, group, offset, source", strings.Join(set, ", "))
		return extractor{}
	}
	if e.Offset == nil {
		if e.Length != 0 {
			c.add(key+".length", "length needs offset")
		}
		if e.As != "" {
			c.add(key+".as", "as needs offset")
		}
	}
	var ex extractor
	switch {
	case e.JSON != "":
		ex = c.pointer(key+".json", e.JSON)
	case e.Group != "":
		ex = c.group(key+".group", e.Group, groups)
	case e.Offset != nil:
		ex = extractor{src: srcBytes, off: *e.Offset, n: e.Length}
		c.slice(key, ex.off, ex.n, maxLen)
		switch e.As {
		case "", "hex":
		case "ascii":
			ex.ascii = true
		default:
			c.add(key+".as", "unknown as %q (want hex or ascii)", e.As)
		}
	case e.Source == "addr":
		ex.src = srcAddr
	case e.Source == "ip" || e.Source == "":
		ex.src = srcIP
	default:
		c.add(key+".source", "unknown source %q (want addr or ip)", e.Source)
	}
	return ex
}

// slice checks a byte range of a device or field.
func (c *compiler) slice(key string, off, n, maxLen int) {
	switch {
	case off < 0:
		c.add(key+".offset", "offset %d is negative", off)
	case n <= 0:
		c.add(key+".length", "length must be at least 1, not %d", n)
	case maxLen > 0 && off+n > maxLen:
		c.add(key+".offset", "bytes %d..%d lie beyond the longest datagram this rule accepts (%d bytes)", off, off+n-1, maxLen)
	}
}

func (c *compiler) pointer(key, p string) extractor {
	toks, err := parsePointer(p)
	if err != nil {
		c.add(key, "%v", err)
	}
	return extractor{src: srcJSON, ptr: toks}
}

func (c *compiler) group(key, name string, groups map[string]int) extractor {
	if c.reBroken {
		return extractor{src: srcGroup} // already reported at match.regex
	}
	if groups == nil {
		c.add(key, "group %q needs match.regex", name)
		return extractor{src: srcGroup}
	}
	n, ok := groups[name]
	if !ok {
		known := make([]string, 0, len(groups))
		for g := range groups {
			known = append(known, g)
		}
		slices.Sort(known)
		c.add(key, "unknown group %q in match.regex (groups: %s)", name, list(known))
	}
	return extractor{src: srcGroup, group: n, gname: name}
}

func (c *compiler) field(key string, f *config.Field, groups map[string]int, maxLen int) extractor {
	set := sources("json", f.JSON != "", "group", f.Group != "", "offset", f.Offset != nil)
	switch len(set) {
	case 0:
		c.add(key, "no source: set one of json, group, offset")
		return extractor{}
	case 1:
	default:
		c.add(key, "more than one source set (%s): set exactly one of json, group, offset", strings.Join(set, ", "))
		return extractor{}
	}
	num := parseNumType(f.Type)
	bytesType := f.Type == "hex" || f.Type == "ascii"
	if f.Type != "" && num == numNone && !bytesType {
		c.add(key+".type", "unknown type %q (want %s, hex, ascii)", f.Type, numTypeNames)
	}
	if f.Offset == nil && f.Length != 0 {
		c.add(key+".length", "length needs offset")
	}
	little := false
	switch f.Endian {
	case "", "big":
	case "little":
		little = true
	default:
		c.add(key+".endian", "unknown endian %q (want big or little)", f.Endian)
	}
	if f.Endian != "" && (f.Offset == nil || num == numNone) {
		c.add(key+".endian", "endian applies to a binary number (offset with an int, uint or float type)")
	}
	if math.IsNaN(f.Scale) || math.IsInf(f.Scale, 0) {
		c.add(key+".scale", "scale must be a finite number")
	}
	if math.IsNaN(f.Add) || math.IsInf(f.Add, 0) {
		c.add(key+".add", "add must be a finite number")
	}
	affine := f.Scale != 0 && f.Scale != 1 || f.Add != 0
	scale := f.Scale
	if scale == 0 {
		scale = 1
	}
	if affine && bytesType {
		c.add(key, "scale and add apply to numbers, not to type %q", f.Type)
	}

	var ex extractor
	switch {
	case f.JSON != "":
		ex = c.pointer(key+".json", f.JSON)
		if f.Type != "" {
			c.add(key+".type", "type applies to offset and group fields; a JSON value keeps its JSON type")
		}
	case f.Group != "":
		ex = c.group(key+".group", f.Group, groups)
		if bytesType {
			c.add(key+".type", "type %q applies to offset fields; a group is text already", f.Type)
		}
		ex.num = num
		if affine && num == numNone {
			ex.num = numFloat64
		}
	default:
		off := *f.Offset
		switch {
		case f.Type == "":
			c.add(key+".type", "offset needs type (%s, hex or ascii)", numTypeNames)
		case bytesType:
			ex = extractor{src: srcBytes, off: off, n: f.Length, ascii: f.Type == "ascii"}
			c.slice(key, off, f.Length, maxLen)
		case num != numNone:
			ex = extractor{src: srcNumber, off: off, n: num.size(), num: num, little: little}
			if f.Length != 0 && f.Length != num.size() {
				c.add(key+".length", "length %d contradicts type %s (%d bytes); leave length out", f.Length, f.Type, num.size())
			}
			c.slice(key, off, num.size(), maxLen)
		}
	}
	ex.affine, ex.scale, ex.add = affine, scale, f.Add
	if f.Add == 0 {
		ex.decimals = decimalScale(scale)
	}
	return ex
}

// decimalScale returns k if scale is the float64 nearest to 10^-k (0.1, 0.01, ...,
// 1e-9), else 0. 1/10^k is correctly rounded, as is the literal 0.1 in the config.
func decimalScale(scale float64) int {
	p := 1.0
	for k := 1; k <= 9; k++ {
		p *= 10
		if scale == 1/p {
			return k
		}
	}
	return 0
}

// topicTemplate compiles a topic template (a rule's publish, a class's will or
// birth) behind mount: it must be a valid topic, every name known, and a
// constant substituted into it must be a safe topic level. missing is the
// problem for an empty template.
func (c *compiler) topicTemplate(key, topic, missing, mount string, lookup func(string) (binding, bool), known []string) []segment {
	why := badTopicText(topic)
	switch {
	case topic == "":
		c.add(key, "%s", missing)
		return nil
	case why != "":
		c.add(key, "topic %q %s", topic, why)
		return nil
	}
	parts, err := parseTemplate(topic)
	if err != nil {
		c.add(key, "topic %q: %v", topic, err)
		return nil
	}
	for _, pt := range parts {
		if !pt.isName {
			continue
		}
		if b, ok := lookup(pt.text); ok && b.slot < 0 {
			if why := unsafeLevel([]byte(b.constant), false); why != "" {
				c.add(key, "{%s} is %q, which cannot be a topic level: it %s", pt.text, b.constant, why)
			}
		}
	}
	segs, unknown := bindTemplate(mount, parts, lookup)
	if len(unknown) > 0 && !c.reBroken {
		c.add(key, "unknown placeholder %s in topic %q (known: %s)", braces(unknown), topic, list(known))
	}
	if len(segs) > 0 && segs[0].slot < 0 && strings.HasPrefix(segs[0].lit, "$") {
		c.warn(key, "topic %q starts with '$', which is reserved for the broker (MQTT 3.1.1 §4.7.2)", mount+topic)
	}
	return segs
}

func (c *compiler) publish(key string, p *config.Publish, mount string, lookup func(string) (binding, bool), known []string) publish {
	out := publish{qos: byte(p.QoS), retain: p.Retain}
	if p.QoS > 2 {
		c.add(key+".qos", "qos %d is not 0, 1 or 2", p.QoS)
	}

	out.topic = c.topicTemplate(key+".topic", p.Topic, "topic is empty", mount, lookup, known)

	switch p.Payload {
	case "json":
		out.payload = payloadJSON
	case "raw":
		out.payload = payloadRaw
	case "template":
		out.payload = payloadTemplate
	case "":
		if p.Template != "" {
			out.payload = payloadTemplate
		}
	default:
		c.add(key+".payload", "unknown payload %q (want json, raw or template)", p.Payload)
	}
	if p.Template != "" && (p.Payload == "json" || p.Payload == "raw") {
		c.add(key+".template", "template is set but payload is %q; set payload = \"template\" or drop template", p.Payload)
	}
	if out.payload == payloadTemplate {
		parts, err := parseTemplate(p.Template)
		if err != nil {
			c.add(key+".template", "template: %v", err)
		} else {
			segs, unknown := bindTemplate("", parts, lookup)
			if len(unknown) > 0 && !c.reBroken {
				c.add(key+".template", "unknown placeholder %s in template (known: %s)", braces(unknown), list(known))
			}
			out.tmpl = segs
		}
	}
	return out
}

// testBytes is an inline test's datagram, given as hex or as text (isText);
// exactly one must be set. what names it in the problem when neither is.
func testBytes(key, hex, text, what string, fail func(k, format string, args ...any)) (b []byte, isText bool) {
	switch {
	case hex != "" && text != "":
		fail(key, "set one of hex and text, not both")
	case hex != "":
		b, err := decodeHex(hex)
		if err != nil {
			fail(key+".hex", "%v", err)
		}
		return b, false
	case text != "":
		return []byte(text), true
	default:
		fail(key, "set hex or text: %s", what)
	}
	return nil, false
}

func (c *compiler) test(key string, t *config.RuleTest, hasAck bool) (ruleTest, bool) {
	bad := false
	fail := func(k, format string, args ...any) {
		c.add(k, format, args...)
		bad = true
	}
	tc := ruleTest{key: key, from: defaultTestFrom, expect: t.Expect, noMatch: t.NoMatch}
	tc.payload, _ = testBytes(key, t.Hex, t.Text, "the datagram to test with", fail)
	if t.From != "" {
		ap, err := netip.ParseAddrPort(t.From)
		if err != nil {
			a, err2 := netip.ParseAddr(t.From)
			if err2 != nil {
				fail(key+".from", "from %q is not ip:port", t.From)
			}
			ap = netip.AddrPortFrom(a, defaultTestFrom.Port())
		}
		tc.from = ap
	}
	switch {
	case t.NoMatch && len(t.Expect) > 0:
		fail(key, "no_match and expect are both set")
	case !t.NoMatch && len(t.Expect) == 0:
		fail(key, "set expect (topic = payload) or no_match = true")
	}
	switch {
	case t.Ack == "" && t.AckHex == "":
	case t.Ack != "" && t.AckHex != "":
		fail(key, "set one of ack and ack_hex, not both")
	case !hasAck:
		fail(key+"."+sources("ack", t.Ack != "", "ack_hex", t.AckHex != "")[0], "the rule has no [rule.ack]: there is no ack to expect")
	case t.NoMatch:
		fail(key, "no_match and an expected ack are both set")
	case t.Ack != "":
		tc.ack, tc.ackText = []byte(t.Ack), true
	default:
		b, err := decodeHex(t.AckHex)
		if err != nil {
			fail(key+".ack_hex", "%v", err)
		}
		tc.ack = b
	}
	return tc, !bad
}

// list formats names for a message: "a, b, c", or "none".
func list(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// braces formats placeholder names: "{a}, {b}".
func braces(names []string) string {
	var b strings.Builder
	for i, n := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("{" + n + "}")
	}
	return b.String()
}
