package mapping

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// A small JSON scanner over raw bytes (RFC 8259): validation, RFC 6901 pointer
// resolution, string unescaping and quoting. It allocates nothing, so a JSON rule costs
// one pass to validate plus one partial pass per pointer, never a map[string]any.

// maxJSONDepth bounds nesting, as encoding/json does, so that a hostile datagram of
// "[[[[..." cannot recurse without limit.
const maxJSONDepth = 10000

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// validJSON reports whether b is exactly one JSON value with optional surrounding
// white space. With object set, the value must be an object.
func validJSON(b []byte, object bool) bool {
	i := skipSpace(b, 0)
	if i >= len(b) || object && b[i] != '{' {
		return false
	}
	end, ok := scanValue(b, i, 0)
	return ok && skipSpace(b, end) == len(b)
}

// scanValue validates the value starting at b[i] and returns the index just past it.
func scanValue(b []byte, i, depth int) (int, bool) {
	if i >= len(b) {
		return i, false
	}
	var ok bool
	switch b[i] {
	case '{':
		if depth >= maxJSONDepth {
			return i, false
		}
		i = skipSpace(b, i+1)
		if i < len(b) && b[i] == '}' {
			return i + 1, true
		}
		for {
			if i >= len(b) || b[i] != '"' {
				return i, false
			}
			if i, ok = scanString(b, i); !ok {
				return i, false
			}
			i = skipSpace(b, i)
			if i >= len(b) || b[i] != ':' {
				return i, false
			}
			if i, ok = scanValue(b, skipSpace(b, i+1), depth+1); !ok {
				return i, false
			}
			i = skipSpace(b, i)
			if i >= len(b) {
				return i, false
			}
			if b[i] == '}' {
				return i + 1, true
			}
			if b[i] != ',' {
				return i, false
			}
			i = skipSpace(b, i+1)
		}
	case '[':
		if depth >= maxJSONDepth {
			return i, false
		}
		i = skipSpace(b, i+1)
		if i < len(b) && b[i] == ']' {
			return i + 1, true
		}
		for {
			if i, ok = scanValue(b, i, depth+1); !ok {
				return i, false
			}
			i = skipSpace(b, i)
			if i >= len(b) {
				return i, false
			}
			if b[i] == ']' {
				return i + 1, true
			}
			if b[i] != ',' {
				return i, false
			}
			i = skipSpace(b, i+1)
		}
	case '"':
		return scanString(b, i)
	case 't':
		return scanLiteral(b, i, "true")
	case 'f':
		return scanLiteral(b, i, "false")
	case 'n':
		return scanLiteral(b, i, "null")
	default:
		return scanNumber(b, i)
	}
}

func scanLiteral(b []byte, i int, lit string) (int, bool) {
	if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
		return i + len(lit), true
	}
	return i, false
}

// scanString validates the string starting at the quote b[i]. Like encoding/json it
// accepts bytes that are not UTF-8; control characters must be escaped.
func scanString(b []byte, i int) (int, bool) {
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return j + 1, true
		case c < 0x20:
			return j, false
		case c == '\\':
			j++
			if j >= len(b) {
				return j, false
			}
			switch b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(b)-j < 5 || !isHex4(b[j+1:j+5]) {
					return j, false
				}
				j += 4
			default:
				return j, false
			}
		}
	}
	return len(b), false
}

// scanNumber validates number = [ "-" ] int [ frac ] [ exp ] (RFC 8259 §6).
func scanNumber(b []byte, i int) (int, bool) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return i, false
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return i, false
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	return i, true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isHex4(b []byte) bool {
	for _, c := range b[:4] {
		if unhex(c) < 0 {
			return false
		}
	}
	return true
}

func unhex(c byte) rune {
	switch {
	case c >= '0' && c <= '9':
		return rune(c - '0')
	case c >= 'a' && c <= 'f':
		return rune(c - 'a' + 10)
	case c >= 'A' && c <= 'F':
		return rune(c - 'A' + 10)
	}
	return -1
}

// The functions below assume b was accepted by validJSON; they stay in bounds on any
// input but give meaningless answers on invalid JSON.

// skipValue returns the index just past the value starting at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return len(b)
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	default: // number, true, false, null
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return len(b)
	}
}

// skipString returns the index just past the string whose opening quote is b[i].
func skipString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(b)
}

// ptrToken is one reference token of a JSON pointer (RFC 6901 §3), unescaped.
type ptrToken struct {
	key   string
	index int // the token as an array index (RFC 6901 §4), -1 if it is not one
}

// parsePointer compiles an RFC 6901 pointer such as "/a/b~1c/0". "" (the whole
// document) is accepted by the parser; config uses "" for unset.
func parsePointer(p string) ([]ptrToken, error) {
	if p == "" {
		return nil, nil
	}
	if p[0] != '/' {
		return nil, fmt.Errorf("JSON pointer %q must start with '/' (RFC 6901)", p)
	}
	parts := strings.Split(p[1:], "/")
	toks := make([]ptrToken, len(parts))
	for n, s := range parts {
		if strings.Contains(s, "~") {
			var b strings.Builder
			for i := 0; i < len(s); i++ {
				if s[i] != '~' {
					b.WriteByte(s[i])
					continue
				}
				switch {
				case i+1 < len(s) && s[i+1] == '0':
					b.WriteByte('~')
				case i+1 < len(s) && s[i+1] == '1':
					b.WriteByte('/')
				default:
					return nil, fmt.Errorf("JSON pointer %q: '~' must be followed by 0 or 1 (RFC 6901 §3)", p)
				}
				i++
			}
			s = b.String()
		}
		toks[n] = ptrToken{key: s, index: arrayIndex(s)}
	}
	return toks, nil
}

