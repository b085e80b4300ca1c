package udpgw

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MatchTopic reports whether topic matches the MQTT filter (MQTT 3.1.1 §4.7): '+' is
// one level, a final '#' is any number of levels including none, and wildcards at
// the first level do not match topics beginning with '$' (§4.7.2).
func MatchTopic(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore || !tmore {
			// "a/#" matches "a": the filter's next level is a final '#'.
			return fmore == tmore || (fmore && frest == "#")
		}
		filter, topic = frest, trest
	}
}

// CheckFilter reports why f is not a valid MQTT topic filter (MQTT 3.1.1 §4.7.1,
// §1.5.3): empty, NUL, not UTF-8, '#' not last, or a wildcard sharing a level.
func CheckFilter(f string) error {
	if f == "" || strings.ContainsRune(f, 0) || !utf8.ValidString(f) {
		return fmt.Errorf("filter %q is empty, contains NUL or is not UTF-8", f)
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return fmt.Errorf("filter %q: '#' must be the last level", f)
		case l != "#" && l != "+" && strings.ContainsAny(l, "+#"):
			return fmt.Errorf("filter %q: a wildcard must fill a whole level", f)
		}
	}
	return nil
}
