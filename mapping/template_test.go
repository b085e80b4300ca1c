package mapping

import (
	"strings"
	"testing"
)

func TestParseTemplate(t *testing.T) {
	cases := []struct {
		in, want, err string
	}{
		{"a/{b}/c", "a/ {b} /c", ""},
		{"{a}{b}", "{a} {b}", ""},
		{"{{x}}", "{x}", ""},
		{"{{{x}}}", "{ {x} }", ""},
		{`{{"t":{temp}}}`, `{"t": {temp} }`, ""},
		{"", "", ""},
		{"{_a1}", "{_a1}", ""},
		{"{", "", "unclosed '{' at offset 0"},
		{"a{b", "", "unclosed '{' at offset 1"},
		{"{a{b}}", "", "unclosed '{' at offset 0"},
		{"}", "", "single '}' at offset 0"},
		{"{}", "", "bad placeholder {} at offset 0"},
		{"{1a}", "", "bad placeholder {1a}"},
		{"{a-b}", "", "bad placeholder {a-b}"},
	}
	for _, tc := range cases {
		parts, err := parseTemplate(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseTemplate(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseTemplate(%q): %v", tc.in, err)
			continue
		}
		var got []string
		for _, p := range parts {
			if p.isName {
				got = append(got, "{"+p.text+"}")
			} else {
				got = append(got, p.text)
			}
		}
		if g := strings.Join(got, " "); g != tc.want {
			t.Errorf("parseTemplate(%q) = %q, want %q", tc.in, g, tc.want)
		}
	}
}

func TestBindTemplate(t *testing.T) {
	parts, err := parseTemplate("{gw}/{a}{gw}-{x}/{a}")
	if err != nil {
		t.Fatal(err)
	}
	lookup := func(name string) (binding, bool) {
		switch name {
		case "gw":
			return binding{slot: -1, constant: "G"}, true
		case "a":
			return binding{slot: 3}, true
		}
		return binding{}, false
	}
	segs, unknown := bindTemplate("m/", parts, lookup)
	want := []segment{{lit: "m/G/", slot: -1}, {slot: 3, name: "a"}, {lit: "G-/", slot: -1}, {slot: 3, name: "a"}}
	if len(segs) != len(want) {
		t.Fatalf("segments %+v, want %+v", segs, want)
	}
	for i := range want {
		if segs[i] != want[i] {
			t.Errorf("segment %d = %+v, want %+v", i, segs[i], want[i])
		}
	}
	if len(unknown) != 1 || unknown[0] != "x" {
		t.Errorf("unknown = %q", unknown)
	}
}

func TestUnsafeLevel(t *testing.T) {
	cases := []struct {
		v     string
		first bool
		why   string
	}{
		{"abc", true, ""},
		{"a b.c-é", false, ""},
		{"$x", false, ""},
		{"$x", true, "would start the topic with '$'"},
		{"", false, "is empty"},
		{"a/b", false, "contains '/'"},
		{"+", false, "contains '+'"},
		{"#", false, "contains '#'"},
		{"a\x00", false, "contains NUL"},
		{"\xc3", false, "is not UTF-8"},
		{"\xed\xa0\x80", false, "is not UTF-8"}, // a UTF-16 surrogate
	}
	for _, tc := range cases {
		if got := unsafeLevel([]byte(tc.v), tc.first); got != tc.why {
			t.Errorf("unsafeLevel(%q, %v) = %q, want %q", tc.v, tc.first, got, tc.why)
		}
	}
}
