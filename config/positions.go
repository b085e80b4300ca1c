package config

import (
	"strconv"
	"strings"
)

// keyPositions returns the line of every key path in TOML text that the toml library
// has already parsed without error. The library keeps key positions to itself, so this
// small scanner walks the text once more: table headers, array-of-table indices,
// dotted and quoted keys, inline tables and array elements. It favours never failing
// over exactness: on text it does not understand it records less.
func keyPositions(text string) map[string]int {
	s := &posScanner{src: text, line: 1, pos: map[string]int{}, aotCount: map[string]int{}}
	s.run()
	return s.pos
}

type posScanner struct {
	src      string
	i        int
	line     int
	pos      map[string]int
	aotCount map[string]int // array-of-tables path → elements seen
	table    string         // current table path
}

func (s *posScanner) record(path string) {
	if _, ok := s.pos[path]; !ok {
		s.pos[path] = s.line
	}
}

func (s *posScanner) peek() byte {
	if s.i < len(s.src) {
		return s.src[s.i]
	}
	return 0
}

func (s *posScanner) advance() {
	if s.i < len(s.src) {
		if s.src[s.i] == '\n' {
			s.line++
		}
		s.i++
	}
}

// skipSpace skips blanks, and with newlines also line breaks and comments.
func (s *posScanner) skipSpace(newlines bool) {
	for s.i < len(s.src) {
		switch c := s.src[s.i]; {
		case c == ' ' || c == '\t' || c == '\r':
			s.advance()
		case c == '\n' && newlines:
			s.advance()
		case c == '#':
			for s.i < len(s.src) && s.src[s.i] != '\n' {
				s.i++
			}
		default:
			return
		}
	}
}

func (s *posScanner) run() {
	for s.i < len(s.src) {
		s.skipSpace(true)
		if s.i >= len(s.src) {
			return
		}
		if s.peek() == '[' {
			s.header()
		} else {
			s.keyValue(s.table)
		}
		s.skipLine()
	}
}

func (s *posScanner) skipLine() {
	s.skipSpace(false)
	for s.i < len(s.src) && s.src[s.i] != '\n' {
		s.i++
	}
}

func (s *posScanner) header() {
	s.advance()
	aot := s.peek() == '['
	if aot {
		s.advance()
	}
	keys := s.key()
	// Resolve each prefix to the last element of an array of tables, as TOML does.
	path := ""
	for n, k := range keys {
		path = join(path, k)
		if n == len(keys)-1 {
			break
		}
		if c, ok := s.aotCount[path]; ok {
			path += "[" + strconv.Itoa(c-1) + "]"
		}
	}
	if aot {
		c := s.aotCount[path]
		s.aotCount[path] = c + 1
		s.record(path)
		path += "[" + strconv.Itoa(c) + "]"
	}
	s.record(path)
	s.table = path
}

// key reads a possibly dotted, possibly quoted key.
func (s *posScanner) key() []string {
	var parts []string
	for {
		s.skipSpace(false)
		var k string
		switch s.peek() {
		case '"', '\'':
			k = s.quoted()
		default:
			start := s.i
			for s.i < len(s.src) && isBare(s.src[s.i]) {
				s.i++
			}
			k = s.src[start:s.i]
		}
		parts = append(parts, k)
		s.skipSpace(false)
		if s.peek() != '.' {
			return parts
		}
		s.advance()
	}
}

func isBare(c byte) bool {
	return c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// quoted reads a basic or literal string, single- or multi-line, and returns its
// text (escapes are kept as written; keys rarely need them).
func (s *posScanner) quoted() string {
	q := s.peek()
	triple := strings.HasPrefix(s.src[s.i:], strings.Repeat(string(q), 3))
	if triple {
		s.i += 3
		end := strings.Index(s.src[s.i:], strings.Repeat(string(q), 3))
		if end < 0 {
			end = len(s.src) - s.i
		}
		text := s.src[s.i : s.i+end]
		s.line += strings.Count(text, "\n")
		s.i += end + 3
		for s.peek() == q { // """"" ends with quotes inside the string
			s.i++
		}
		return text
	}
	s.i++
	start := s.i
	for s.i < len(s.src) && s.src[s.i] != q && s.src[s.i] != '\n' {
		if q == '"' && s.src[s.i] == '\\' {
			s.i++
		}
		s.i++
	}
	text := s.src[start:min(s.i, len(s.src))]
	s.advance()
	return text
}

func (s *posScanner) keyValue(table string) {
	keys := s.key()
	path := table
	for _, k := range keys {
		path = join(path, k)
		s.record(path)
	}
	s.skipSpace(false)
	if s.peek() == '=' {
		s.advance()
	}
	s.skipSpace(false)
	s.value(path)
}

func (s *posScanner) value(path string) {
	switch s.peek() {
	case '"', '\'':
		s.quoted()
	case '{':
		s.advance()
		for {
			s.skipSpace(true)
			c := s.peek()
			if c == '}' || c == 0 {
				s.advance()
				return
			}
			if c == ',' {
				s.advance()
				continue
			}
			s.keyValue(path)
		}
	case '[':
		s.advance()
		for n := 0; ; {
			s.skipSpace(true)
			c := s.peek()
			if c == ']' || c == 0 {
				s.advance()
				return
			}
			if c == ',' {
				s.advance()
				n++
				continue
			}
			el := path + "[" + strconv.Itoa(n) + "]"
			s.record(el)
			s.value(el)
		}
	default:
		for s.i < len(s.src) && !strings.ContainsRune(",]}\n#", rune(s.src[s.i])) {
			s.i++
		}
	}
}

// join appends one key to a path, quoting it when it is not a bare key.
func join(path, key string) string {
	if key == "" || strings.IndexFunc(key, func(r rune) bool { return r > 127 || !isBare(byte(r)) }) >= 0 {
		key = strconv.Quote(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}
