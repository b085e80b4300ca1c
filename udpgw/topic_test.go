package udpgw

import "testing"

func TestMatch(t *testing.T) {
	tests := []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/+/c", "a/b/c", true},
		{"a/#", "a", true}, // §4.7.1.2: the parent level too
		{"a/#", "a/b/c", true},
		{"#", "a/b", true},
		{"+", "a", true},
		{"+", "a/b", false},
		{"+/+", "/x", true}, // empty levels are levels
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
	}
	for _, tt := range tests {
		if got := MatchTopic(tt.filter, tt.topic); got != tt.want {
			t.Errorf("MatchTopic(%q, %q) = %v, want %v", tt.filter, tt.topic, got, tt.want)
		}
	}
}

func TestCheckFilter(t *testing.T) {
	for _, ok := range []string{"a", "a/+/b", "#", "a/#", "+", "/"} {
		if err := CheckFilter(ok); err != nil {
			t.Errorf("CheckFilter(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a/#/b", "a+", "a/b#", "x\x00", "\xff"} {
		if CheckFilter(bad) == nil {
			t.Errorf("CheckFilter(%q) accepted", bad)
		}
	}
}
