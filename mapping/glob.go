package mapping

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// A class's match is a glob in path.Match syntax, but a device id is not a path:
// '*' and '?' match any character, '/' included, so that the default "*" takes
// every device (an MQTT-SN client id may contain '/'). path.Match cannot be told
// so; this is its syntax with that one difference:
//
//	pattern:   { term }
//	term:      '*'                 any sequence of characters
//	           '?'                 any one character
//	           '[' [ '^' ] { character-range } ']'   a non-empty class
//	           c                   c itself (c != '*', '?', '\\', '[')
//	           '\\' c              c itself
//	character-range:
//	           c                   c itself (c != '\\', '-', ']')
//	           '\\' c              c itself
//	           lo '-' hi           any c with lo <= c <= hi

// errBadGlob means a glob is malformed; Compile reports it with the syntax.
var errBadGlob = errors.New("bad glob")

type globKind uint8

const (
	globLiteral globKind = iota
	globAnyOne           // ?
	globStar             // *
	globClass            // [...]
)

// globTok is one term of a compiled glob.
type globTok struct {
	kind   globKind
	lit    string      // globLiteral: one character, or one byte that is not UTF-8
	negate bool        // globClass: [^...]
	ranges []runeRange // globClass
}

type runeRange struct{ lo, hi rune }

// compileGlob parses a glob; the only error is errBadGlob.
func compileGlob(p string) ([]globTok, error) {
	var toks []globTok
	for i := 0; i < len(p); {
		switch p[i] {
		case '*':
			if n := len(toks); n == 0 || toks[n-1].kind != globStar { // ** is *
				toks = append(toks, globTok{kind: globStar})
			}
			i++
		case '?':
			toks = append(toks, globTok{kind: globAnyOne})
			i++
		case '[':
			t := globTok{kind: globClass}
			i++
			if i < len(p) && p[i] == '^' {
				t.negate = true
				i++
			}
			for {
				if i < len(p) && p[i] == ']' && len(t.ranges) > 0 {
					i++
					break
				}
				lo, n, ok := classChar(p[i:])
				if !ok {
					return nil, errBadGlob
				}
				i += n
				hi := lo
				if i < len(p) && p[i] == '-' {
					if hi, n, ok = classChar(p[i+1:]); !ok {
						return nil, errBadGlob
					}
					i += 1 + n
				}
				t.ranges = append(t.ranges, runeRange{lo, hi})
			}
			toks = append(toks, t)
		case '\\':
			if i+1 >= len(p) {
				return nil, errBadGlob
			}
			_, n := utf8.DecodeRuneInString(p[i+1:])
			toks = append(toks, globTok{kind: globLiteral, lit: p[i+1 : i+1+n]})
			i += 1 + n
		default:
			_, n := utf8.DecodeRuneInString(p[i:])
			toks = append(toks, globTok{kind: globLiteral, lit: p[i : i+n]})
			i += n
		}
	}
	return toks, nil
}

// classChar reads one character of a class range at the start of s: a character
// other than '\\', '-' and ']', or an escaped one. Bytes that are not UTF-8 cannot
// be compared as characters, so a class refuses them (as path.Match does).
func classChar(s string) (r rune, n int, ok bool) {
	if s == "" || s[0] == '-' || s[0] == ']' {
		return 0, 0, false
	}
	esc := 0
	if s[0] == '\\' {
		esc = 1
	}
	r, n = utf8.DecodeRuneInString(s[esc:])
	if n == 0 || r == utf8.RuneError && n == 1 {
		return 0, 0, false
	}
	return r, esc + n, true
}

func (t *globTok) inClass(r rune) bool {
	in := false
	for _, rr := range t.ranges {
		if rr.lo <= r && r <= rr.hi {
			in = true
			break
		}
	}
	return in != t.negate
}

// matchGlob reports whether the whole of name matches the glob. A star that fails
// later gives back one more character, the usual backtracking: at most
// len(toks)×len(name) steps.
func matchGlob(toks []globTok, name string) bool {
	ti, ni := 0, 0
	starT, starN := -1, 0 // the last star and the name position it took up to
	for ni < len(name) {
		r, size := utf8.DecodeRuneInString(name[ni:])
		if ti < len(toks) {
			t := &toks[ti]
			switch {
			case t.kind == globStar:
				starT, starN = ti, ni
				ti++
				continue
			case t.kind == globLiteral && strings.HasPrefix(name[ni:], t.lit):
				ti++
				ni += len(t.lit)
				continue
			case t.kind == globAnyOne, t.kind == globClass && t.inClass(r):
				ti++
				ni += size
				continue
			}
		}
		if starT < 0 {
			return false
		}
		_, size = utf8.DecodeRuneInString(name[starN:])
		starN += size
		ti, ni = starT+1, starN
	}
	for ti < len(toks) && toks[ti].kind == globStar {
		ti++
	}
	return ti == len(toks)
}
