package mapping

import (
	"fmt"
	"unicode/utf8"
)

// Templates are compiled once into segments: literal text, or the index of a value
// ("slot") filled by Map. Constants ({gateway}, {listener}) and the listener's
// mountpoint are folded into the literals at compile time, so rendering is a loop of
// appends.

// segment is one piece of a compiled template.
type segment struct {
	lit  string // literal text, when slot < 0
	slot int    // index of the value to insert, or -1
	name string // placeholder name, for error messages
}

// part is one piece of a parsed, not yet bound, template.
type part struct {
	text   string // literal text, or the placeholder name
	isName bool
}

// parseTemplate splits text into literals and placeholders. "{name}" is a placeholder
// (name an identifier), "{{" and "}}" are literal braces; any other brace is an error.
func parseTemplate(text string) ([]part, error) {
	var parts []part
	var lit []byte
	flush := func() {
		if len(lit) > 0 {
			parts = append(parts, part{text: string(lit)})
			lit = lit[:0]
		}
	}
	for i := 0; i < len(text); i++ {
		switch c := text[i]; c {
		case '{':
			if i+1 < len(text) && text[i+1] == '{' {
				lit = append(lit, '{')
				i++
				continue
			}
			j := i + 1
			for j < len(text) && text[j] != '}' && text[j] != '{' {
				j++
			}
			if j >= len(text) || text[j] != '}' {
				return nil, fmt.Errorf("unclosed '{' at offset %d (write '{{' for a literal brace)", i)
			}
			name := text[i+1 : j]
			if !isIdent(name) {
				return nil, fmt.Errorf("bad placeholder {%s} at offset %d: want {name} with name a letter or '_' followed by letters, digits or '_'", name, i)
			}
			flush()
			parts = append(parts, part{text: name, isName: true})
			i = j
		case '}':
			if i+1 < len(text) && text[i+1] == '}' {
				lit = append(lit, '}')
				i++
				continue
			}
			return nil, fmt.Errorf("single '}' at offset %d (write '}}' for a literal brace)", i)
		default:
			lit = append(lit, c)
		}
	}
	flush()
	return parts, nil
}

// isIdent reports whether s is [A-Za-z_][A-Za-z0-9_]*.
func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9' {
			continue
		}
		return false
	}
	return true
}

// binding is what a placeholder name stands for: a value slot, or a constant.
type binding struct {
	slot     int // -1 for a constant
	constant string
}

// bindTemplate resolves the names of parts with lookup and prefixes prefix (a
// mountpoint). Constants become literals and adjacent literals merge. It returns the
// names it could not resolve, each once, in order of appearance.
func bindTemplate(prefix string, parts []part, lookup func(name string) (binding, bool)) (segs []segment, unknown []string) {
	lit := prefix
	for _, p := range parts {
		if !p.isName {
			lit += p.text
			continue
		}
		b, ok := lookup(p.text)
		if !ok {
			if !contains(unknown, p.text) {
				unknown = append(unknown, p.text)
			}
			continue
		}
		if b.slot < 0 {
			lit += b.constant
			continue
		}
		if lit != "" {
			segs = append(segs, segment{lit: lit, slot: -1})
			lit = ""
		}
		segs = append(segs, segment{slot: b.slot, name: p.text})
	}
	if lit != "" {
		segs = append(segs, segment{lit: lit, slot: -1})
	}
	return segs, unknown
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// appendTopic appends the topic rendered from segs to dst; the value of slot n is
// text[vals[n].t0:vals[n].t1]. If a value is not a safe topic level it stops and
// returns the index of the offending segment and the reason; otherwise bad is -1.
// text may share its backing array with dst.
func appendTopic(dst []byte, segs []segment, vals []value, text []byte) (out []byte, bad int, why string) {
	start := len(dst)
	for i := range segs {
		s := &segs[i]
		if s.slot < 0 {
			dst = append(dst, s.lit...)
			continue
		}
		v := text[vals[s.slot].t0:vals[s.slot].t1]
		if why := unsafeLevel(v, len(dst) == start); why != "" {
			return dst, i, why
		}
		dst = append(dst, v...)
	}
	return dst, -1, ""
}

// appendText appends the payload rendered from segs: values go in as they are.
func appendText(dst []byte, segs []segment, vals []value, text []byte) []byte {
	for i := range segs {
		s := &segs[i]
		if s.slot < 0 {
			dst = append(dst, s.lit...)
			continue
		}
		dst = append(dst, text[vals[s.slot].t0:vals[s.slot].t1]...)
	}
	return dst
}

// unsafeLevel says why v may not be substituted into a topic, or "" if it may. A
// value must stay inside one topic level: no '/' (a level separator), no '+' or '#'
// (wildcards, MQTT 3.1.1 §4.7.1), no NUL and valid UTF-8 (§1.5.3), not empty. At the
// start of a topic it must not begin with '$', which is reserved for the broker (§4.7.2).
func unsafeLevel(v []byte, first bool) string {
	if len(v) == 0 {
		return "is empty"
	}
	ascii := true
	for _, c := range v {
		switch c {
		case '/':
			return "contains '/'"
		case '+':
			return "contains '+'"
		case '#':
			return "contains '#'"
		case 0:
			return "contains NUL"
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	if !ascii && !utf8.Valid(v) {
		return "is not UTF-8"
	}
	if first && v[0] == '$' {
		return "would start the topic with '$'"
	}
	return ""
}

// badTopicText says why literal topic text is not allowed, or "".
func badTopicText(s string) string {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '+':
			return "contains '+' (wildcards are not allowed in a publish topic)"
		case '#':
			return "contains '#' (wildcards are not allowed in a publish topic)"
		case 0:
			return "contains NUL"
		}
	}
	if !utf8.ValidString(s) {
		return "is not UTF-8"
	}
	return ""
}
