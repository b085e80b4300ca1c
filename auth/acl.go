package auth

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Access is what a device asks to do on a topic.
type Access uint8

const (
	// Read is receiving messages: subscribe or observe. The topic asked about is
	// a subscription filter (see ACL.Allowed).
	Read Access = 1
	// Write is publishing to a topic name.
	Write Access = 2
)

// deny is the access of a `deny` line: it grants nothing and takes away what
// other lines grant.
const deny Access = 0

// Limits on topic filters and names, Mosquitto's (lib/util_topic.c,
// mosquitto_sub_topic_check; src/mosquitto_broker_internal.h).
const (
	maxTopicLen   = 65535 // an MQTT UTF-8 string
	maxTopicSlash = 200   // TOPIC_HIERARCHY_LIMIT
)

// ACL is a parsed Mosquitto acl_file (mosquitto.conf(5), "acl_file"):
//
//	# comment
//	topic [read|write|readwrite|deny] FILTER    applies to anonymous devices
//	user NAME                                   starts NAME's block
//	topic [read|write|readwrite|deny] FILTER    applies to devices logged in as NAME
//	pattern [read|write|readwrite|deny] FILTER  applies to every device, %c and %u substituted
//
// Fields are separated by spaces, and FILTER is the rest of the line, so it may
// hold spaces when the access word is given; without it the access is readwrite
// (so `topic read` alone grants readwrite on the topic "read", as in Mosquitto).
// Several `user NAME` blocks for one NAME add up. In a pattern, %c (the client
// id) and %u (the username) must each be a whole topic level, as the manual
// says. A malformed line is an error naming its line, never skipped.
//
// Allowed decides as Mosquitto 2.0 does (src/security_default.c,
// mosquitto_acl_check_default) with these differences, each the stricter:
//
//   - a deny line wins over every grant, wherever it is; Mosquitto checks the
//     topic lines before the patterns, so there a topic grant beats a pattern deny;
//   - a client id or username holding '/' (as well as '+' or '#') never matches
//     a pattern that uses it, and neither does an empty one;
//   - a subscription is checked when it is made (Mosquitto 2.0's default ACL
//     lets every SUBSCRIBE through and checks each message it delivers);
//   - %c or %u inside a level (`dev-%c`) is an error; Mosquitto 2.0 substitutes
//     it anywhere, Mosquitto 2.1 leaves it unsubstituted.
//
// One difference is more lenient: Mosquitto 2.0 refuses every pattern to a
// device whose client id or username holds '+' or '#'; here only the patterns
// using that value are skipped.
//
// An ACL is immutable and safe for concurrent use. A nil *ACL allows nothing.
type ACL struct {
	anonymous []aclRule            // topic lines before the first user line
	users     map[string][]aclRule // topic lines of each user block
	patterns  []aclRule            // pattern lines
}

// aclRule is one topic or pattern line.
type aclRule struct {
	access Access   // Read, Write, both, or deny
	levels []string // the filter split at '/'
	// client and user are set on a pattern using %c or %u: its levels "%c" and
	// "%u" stand for the client id and the username.
	client, user bool
}

// LoadACLFile reads an ACL file.
func LoadACLFile(path string) (*ACL, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return ParseACL(path, data)
}

// ParseACL reads an ACL file's text; name is used in errors, which read
// "auth: NAME:LINE: malformed line: reason" and wrap ErrMalformed.
func ParseACL(name string, data []byte) (*ACL, error) {
	a := &ACL{users: map[string][]aclRule{}}
	user, inUser := "", false
	n := 0
	for line := range strings.Lines(string(data)) {
		n++
		line = strings.Trim(line, cSpace)
		if line == "" || line[0] == '#' {
			continue
		}
		keyword, rest := field(line)
		switch keyword {
		case "topic", "pattern":
			r, err := parseRule(keyword, rest)
			if err != nil {
				return nil, &lineError{name, n, err}
			}
			switch {
			case keyword == "pattern":
				a.patterns = append(a.patterns, r)
			case inUser:
				a.users[user] = append(a.users[user], r)
			default:
				a.anonymous = append(a.anonymous, r)
			}
		case "user":
			if rest == "" {
				return nil, &lineError{name, n, fmt.Errorf("%w: user without a name", ErrMalformed)}
			}
			user, inUser = rest, true
		default:
			return nil, &lineError{name, n, fmt.Errorf("%w: unknown keyword %q (want topic, user or pattern)", ErrMalformed, keyword)}
		}
	}
	return a, nil
}

// cSpace is what C's isspace accepts, which Mosquitto trims from lines,
// filters and user names.
const cSpace = " \t\n\v\f\r"

// field splits s, trimmed, at its first space, as Mosquitto's strtok(s, " ")
// does; the rest is trimmed.
func field(s string) (first, rest string) {
	first, rest, _ = strings.Cut(s, " ")
	return first, strings.Trim(rest, cSpace)
}

// parseRule reads what follows `topic` or `pattern`: "[ACCESS] FILTER".
func parseRule(keyword, s string) (aclRule, error) {
	if s == "" {
		return aclRule{}, fmt.Errorf("%w: %s without a topic filter", ErrMalformed, keyword)
	}
	r := aclRule{access: Read | Write}
	word, filter := field(s)
	if filter == "" {
		// One field is the filter (Mosquitto: the access word is optional
		// unless the filter holds a space).
		filter = word
	} else {
		switch word {
		case "read":
			r.access = Read
		case "write":
			r.access = Write
		case "readwrite":
			r.access = Read | Write
		case "deny":
			r.access = deny
		default:
			return aclRule{}, fmt.Errorf("%w: unknown access %q (want read, write, readwrite or deny)", ErrMalformed, word)
		}
	}
	levels, err := splitTopic(filter, true)
	if err != nil {
		return aclRule{}, fmt.Errorf("%w: topic filter %s", ErrMalformed, err)
	}
	r.levels = levels
	if keyword == "pattern" {
		for _, l := range levels {
			switch {
			case l == "%c":
				r.client = true
			case l == "%u":
				r.user = true
			case strings.Contains(l, "%c") || strings.Contains(l, "%u"):
				return aclRule{}, fmt.Errorf("%w: pattern %q: %%c and %%u must each be a whole topic level, as in devices/%%c/#", ErrMalformed, filter)
			}
		}
	}
	return r, nil
}