// arrayIndex parses array-index = "0" / ( %x31-39 *DIGIT ); -1 if s is not one.
func arrayIndex(s string) int {
	if s == "" || len(s) > 9 || len(s) > 1 && s[0] == '0' {
		return -1
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || s[0] == '+' || s[0] == '-' {
		return -1
	}
	return n
}

// resolvePointer returns the span of the value that toks points to in b. Where an
// object repeats a key, the first one counts.
func resolvePointer(b []byte, toks []ptrToken) (start, end int, ok bool) {
	i := skipSpace(b, 0)
	for _, t := range toks {
		if i >= len(b) {
			return 0, 0, false
		}
		switch b[i] {
		case '{':
			i = skipSpace(b, i+1)
			found := false
			for i < len(b) && b[i] == '"' {
				ks := i
				ke := skipString(b, i)
				if ke-1 <= ks {
					return 0, 0, false
				}
				i = skipSpace(b, ke)
				if i >= len(b) || b[i] != ':' {
					return 0, 0, false
				}
				i = skipSpace(b, i+1)
				if keyEquals(b[ks+1:ke-1], t.key) {
					found = true
					break
				}
				i = skipSpace(b, skipValue(b, i))
				if i >= len(b) || b[i] != ',' {
					break
				}
				i = skipSpace(b, i+1)
			}
			if !found {
				return 0, 0, false
			}
		case '[':
			if t.index < 0 {
				return 0, 0, false
			}
			i = skipSpace(b, i+1)
			if i >= len(b) || b[i] == ']' {
				return 0, 0, false
			}
			for n := 0; n < t.index; n++ {
				i = skipSpace(b, skipValue(b, i))
				if i >= len(b) || b[i] != ',' {
					return 0, 0, false
				}
				i = skipSpace(b, i+1)
			}
		default:
			return 0, 0, false
		}
	}
	if i >= len(b) {
		return 0, 0, false
	}
	return i, skipValue(b, i), true
}

// keyEquals reports whether the raw (still escaped) member name equals key.
func keyEquals(raw []byte, key string) bool {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw) == key
	}
	k := 0
	for j := 0; j < len(raw); {
		if c := raw[j]; c != '\\' {
			if k >= len(key) || key[k] != c {
				return false
			}
			k++
			j++
			continue
		}
		r, n := decodeEscape(raw, j)
		var buf [utf8.UTFMax]byte
		m := utf8.EncodeRune(buf[:], r)
		if len(key)-k < m || string(buf[:m]) != key[k:k+m] {
			return false
		}
		k += m
		j += n
	}
	return k == len(key)
}

// decodeEscape decodes the escape sequence at raw[j] == '\\' and returns the rune and
// the bytes it took. A lone or invalid surrogate decodes to U+FFFD, as in encoding/json.
func decodeEscape(raw []byte, j int) (rune, int) {
	if len(raw)-j < 2 {
		return utf8.RuneError, len(raw) - j
	}
	switch raw[j+1] {
	case '"', '\\', '/':
		return rune(raw[j+1]), 2
	case 'b':
		return '\b', 2
	case 'f':
		return '\f', 2
	case 'n':
		return '\n', 2
	case 'r':
		return '\r', 2
	case 't':
		return '\t', 2
	case 'u':
		r1, ok := hex4(raw, j+2)
		if !ok {
			return utf8.RuneError, 2
		}
		if !utf16.IsSurrogate(r1) {
			return r1, 6
		}
		if len(raw)-j >= 12 && raw[j+6] == '\\' && raw[j+7] == 'u' {
			if r2, ok := hex4(raw, j+8); ok {
				if r := utf16.DecodeRune(r1, r2); r != utf8.RuneError {
					return r, 12
				}
			}
		}
		return utf8.RuneError, 6
	}
	return utf8.RuneError, 2
}

func hex4(b []byte, i int) (rune, bool) {
	if len(b)-i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		v := unhex(c)
		if v < 0 {
			return 0, false
		}
		r = r<<4 | v
	}
	return r, true
}

// appendUnescaped appends the text of the raw JSON string contents (without quotes).
func appendUnescaped(dst, raw []byte) []byte {
	for j := 0; j < len(raw); {
		i := bytes.IndexByte(raw[j:], '\\')
		if i < 0 {
			return append(dst, raw[j:]...)
		}
		dst = append(dst, raw[j:j+i]...)
		j += i
		r, n := decodeEscape(raw, j)
		dst = utf8.AppendRune(dst, r)
		j += n
	}
	return dst
}

// appendJSONString appends s as a JSON string. Control characters are escaped and
// bytes that are not UTF-8 become U+FFFD, as in encoding/json.
func appendJSONString(dst, s []byte) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, n := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && n == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += n
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
