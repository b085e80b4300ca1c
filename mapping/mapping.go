package mapping

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"time"
)

// Datagram is one uplink datagram as a listener received it.
type Datagram struct {
	Listener string         // name of the listener it arrived on
	From     netip.AddrPort // sender
	Payload  []byte         // not retained by Map: it may be reused after Map returns
}

// Message is one MQTT publish produced by a rule. Topic and Payload are owned by the
// Message: they stay valid after the Result is reused. Treat Payload as read-only;
// several Messages of one Map call share a backing array.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
}

// Kind is the type of a field's value.
type Kind uint8

const (
	// KindString is text: a byte slice as hex or ascii, a regex group, a JSON string.
	KindString Kind = iota
	// KindNumber is a decimal number, valid as JSON.
	KindNumber
	// KindJSON is a raw JSON value other than a string or number: object, array,
	// true, false, null (also a float that is NaN or infinite).
	KindJSON
)

func (k Kind) String() string {
	switch k {
	case KindString:
		return "string"
	case KindNumber:
		return "number"
	case KindJSON:
		return "json"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Field is one extracted field: its name and its value rendered as text (a JSON string
// unescaped, a JSON object or array as raw JSON).
type Field struct {
	Name  string
	Value string
	Kind  Kind
}

// Result is what Map produced for one datagram. Reuse one Result across calls (one per
// goroutine): its slices and scratch buffers are recycled, so the next Map overwrites
// Fields and Publishes. The strings and payloads they refer to are not overwritten:
// copying a Message (or a Field) out of a Result keeps it valid.
type Result struct {
	Rule      string    // name of the rule that matched; set even when Map fails later
	Device    string    // device id
	Fields    []Field   // sorted by name
	Publishes []Message // in the rule's order

	// Ack is the datagram that answers the device once the broker has the
	// publishes; nil when the rule has no [rule.ack]. Like the payloads it stays
	// valid after the Result is reused; treat it as read-only.
	Ack []byte
	// DedupKey identifies the datagram among the device's retries: the rule's name,
	// a NUL and its rendered ack.dedup, so that two rules' keys never meet. "" when
	// the rule has no dedup. A retry with the same key within DedupWindow is
	// acknowledged again but published once.
	DedupKey    string
	DedupWindow time.Duration

	text  []byte  // values and topics, rendered
	pay   []byte  // payloads, rendered
	vals  []value // value slots of the rule
	spans []int   // per publish: topic start, end, payload start, end
}

// value is one value slot while a datagram is mapped.
type value struct {
	kind   Kind
	t0, t1 int // text in Result.text
	r0, r1 int // when r1 > 0, the raw JSON string in the datagram, for "json" payloads
}

// jsonState caches, for one Map call, whether the payload is valid JSON.
type jsonState uint8

const (
	jsonUnchecked jsonState = iota
	jsonObject
	jsonOther // valid JSON, not an object
	jsonInvalid
)

func (s *jsonState) check(p []byte, object bool) bool {
	if *s == jsonUnchecked {
		switch {
		case !validJSON(p, false):
			*s = jsonInvalid
		case p[skipSpace(p, 0)] == '{':
			*s = jsonObject
		default:
			*s = jsonOther
		}
	}
	return *s == jsonObject || !object && *s == jsonOther
}

// HasRules reports whether any rule belongs to listener. A nil Table has no rules.
func (t *Table) HasRules(listener string) bool { return t != nil && len(t.byListener[listener]) > 0 }

// Map runs the first rule of d.Listener whose match accepts d.Payload and fills r with
// its device, fields and publishes, and its ack and dedup key when it has [rule.ack]. It returns ErrNoMatch if no rule accepts the
// datagram, and an error wrapping ErrDecode or ErrUnsafeTopic (with the rule name and
// the reason) if the matching rule cannot map it; then r.Rule names the rule and
// r.Publishes is empty. Map does no I/O and allocates two blocks per datagram (one
// string shared by device, field values and topics, one byte slice shared by the
// payloads), plus what regexp needs for a rule with named groups.
func (t *Table) Map(d Datagram, r *Result) error {
	r.Rule, r.Device = "", ""
	r.Fields, r.Publishes = r.Fields[:0], r.Publishes[:0]
	r.Ack, r.DedupKey, r.DedupWindow = nil, "", 0
	if t == nil {
		return ErrNoMatch
	}
	js := jsonUnchecked
	for _, ru := range t.byListener[d.Listener] {
		if ok, sub := ru.accepts(d.Payload, &js); ok {
			return r.apply(ru, d, sub, &js)
		}
	}
	return ErrNoMatch
}

// accepts reports whether the rule's match accepts p; sub holds the regex's submatch
// indices when the rule needs them.
func (ru *rule) accepts(p []byte, js *jsonState) (bool, []int) {
	m := &ru.match
	if len(p) < m.minLen || m.maxLen > 0 && len(p) > m.maxLen {
		return false, nil
	}
	if !bytes.HasPrefix(p, m.hexPrefix) {
		return false, nil
	}
	if n := len(m.textPrefix); n > 0 && (len(p) < n || string(p[:n]) != m.textPrefix) {
		return false, nil
	}
	if m.json && !js.check(p, true) {
		return false, nil
	}
	if m.re != nil {
		if !ru.needSubmatch {
			return m.re.Match(p), nil
		}
		sub := m.re.FindSubmatchIndex(p)
		return sub != nil, sub
	}
	return true, nil
}

func decodeError(ru *rule, what, reason string) error {
	return fmt.Errorf("mapping: rule %q: %w: %s: %s", ru.name, ErrDecode, what, reason)
}

// apply maps d with the rule that accepted it.
func (r *Result) apply(ru *rule, d Datagram, sub []int, js *jsonState) error {
	r.Rule = ru.name
	p := d.Payload
	if ru.needJSON && !js.check(p, false) {
		return decodeError(ru, "payload", "not valid JSON")
	}
	r.text, r.pay = r.text[:0], r.pay[:0]
	if n := ru.nslots(); cap(r.vals) < n {
		r.vals = make([]value, n)
	} else {
		r.vals = r.vals[:n]
	}

	v, why := r.extract(&ru.device, d, sub)
	switch {
	case why != "":
		return decodeError(ru, "device", why)
	case v.kind == KindJSON:
		return decodeError(ru, "device", "JSON value "+quote(r.text[v.t0:v.t1])+" is not a string or number")
	case v.t0 == v.t1:
		return decodeError(ru, "device", "device id is empty")
	}
	if v.kind == KindNumber {
		v.kind = KindString // a device id is always a string
	}
	r.vals[deviceSlot] = v
	for n := range ru.fields {
		f := &ru.fields[n]
		v, why := r.extract(&f.ex, d, sub)
		if why != "" {
			return decodeError(ru, "field "+strconv.Quote(f.name), why)
		}
		r.vals[1+n] = v
	}
	for k, g := range ru.groupSlots {
		t0 := len(r.text)
		if s0, s1 := sub[2*g.sub], sub[2*g.sub+1]; s0 >= 0 {
			r.text = append(r.text, p[s0:s1]...)
		}
		r.vals[1+len(ru.fields)+k] = value{kind: KindString, t0: t0, t1: len(r.text)}
	}

	spans := r.spans[:0]
	for n := range ru.pubs {
		pub := &ru.pubs[n]
		t0 := len(r.text)
		var bad int
		var why string
		r.text, bad, why = appendTopic(r.text, pub.topic, r.vals, r.text)
		if bad >= 0 {
			s := pub.topic[bad]
			v := r.vals[s.slot]
			return fmt.Errorf("mapping: rule %q: %w: {%s} = %s %s", ru.name, ErrUnsafeTopic, s.name, quote(r.text[v.t0:v.t1]), why)
		}
		if n := len(r.text) - t0; n > maxTopicLen {
			return fmt.Errorf("mapping: rule %q: %w: topic is %d bytes, longer than MQTT's %d", ru.name, ErrUnsafeTopic, n, maxTopicLen)
		}
		p0 := len(r.pay)
		switch pub.payload {
		case payloadJSON:
			r.appendJSON(ru, p)
		case payloadRaw:
			r.pay = append(r.pay, p...)
		case payloadTemplate:
			r.pay = appendText(r.pay, pub.tmpl, r.vals, r.text)
		}
		spans = append(spans, t0, len(r.text), p0, len(r.pay))
	}
	r.spans = spans
	// The ack goes after the payloads, the dedup key after the topics: both are cut
	// from the same two blocks.
	var a0, a1, k0, k1 int
	if a := ru.ack; a != nil {
		a0 = len(r.pay)
		if a.hex != nil {
			r.pay = append(r.pay, a.hex...)
		} else {
			r.pay = appendText(r.pay, a.tmpl, r.vals, r.text)
		}
		a1 = len(r.pay)
		k0 = len(r.text)
		r.text = appendText(r.text, a.dedup, r.vals, r.text)
		k1 = len(r.text)
	}

	// Hand out two blocks that are never written again: one string for the device,
	// field values and topics, one byte slice for the payloads.
	s := string(r.text)
	var block []byte
	if len(r.pay) > 0 {
		block = make([]byte, len(r.pay))
		copy(block, r.pay)
	}
	dv := r.vals[deviceSlot]
	r.Device = s[dv.t0:dv.t1]
	for n := range ru.fields {
		v := r.vals[1+n]
		r.Fields = append(r.Fields, Field{Name: ru.fields[n].name, Value: s[v.t0:v.t1], Kind: v.kind})
	}
	for n := range ru.pubs {
		sp := spans[4*n : 4*n+4]
		r.Publishes = append(r.Publishes, Message{
			Topic:   s[sp[0]:sp[1]],
			Payload: block[sp[2]:sp[3]:sp[3]],
			QoS:     ru.pubs[n].qos,
			Retain:  ru.pubs[n].retain,
		})
	}
	if a := ru.ack; a != nil {
		r.Ack = block[a0:a1:a1]
		if r.Ack == nil {
			r.Ack = []byte{} // an empty ack is still an ack
		}
		if a.dedup != nil {
			r.DedupKey, r.DedupWindow = s[k0:k1], a.window
		}
	}
	return nil
}

// maxTopicLen is the longest topic MQTT can carry (a UTF-8 string with a 16-bit length,
// MQTT 3.1.1 §1.5.3).
const maxTopicLen = 65535

// quote quotes b for an error message, cut to a readable length.
func quote(b []byte) string {
	const max = 64
	if len(b) > max {
		return strconv.Quote(string(b[:max])) + "..."
	}
	return strconv.Quote(string(b))
}

// extract renders the value of ex into r.text. On failure it returns why.
func (r *Result) extract(ex *extractor, d Datagram, sub []int) (value, string) {
	p := d.Payload
	t0 := len(r.text)
	switch ex.src {
	case srcIP, srcAddr:
		if !d.From.IsValid() {
			return value{}, "no sender address"
		}
		a := d.From.Addr().Unmap()
		if ex.src == srcIP {
			r.text = a.AppendTo(r.text)
		} else {
			r.text = netip.AddrPortFrom(a, d.From.Port()).AppendTo(r.text)
		}
		return value{kind: KindString, t0: t0, t1: len(r.text)}, ""

	case srcBytes:
		if ex.off+ex.n > len(p) {
			return value{}, beyond(ex, len(p))
		}
		b := p[ex.off : ex.off+ex.n]
		if ex.ascii {
			r.text = append(r.text, bytes.TrimRight(b, "\x00")...)
		} else {
			r.text = hex.AppendEncode(r.text, b)
		}
		return value{kind: KindString, t0: t0, t1: len(r.text)}, ""

	case srcNumber:
		if ex.off+ex.n > len(p) {
			return value{}, beyond(ex, len(p))
		}
		return r.binary(ex, p[ex.off:ex.off+ex.n]), ""

	case srcGroup:
		s0, s1 := sub[2*ex.group], sub[2*ex.group+1]
		if s0 < 0 {
			return value{}, fmt.Sprintf("group %q did not take part in the match", ex.gname)
		}
		if ex.num == numNone {
			r.text = append(r.text, p[s0:s1]...)
			return value{kind: KindString, t0: t0, t1: len(r.text)}, ""
		}
		return r.parseNumber(ex, p[s0:s1])

	case srcJSON:
		s, e, ok := resolvePointer(p, ex.ptr)
		if !ok {
			return value{}, "JSON pointer " + strconv.Quote(pointerString(ex.ptr)) + " matches nothing"
		}
		raw := p[s:e]
		switch raw[0] {
		case '"':
			if ex.affine {
				return value{}, "scale/add need a number, not the string " + quote(raw)
			}
			if len(raw) >= 2 {
				r.text = appendUnescaped(r.text, raw[1:len(raw)-1])
			}
			return value{kind: KindString, t0: t0, t1: len(r.text), r0: s, r1: e}, ""
		case '{', '[', 't', 'f', 'n':
			if ex.affine {
				return value{}, "scale/add need a number, not " + quote(raw)
			}
			r.text = append(r.text, raw...)
			return value{kind: KindJSON, t0: t0, t1: len(r.text)}, ""
		}
		if !ex.affine {
			r.text = append(r.text, raw...)
			return value{kind: KindNumber, t0: t0, t1: len(r.text)}, ""
		}
		f, err := strconv.ParseFloat(string(raw), 64)
		if err != nil {
			return value{}, "number " + quote(raw) + " is out of range"
		}
		return r.scaled(ex, f), ""
	}
	return value{}, "no source" // unreachable: Compile sets a source
}

func beyond(ex *extractor, n int) string {
	return fmt.Sprintf("bytes %d..%d are beyond the end of the %d-byte datagram", ex.off, ex.off+ex.n-1, n)
}

// pointerString re-escapes toks as an RFC 6901 pointer, for messages.
func pointerString(toks []ptrToken) string {
	var b []byte
	for _, t := range toks {
		b = append(b, '/')
		for i := 0; i < len(t.key); i++ {
			switch t.key[i] {
			case '~':
				b = append(b, '~', '0')
			case '/':
				b = append(b, '~', '1')
			default:
				b = append(b, t.key[i])
			}
		}
	}
	return string(b)
}

// binary decodes the binary number b (ex.n bytes) and renders it.
func (r *Result) binary(ex *extractor, b []byte) value {
	var order binary.ByteOrder = binary.BigEndian
	if ex.little {
		order = binary.LittleEndian
	}
	var u uint64
	switch len(b) {
	case 1:
		u = uint64(b[0])
	case 2:
		u = uint64(order.Uint16(b))
	case 4:
		u = uint64(order.Uint32(b))
	case 8:
		u = order.Uint64(b)
	}
	switch ex.num {
	case numFloat32:
		return r.float(ex, float64(math.Float32frombits(uint32(u))), 32)
	case numFloat64:
		return r.float(ex, math.Float64frombits(u), 64)
	}
	if ex.num.signed() {
		var i int64
		switch ex.num {
		case numInt8:
			i = int64(int8(u))
		case numInt16:
			i = int64(int16(u))
		case numInt32:
			i = int64(int32(u))
		default:
			i = int64(u)
		}
		return r.integer(ex, i < 0, uint64(i))
	}
	return r.integer(ex, false, u)
}

// integer renders the integer whose sign is neg and whose two's complement bits are
// u: as it is, scaled exactly by 10^-decimals, or scaled through float64.
func (r *Result) integer(ex *extractor, neg bool, u uint64) value {
	if neg {
		u = -u // the magnitude, also for math.MinInt64
	}
	t0 := len(r.text)
	switch {
	case ex.decimals > 0:
		r.text = appendDecimal(r.text, neg, u, ex.decimals)
	case ex.affine:
		f := float64(u)
		if neg {
			f = -f
		}
		return r.scaled(ex, f)
	default:
		if neg {
			r.text = append(r.text, '-')
		}
		r.text = strconv.AppendUint(r.text, u, 10)
	}
	return value{kind: KindNumber, t0: t0, t1: len(r.text)}
}

// appendDecimal appends ±u / 10^k in plain decimal without trailing zeros:
// (215, 1) → "21.5", (400, 1) → "40", (5, 3) → "0.005". k is at most 9.
func appendDecimal(dst []byte, neg bool, u uint64, k int) []byte {
	var buf [32]byte
	digits := strconv.AppendUint(buf[:0], u, 10)
	if pad := k + 1 - len(digits); pad > 0 { // at least one digit before the point
		copy(buf[pad:], digits)
		for i := range pad {
			buf[i] = '0'
		}
		digits = buf[:len(digits)+pad]
	}
	whole, frac := digits[:len(digits)-k], digits[len(digits)-k:]
	for len(frac) > 0 && frac[len(frac)-1] == '0' {
		frac = frac[:len(frac)-1]
	}
	if neg && u != 0 {
		dst = append(dst, '-')
	}
	dst = append(dst, whole...)
	if len(frac) > 0 {
		dst = append(dst, '.')
		dst = append(dst, frac...)
	}
	return dst
}

// parseNumber parses the text of a regex group as ex.num and renders it.
func (r *Result) parseNumber(ex *extractor, b []byte) (value, string) {
	s := string(b)
	bits := 8 * ex.num.size()
	bad := func() (value, string) {
		return value{}, fmt.Sprintf("group %q: %s is not a valid %s", ex.gname, quote(b), numTypeString(ex.num))
	}
	switch {
	case ex.num.float():
		f, err := strconv.ParseFloat(s, bits)
		if err != nil {
			return bad()
		}
		return r.float(ex, f, bits), ""
	case ex.num.signed():
		i, err := strconv.ParseInt(s, 10, bits)
		if err != nil {
			return bad()
		}
		return r.integer(ex, i < 0, uint64(i)), ""
	default:
		u, err := strconv.ParseUint(s, 10, bits)
		if err != nil {
			return bad()
		}
		return r.integer(ex, false, u), ""
	}
}

func numTypeString(n numType) string {
	names := [...]string{"", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64"}
	if int(n) < len(names) {
		return names[n]
	}
	return "number"
}

// float renders a float of the given bit size: scaled if the field says so, else in
// the shortest form that reads back as the same float32 or float64, as encoding/json
// writes it.
func (r *Result) float(ex *extractor, f float64, bits int) value {
	if ex.affine {
		return r.scaled(ex, f)
	}
	t0 := len(r.text)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		r.text = append(r.text, "null"...)
		return value{kind: KindJSON, t0: t0, t1: len(r.text)}
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	r.text = strconv.AppendFloat(r.text, f, format, -1, bits)
	if format == 'e' {
		// "1e-07" → "1e-7", as encoding/json does.
		if n := len(r.text); n-t0 >= 4 && r.text[n-4] == 'e' && r.text[n-3] == '-' && r.text[n-2] == '0' {
			r.text[n-2] = r.text[n-1]
			r.text = r.text[:n-1]
		}
	}
	return value{kind: KindNumber, t0: t0, t1: len(r.text)}
}

// scaled renders f*scale + add with 15 significant digits, so that 215*0.1 reads
// 21.5 rather than 21.500000000000004. NaN and infinities render as null.
func (r *Result) scaled(ex *extractor, f float64) value {
	f = f*ex.scale + ex.add
	t0 := len(r.text)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		r.text = append(r.text, "null"...)
		return value{kind: KindJSON, t0: t0, t1: len(r.text)}
	}
	r.text = strconv.AppendFloat(r.text, f, 'g', 15, 64)
	return value{kind: KindNumber, t0: t0, t1: len(r.text)}
}

// appendJSON renders the "json" payload: an object of the device and all fields, keys
// sorted; strings as JSON strings, numbers as numbers, JSON values as they came.
func (r *Result) appendJSON(ru *rule, payload []byte) {
	r.pay = append(r.pay, '{')
	for n, e := range ru.jsonPlan {
		if n > 0 {
			r.pay = append(r.pay, ',')
		}
		r.pay = append(r.pay, e.key...)
		v := &r.vals[e.slot]
		switch {
		case v.r1 > 0:
			r.pay = append(r.pay, payload[v.r0:v.r1]...)
		case v.kind == KindString:
			r.pay = appendJSONString(r.pay, r.text[v.t0:v.t1])
		default:
			r.pay = append(r.pay, r.text[v.t0:v.t1]...)
		}
	}
	r.pay = append(r.pay, '}')
}