// splitTopic checks a topic filter (wildcards allowed) or topic name (not) and
// splits it into levels. '+' and '#' must be whole levels and '#' the last
// (MQTT 3.1.1 §4.7.1); the text is a non-empty MQTT UTF-8 string (§1.5.3).
func splitTopic(s string, wildcards bool) ([]string, error) {
	switch {
	case s == "":
		return nil, errors.New("is empty")
	case len(s) > maxTopicLen:
		return nil, fmt.Errorf("is longer than %d bytes", maxTopicLen)
	case !utf8.ValidString(s):
		return nil, fmt.Errorf("%q is not UTF-8", s)
	case strings.IndexByte(s, 0) >= 0:
		return nil, fmt.Errorf("%q holds a NUL", s)
	case strings.Count(s, "/") > maxTopicSlash:
		return nil, fmt.Errorf("%q has more than %d levels", s, maxTopicSlash+1)
	}
	levels := strings.Split(s, "/")
	for i, l := range levels {
		switch {
		case !wildcards && strings.ContainsAny(l, "+#"):
			return nil, fmt.Errorf("%q: a topic name holds no '+' or '#'", s)
		case l == "#" && i != len(levels)-1:
			return nil, fmt.Errorf("%q: '#' must be the last level", s)
		case l != "+" && l != "#" && strings.ContainsAny(l, "+#"):
			return nil, fmt.Errorf("%q: '+' and '#' must each be a whole level", s)
		}
	}
	return levels, nil
}

// Allowed reports whether the device (clientID, username; username "" is
// anonymous) may do access on topic. For Write, topic is a topic name. For Read,
// topic is a subscription filter: it is allowed when a read or readwrite line
// covers every topic it matches ('+' and '#' in it are covered only by the same
// wildcard, or '#', at that level: `sensors/#` covers `sensors/+/t`, `sensors/+`
// does not cover `sensors/#`) and no deny line matches any of those topics. A
// topic name is a filter without wildcards, so Read on the topic of each
// delivered message is Mosquitto's per-message check. A topic that is not a
// valid name (Write) or filter (Read), and any other access, is refused.
func (a *ACL) Allowed(clientID, username, topic string, access Access) bool {
	if a == nil || (access != Read && access != Write) {
		return false
	}
	levels, err := splitTopic(topic, access == Read)
	if err != nil {
		return false
	}
	rules := a.anonymous
	if username != "" {
		rules = a.users[username]
	}
	granted := false
	for _, set := range [2][]aclRule{rules, a.patterns} {
		for i := range set {
			r := &set[i]
			if (r.client && !substitutable(clientID)) || (r.user && !substitutable(username)) {
				continue
			}
			if r.access == deny {
				if r.overlaps(levels, clientID, username) {
					return false
				}
			} else if !granted && r.access&access != 0 {
				granted = r.covers(levels, clientID, username)
			}
		}
	}
	return granted
}

// substitutable reports whether a client id or username may stand for %c or
// %u: it must be one literal topic level.
func substitutable(s string) bool {
	return s != "" && !strings.ContainsAny(s, "+#/")
}

// level is r's level i, with %c and %u substituted in a pattern.
func (r *aclRule) level(i int, clientID, username string) string {
	l := r.levels[i]
	switch {
	case r.client && l == "%c":
		return clientID
	case r.user && l == "%u":
		return username
	}
	return l
}

// covers reports whether r's filter matches every topic name that the filter
// sub matches. A wildcard in r at the first level does not match a level
// starting with '$' (MQTT 3.1.1 §4.7.2).
func (r *aclRule) covers(sub []string, clientID, username string) bool {
	for i := 0; ; i++ {
		if i == len(r.levels) {
			return i == len(sub)
		}
		l := r.level(i, clientID, username)
		if l == "#" {
			// Also covers the parent level: `a/#` covers `a`.
			return !(i == 0 && isDollar(sub[0]))
		}
		switch {
		case i == len(sub), sub[i] == "#":
			return false
		case l == "+":
			if i == 0 && isDollar(sub[0]) {
				return false
			}
		case l != sub[i]:
			return false
		}
	}
}

// overlaps reports whether some topic name matches both r's filter and sub.
func (r *aclRule) overlaps(sub []string, clientID, username string) bool {
	for i := 0; ; i++ {
		switch {
		case i == len(r.levels) && i == len(sub):
			return true
		case i == len(r.levels):
			return sub[i] == "#" // `a/#` matches `a`
		case i == len(sub):
			return r.level(i, clientID, username) == "#"
		}
		l, s := r.level(i, clientID, username), sub[i]
		if i == 0 && (isDollar(l) || isDollar(s)) && isWildcard(l) != isWildcard(s) {
			return false // a leading wildcard never matches a $ level
		}
		switch {
		case l == "#" || s == "#":
			return true
		case l == "+" || s == "+":
		case l != s:
			return false
		}
	}
}

func isWildcard(level string) bool { return level == "+" || level == "#" }

// isDollar reports whether a literal first level starts with '$' ($SYS/...):
// only a filter starting with the same literal level matches it.
func isDollar(level string) bool { return strings.HasPrefix(level, "$") }
