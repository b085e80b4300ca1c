package mapping

import (
	"encoding/json"
	"strings"
	"testing"
)

// jsonSamples are valid and invalid JSON texts, checked against encoding/json.
var jsonSamples = []string{
	`{}`, ` { } `, `{"a":1}`, `{"a":[1,2,{"b":null}],"c":"d"}`, `[]`, `[1]`, `1`, `-0`, `-0.5e+10`, `"x"`,
	`true`, `false`, `null`, `{"a":"\u00e9\n\"\\\/"}`, `{"\ud83d\ude00":1}`, "{\"a\":\"\xff\"}",
	``, ` `, `{`, `}`, `{"a"}`, `{"a":}`, `{"a":1,}`, `[1,]`, `[,1]`, `01`, `1.`, `.5`, `1e`, `-`, `+1`,
	`"abc`, `"\x"`, `"\u12"`, `"\u12g4"`, "\"a\tb\"", `tru`, `nul`, `{"a":1}x`, `{"a":1}{}`, `{1:2}`,
	`NaN`, `[1 2]`, `{"a" 1}`, `{"a":1 "b":2}`, strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
	strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
}

func TestValidJSON(t *testing.T) {
	for _, s := range jsonSamples {
		want := json.Valid([]byte(s))
		if got := validJSON([]byte(s), false); got != want {
			t.Errorf("validJSON(%.40q) = %v, encoding/json says %v", s, got, want)
		}
		wantObj := want && strings.HasPrefix(strings.TrimLeft(s, " \t\r\n"), "{")
		if got := validJSON([]byte(s), true); got != wantObj {
			t.Errorf("validJSON(%.40q, object) = %v, want %v", s, got, wantObj)
		}
	}
}

func TestResolvePointer(t *testing.T) {
	doc := ` { "a" : { "b" : [ 10 , "x" , { "c" : true } ] } , "e\u0301" : 1, "k/l": 2, "m~n": 3, "": 4, "arr": [[1],[2,[3]]] } `
	cases := []struct{ ptr, want string }{
		{"/a/b/0", "10"},
		{"/a/b/1", `"x"`},
		{"/a/b/2/c", "true"},
		{"/a/b", `[ 10 , "x" , { "c" : true } ]`},
		{"/e\u0301", "1"},
		{"/k~1l", "2"},
		{"/m~0n", "3"},
		{"/", "4"},
		{"/arr/1/1/0", "3"},
		{"/a/b/3", ""},
		{"/a/b/-", ""},
		{"/a/b/01", ""},
		{"/a/x", ""},
		{"/a/b/0/x", ""},
		{"/zz", ""},
	}
	for _, tc := range cases {
		toks, err := parsePointer(tc.ptr)
		if err != nil {
			t.Fatal(err)
		}
		s, e, ok := resolvePointer([]byte(doc), toks)
		got := ""
		if ok {
			got = doc[s:e]
		}
		if got != tc.want {
			t.Errorf("resolve %q = %q, want %q", tc.ptr, got, tc.want)
		}
	}
}

func TestParsePointer(t *testing.T) {
	for _, bad := range []string{"a", "/a~", "/~2", "/a~x"} {
		if _, err := parsePointer(bad); err == nil {
			t.Errorf("parsePointer(%q): no error", bad)
		}
	}
	toks, err := parsePointer("/~01/0/10/01/-")
	if err != nil {
		t.Fatal(err)
	}
	want := []ptrToken{{"~1", -1}, {"0", 0}, {"10", 10}, {"01", -1}, {"-", -1}}
	for i := range want {
		if toks[i] != want[i] {
			t.Errorf("token %d = %+v, want %+v", i, toks[i], want[i])
		}
	}
	if got := pointerString(toks); got != "/~01/0/10/01/-" {
		t.Errorf("pointerString = %q", got)
	}
}

// TestUnescape compares with encoding/json, except that bytes that are not UTF-8 stay
// as they are (encoding/json makes them U+FFFD): two device ids must not collapse into
// one, and a topic rejects them anyway.
func TestUnescape(t *testing.T) {
	for _, s := range []string{`abc`, `a\"b\\c\/d\b\f\n\r\t`, `\u00e9\u20ac`, `\ud83d\ude00`, `\ud83d`, `\ude00x`, `\ud83d\u0041`, "\xff"} {
		var want string
		if err := json.Unmarshal([]byte(`"`+s+`"`), &want); err != nil {
			t.Fatal(err)
		}
		if s == "\xff" {
			want = s
		}
		if got := string(appendUnescaped(nil, []byte(s))); got != want {
			t.Errorf("unescape %q = %q, want %q", s, got, want)
		}
		if !keyEquals([]byte(s), want) {
			t.Errorf("keyEquals(%q, %q) = false", s, want)
		}
		if keyEquals([]byte(s), want+"x") || keyEquals([]byte(s+"x"), want) {
			t.Errorf("keyEquals(%q) matches a longer key", s)
		}
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "plain", "q\"b\\", "\x00\x01\x1f\n\r\t", "é€😀", "bad\xff\xfe", "\u2028"} {
		out := appendJSONString(nil, []byte(s))
		var back string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("%q → %s: %v", s, out, err)
		}
		want := strings.ToValidUTF8(s, "\uFFFD")
		if strings.Contains(s, "\xff\xfe") {
			want = strings.ReplaceAll(s, "\xff\xfe", "\uFFFD\uFFFD")
		}
		if back != want {
			t.Errorf("%q → %s → %q, want %q", s, out, back, want)
		}
	}
}
