package auth

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/mqttgw/mqttgw/internal/fuzzcorpus"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpora under testdata/fuzz (FuzzParseACL, FuzzParsePasswords) from the test tables")

// aclQuery is one question to an ACL and its answer.
type aclQuery struct {
	client, user, topic string // user "" is anonymous
	access              Access
	want                bool
}

func read(client, user, filter string, want bool) aclQuery {
	return aclQuery{client, user, filter, Read, want}
}

func write(client, user, topic string, want bool) aclQuery {
	return aclQuery{client, user, topic, Write, want}
}

// aclCases are ACL files and what they allow. Each text is also a seed of
// FuzzParseACL (testdata/fuzz/FuzzParseACL/ok_<name>) and, with each of its
// queries, of FuzzACLAllowed.
var aclCases = []struct {
	name, text string
	queries    []aclQuery
}{{
	// A file that exists but grants nothing denies everything.
	name: "empty",
	text: "",
	queries: []aclQuery{
		write("c", "", "a", false),
		read("c", "", "a", false),
		read("c", "alice", "#", false),
	},
}, {
	// Comments and blank lines only: still nothing granted.
	name: "comments_only",
	text: "# nothing here\n\n   \n\t# indented comment\n",
	queries: []aclQuery{
		write("c", "", "a", false),
		read("c", "bob", "a", false),
	},
}, {
	// Topic lines before the first user line are for anonymous devices only;
	// those after `user alice` for alice only; bob has no block.
	name: "anonymous_and_user_blocks",
	text: "topic read public/#\ntopic write public/in\nuser alice\ntopic readwrite alice/#\n",
	queries: []aclQuery{
		read("c1", "", "public/news", true),
		read("c1", "", "public/+", true),
		read("c1", "", "public/#", true),
		write("c1", "", "public/in", true),
		write("c1", "", "public/news", false),
		read("c1", "", "alice/x", false),
		read("c1", "alice", "public/news", false),
		write("c1", "alice", "alice/x/y", true),
		read("c1", "alice", "alice/#", true),
		write("c1", "bob", "public/in", false),
		read("c1", "bob", "alice/x", false),
	},
}, {
	// Without an access word the line grants readwrite; a lone word after
	// `topic` is the filter, even "read" (Mosquitto reads it the same way).
	name: "default_readwrite",
	text: "topic a/b\ntopic read\n",
	queries: []aclQuery{
		read("c", "", "a/b", true),
		write("c", "", "a/b", true),
		write("c", "", "read", true),
		read("c", "", "read", true),
	},
}, {
	// With the access word, the filter is the rest of the line, spaces and all;
	// runs of spaces between fields, CRLF and leading blanks are fine.
	name: "filter_with_spaces",
	text: "  topic   write    room 1/temp  \r\ntopic read a\r\n",
	queries: []aclQuery{
		write("c", "", "room 1/temp", true),
		write("c", "", "room 1/temp  ", false),
		write("c", "", "room", false),
		read("c", "", "a", true),
	},
}, {
	// Blocks for one user name add up; a name may hold spaces.
	name: "user_blocks_merge",
	text: "user bob smith\ntopic x\nuser alice\ntopic y\nuser bob smith\ntopic z\n",
	queries: []aclQuery{
		write("c", "bob smith", "x", true),
		write("c", "bob smith", "z", true),
		write("c", "bob smith", "y", false),
		write("c", "alice", "y", true),
		write("c", "alice", "z", false),
		write("c", "bob", "x", false),
	},
}, {
	// A deny line wins over every grant, before or after it; for a
	// subscription it wins when it could match any topic the subscription
	// matches.
	name: "deny_wins",
	text: "topic deny secret/#\ntopic readwrite #\ntopic deny +/private\n",
	queries: []aclQuery{
		write("c", "", "a", true),
		write("c", "", "secret/x", false),
		write("c", "", "secret", false),
		write("c", "", "a/private", false),
		write("c", "", "a/private/x", true),
		read("c", "", "public/+/x", true),
		read("c", "", "public/+", false), // public/private
		read("c", "", "a/b/c", true),
		read("c", "", "#", false),
		read("c", "", "secret/+", false),
		read("c", "", "+/x", false),
		read("c", "", "x/+", false),
		read("c", "", "x/+/y", true),
	},
}, {
	// A subscription ending in # also matches its parent level, so a deny of
	// that level stops it.
	name: "deny_parent_level",
	text: "topic read #\ntopic deny secret\n",
	queries: []aclQuery{
		read("c", "", "secret", false),
		read("c", "", "secret/#", false),
		read("c", "", "+", false),
		read("c", "", "secret/+", true),
		read("c", "", "secret/x", true),
	},
}, {
	// Read, write and readwrite grant only what they say.
	name: "access_kinds",
	text: "topic write w\ntopic read r\ntopic readwrite rw\n",
	queries: []aclQuery{
		write("c", "", "w", true),
		read("c", "", "w", false),
		read("c", "", "r", true),
		write("c", "", "r", false),
		read("c", "", "rw", true),
		write("c", "", "rw", true),
		{"c", "", "rw", Read | Write, false},
		{"c", "", "rw", 0, false},
		{"c", "", "rw", 4, false},
	},
}, {
	// %c is the client id, as a whole level; patterns apply to anonymous
	// devices and to every user alike.
	name: "pattern_client",
	text: "pattern readwrite devices/%c/#\n",
	queries: []aclQuery{
		write("d1", "", "devices/d1/t", true),
		write("d1", "", "devices/d1", true),
		write("d1", "", "devices/d2/t", false),
		write("d1", "alice", "devices/d1/t", true),
		read("d1", "", "devices/d1/+", true),
		read("d1", "", "devices/d1/#", true),
		read("d1", "", "devices/+/t", false),
		read("d1", "", "devices/#", false),
		write("", "", "devices//t", false),
	},
}, {
	// %u is the username: a pattern using it never matches an anonymous
	// device, not even on the topic an empty name would give.
	name: "pattern_user",
	text: "pattern read users/%u/#\npattern write out/%c/%u\n",
	queries: []aclQuery{
		read("c", "alice", "users/alice/inbox", true),
		read("c", "alice", "users/bob/inbox", false),
		read("c", "", "users//inbox", false),
		read("c", "", "users/+/inbox", false),
		write("c", "alice", "out/c/alice", true),
		write("c", "alice", "out/alice/c", false),
		write("c", "", "out/c/", false),
	},
}, {
	// A client id or username holding '+', '#' or '/' never matches a pattern
	// using it (substituted, "devices/+/#" would grant every device's topics);
	// patterns that do not use it still apply.
	name: "pattern_dangerous_ids",
	text: "pattern readwrite devices/%c/#\npattern read users/%u/#\npattern read public/#\n",
	queries: []aclQuery{
		read("+", "", "devices/x/t", false),
		read("#", "", "devices/x/t", false),
		read("+", "", "devices/+/t", false),
		write("a/b", "", "devices/a/b/t", false),
		write("a/b", "", "devices/a/b", false),
		read("c", "+", "users/x/y", false),
		read("c", "a/b", "users/a/b/x", false),
		read("c", "#", "users/#", false),
		read("+", "", "public/x", true),
		read("+", "alice", "users/alice/x", true),
		write("c", "a/b", "devices/c/t", true),
	},
}, {
	// Nor does a deny pattern match with such an id: no topic has a level
	// "a/b", so there is nothing to take away.
	name: "pattern_deny_dangerous_id",
	text: "topic read devices/#\npattern deny devices/%c/#\n",
	queries: []aclQuery{
		read("a/b", "", "devices/+/x", true),
		read("a/b", "", "devices/a/b/x", true),
		read("a", "", "devices/+/x", false),
		read("a", "", "devices/b/x", true),
	},
}, {
	// A pattern deny wins over a topic grant (in Mosquitto the topic grant
	// would win, its topic lines being checked first).
	name: "pattern_deny_beats_topic_grant",
	text: "user alice\ntopic readwrite #\npattern deny %u/private/#\n",
	queries: []aclQuery{
		write("c", "alice", "alice/private/x", false),
		write("c", "alice", "alice/private", false),
		write("c", "alice", "bob/private/x", true),
		read("c", "alice", "+/private/x", false),
		read("c", "alice", "bob/#", true),
	},
}, {
	// A topic deny wins over a pattern grant.
	name: "topic_deny_beats_pattern_grant",
	text: "topic deny devices/locked/#\npattern readwrite devices/%c/#\n",
	queries: []aclQuery{
		write("locked", "", "devices/locked/x", false),
		write("d1", "", "devices/d1/x", true),
		write("locked", "alice", "devices/locked/x", true), // the deny is anonymous-only
	},
}, {
	// %c in a topic line is not substituted.
	name: "topic_line_percent_literal",
	text: "topic read devices/%c\n",
	queries: []aclQuery{
		read("x", "", "devices/x", false),
		read("x", "", "devices/%c", true),
	},
}, {
	// A leading wildcard does not match a $ level (MQTT 3.1.1 §4.7.2): # and
	// +/status grant nothing under $SYS.
	name: "dollar_not_matched_by_wildcard",
	text: "topic read #\ntopic read +/status\n",
	queries: []aclQuery{
		read("c", "", "a/b", true),
		read("c", "", "a/status", true),
		read("c", "", "$SYS/broker/uptime", false),
		read("c", "", "$SYS/#", false),
		read("c", "", "$x/status", false),
		read("c", "", "#", true),
		read("c", "", "+/+", true),
	},
}, {
	// A filter starting with $SYS grants $SYS; a deny of # does not take it
	// away.
	name: "dollar_sys_granted",
	text: "topic read $SYS/#\ntopic deny #\n",
	queries: []aclQuery{
		read("c", "", "$SYS/broker/uptime", true),
		read("c", "", "$SYS/#", true),
		read("c", "", "$SYS/+/uptime", true),
		read("c", "", "$SYS", true),
		read("c", "", "a", false),
		read("c", "", "#", false),
		read("c", "", "+/#", false),
		write("c", "", "$SYS/x", false),
	},
}, {
	// A deny of +/# does not reach $ topics either, and a $ deny no others.
	name: "dollar_deny",
	text: "topic readwrite #\ntopic readwrite $SYS/#\ntopic deny +/#\ntopic deny $SYS/secret\n",
	queries: []aclQuery{
		read("c", "", "a", false),
		read("c", "", "$SYS/x", true),
		read("c", "", "$SYS/secret", false),
		read("c", "", "$SYS/+", false),
		read("c", "", "$SYS/x/+", true),
	},
}, {
	// A subscription is allowed only when a read filter covers every topic it
	// matches: '+' and '#' in it are covered only by a wildcard at that level,
	// '#' only by '#'.
	name: "subscription_coverage",
	text: "topic read sensors/#\ntopic read rooms/+/t\ntopic read a/+/#\ntopic read +/x/#\n",
	queries: []aclQuery{
		read("c", "", "sensors/+/t", true),
		read("c", "", "sensors/#", true),
		read("c", "", "sensors", true),
		read("c", "", "rooms/+/t", true),
		read("c", "", "rooms/a/t", true),
		read("c", "", "rooms/#", false),
		read("c", "", "rooms/+/+", false),
		read("c", "", "rooms/+", false),
		read("c", "", "rooms/+/t/u", false),
		read("c", "", "a/+", true),
		read("c", "", "a/+/b/#", true),
		read("c", "", "a/#", false),
		read("c", "", "a", false),
		read("c", "", "+/x", true),
		read("c", "", "#", false),
		read("c", "", "+/#", false),
	},
}, {
	// Only # covers a subscription to #.
	name: "subscription_hash",
	text: "topic read #\n",
	queries: []aclQuery{
		read("c", "", "#", true),
		read("c", "", "+/#", true),
		read("c", "", "/", true),
		read("c", "", "+", true),
	},
}, {
	// Topics that are not valid names (Write) or filters (Read) are refused.
	name: "invalid_queries",
	text: "topic readwrite #\n",
	queries: []aclQuery{
		write("c", "", "a/+", false),
		write("c", "", "a/#", false),
		write("c", "", "a+", false),
		write("c", "", "", false),
		read("c", "", "", false),
		read("c", "", "a/#/b", false),
		read("c", "", "a+", false),
		read("c", "", "a/b#", false),
		write("c", "", "a/\xff", false),
		write("c", "", "a\x00b", false),
		write("c", "", strings.Repeat("a/", 200)+"a", true),
		write("c", "", strings.Repeat("a/", 201)+"a", false),
		write("c", "", strings.Repeat("a", 65535), true),
		write("c", "", strings.Repeat("a", 65536), false),
		write("c", "", "/", true),
		read("c", "", "//", true),
	},
}, {
	// Mosquitto's own aclfile.example (2.0).
	name: "mosquitto_example",
	text: "# This affects access control for clients with no username.\ntopic read $SYS/#\n\n" +
		"# This only affects clients with username \"roger\".\nuser roger\ntopic foo/bar\n\n" +
		"# This affects all clients.\npattern write $SYS/broker/connection/%c/state\n",
	queries: []aclQuery{
		read("c", "", "$SYS/broker/uptime", true),
		read("c", "roger", "$SYS/broker/uptime", false),
		write("c", "roger", "foo/bar", true),
		read("c", "roger", "foo/bar", true),
		write("c", "", "foo/bar", false),
		write("br1", "", "$SYS/broker/connection/br1/state", true),
		write("br1", "roger", "$SYS/broker/connection/br1/state", true),
		write("br1", "", "$SYS/broker/connection/br2/state", false),
	},
}}

func TestACLAllowed(t *testing.T) {
	for _, tc := range aclCases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := ParseACL("acl", []byte(tc.text))
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range tc.queries {
				if got := a.Allowed(q.client, q.user, q.topic, q.access); got != q.want {
					t.Errorf("Allowed(%q, %q, %.40q, %s) = %v, want %v", q.client, q.user, q.topic, accessName(q.access), got, q.want)
				}
			}
		})
	}
}

func accessName(a Access) string {
	switch a {
	case Read:
		return "Read"
	case Write:
		return "Write"
	}
	return "Access(" + strconv.Itoa(int(a)) + ")"
}

// aclErrors are malformed files and the error each gives. Each text is also a
// seed of FuzzParseACL (testdata/fuzz/FuzzParseACL/err_<name>).
var aclErrors = []struct{ name, text, want string }{
	{"unknown_keyword", "topic a\nfoo bar\n", `auth: acl:2: malformed line: unknown keyword "foo" (want topic, user or pattern)`},
	{"keyword_case", "# c\n\nTopic a\n", `auth: acl:3: malformed line: unknown keyword "Topic"`},
	{"tab_separated", "topic\tread\ta\n", `auth: acl:1: malformed line: unknown keyword "topic\tread\ta"`},
	{"comment_after_text", "topic a # all of a\n", `auth: acl:1: malformed line: unknown access "a"`},
	{"topic_without_filter", "topic\n", `auth: acl:1: malformed line: topic without a topic filter`},
	{"pattern_without_filter", "pattern   \r\n", `auth: acl:1: malformed line: pattern without a topic filter`},
	{"unknown_access", "topic a\n\n topic reed a/b\n", `auth: acl:3: malformed line: unknown access "reed" (want read, write, readwrite or deny)`},
	{"access_case", "topic READ a\n", `auth: acl:1: malformed line: unknown access "READ"`},
	{"user_without_name", "user\n", `auth: acl:1: malformed line: user without a name`},
	{"user_blank_name", "topic a\nuser   \t\n", `auth: acl:2: malformed line: user without a name`},
	{"hash_not_last", "topic read a/#/b\n", `auth: acl:1: malformed line: topic filter "a/#/b": '#' must be the last level`},
	{"hash_in_level", "topic read a/b#\n", `auth: acl:1: malformed line: topic filter "a/b#": '+' and '#' must each be a whole level`},
	{"plus_in_level", "pattern write a+/%c\n", `auth: acl:1: malformed line: topic filter "a+/%c": '+' and '#' must each be a whole level`},
	{"plus_prefix", "topic a/+b\n", `auth: acl:1: malformed line: topic filter "a/+b": '+' and '#' must each be a whole level`},
	{"pattern_inside_level", "pattern read dev-%c/x\n", `auth: acl:1: malformed line: pattern "dev-%c/x": %c and %u must each be a whole topic level`},
	{"pattern_two_in_level", "pattern write %u%c\n", `auth: acl:1: malformed line: pattern "%u%c": %c and %u must each be a whole topic level`},
	{"not_utf8", "topic a/\xff\n", `auth: acl:1: malformed line: topic filter "a/\xff" is not UTF-8`},
	{"nul", "topic a\x00b\n", `auth: acl:1: malformed line: topic filter "a\x00b" holds a NUL`},
	{"too_many_levels", "topic " + strings.Repeat("a/", 201) + "a\n", `auth: acl:1: malformed line: topic filter "a/a/`},
	{"too_long", "topic " + strings.Repeat("a", 65536) + "\n", `auth: acl:1: malformed line: topic filter is longer than 65535 bytes`},
}

func TestACLErrorsNameTheLine(t *testing.T) {
	for _, tt := range aclErrors {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseACL("acl", []byte(tt.text))
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %.200v, want prefix %q (is ErrMalformed)", err, tt.want)
			}
			if a != nil {
				t.Fatal("an ACL with the error")
			}
		})
	}
}

func TestLoadACLFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "acl")
	if err := os.WriteFile(path, []byte("user alice\ntopic write alice/#\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := LoadACLFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Allowed("c", "alice", "alice/x", Write) || a.Allowed("c", "", "alice/x", Write) {
		t.Fatal("loaded ACL answers wrongly")
	}

	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("user alice\ntopic wrte alice/#\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadACLFile(bad); err == nil || !strings.HasPrefix(err.Error(), "auth: "+bad+":2: ") {
		t.Fatalf("err = %v, want it to name %s:2", err, bad)
	}
	if _, err := LoadACLFile(filepath.Join(dir, "none")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v", err)
	}
}

func TestNilACLAllowsNothing(t *testing.T) {
	var a *ACL
	if a.Allowed("c", "", "a", Write) || a.Allowed("c", "u", "#", Read) {
		t.Fatal("nil ACL allows")
	}
}

// TestACLConcurrentUse asks one ACL from several goroutines (run with -race).
func TestACLConcurrentUse(t *testing.T) {
	a, err := ParseACL("acl", []byte("topic deny x/#\ntopic readwrite #\npattern read d/%c/#\n"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			id := strconv.Itoa(i)
			for range 200 {
				if !a.Allowed(id, "", "d/"+id+"/+", Read) || a.Allowed(id, "", "x/y", Write) {
					t.Error("wrong answer under concurrency")
					return
				}
			}
		})
	}
	wg.Wait()
}

// maxSeed bounds the seeds taken from the tables: the fuzzer minimizes each
// new input for up to a minute (-fuzzminimizetime), and inputs grown from a
// 64 KiB seed kept it minimizing for most of a 30 s run. The big cases still
// run as tests.
const maxSeed = 1024

// aclCorpus is testdata/fuzz/FuzzParseACL as aclCases and aclErrors make it.
func aclCorpus() map[string][]byte {
	want := map[string][]byte{}
	for _, tc := range aclCases {
		if len(tc.text) <= maxSeed {
			want["ok_"+tc.name] = fuzzcorpus.File([]byte(tc.text))
		}
	}
	for _, tc := range aclErrors {
		if len(tc.text) <= maxSeed {
			want["err_"+tc.name] = fuzzcorpus.File([]byte(tc.text))
		}
	}
	return want
}

// TestACLFuzzCorpusMatchesTables checks that testdata/fuzz/FuzzParseACL holds
// a seed file for every ACL case and error case (up to maxSeed), with the same
// text. Run `go test ./auth/ -run TestACLFuzzCorpusMatchesTables -update-corpus`
// after changing the tables. Extra files (inputs saved by `go test -fuzz`) are
// left alone.
func TestACLFuzzCorpusMatchesTables(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParseACL")
	want := aclCorpus()
	fuzzcorpus.Check(t, dir, want, *updateCorpus)
}

// fuzzQueries are asked of every ACL FuzzParseACL parses.
var fuzzQueries = []aclQuery{
	write("c", "", "a/b", false),
	write("c", "u", "$SYS/x", false),
	read("c", "", "#", false),
	read("+", "u", "a/+/b", false),
	read("c/d", "#", "+/#", false),
	read("", "", "a", false),
}

// FuzzParseACL checks that no text makes ParseACL panic, that every failure
// is an ErrMalformed naming a line of the file, and that a parsed ACL answers
// fixed queries without panicking. Seeds: aclCases and aclErrors (commented
// there) up to maxSeed, stored in testdata/fuzz/FuzzParseACL.
func FuzzParseACL(f *testing.F) {
	for _, tc := range aclCases {
		if len(tc.text) <= maxSeed {
			f.Add([]byte(tc.text))
		}
	}
	for _, tc := range aclErrors {
		if len(tc.text) <= maxSeed {
			f.Add([]byte(tc.text))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParseACL("fuzz", data)
		if err != nil {
			var le *lineError
			if a != nil || !errors.Is(err, ErrMalformed) || !errors.As(err, &le) || le.file != "fuzz" ||
				le.line < 1 || le.line > bytes.Count(data, []byte("\n"))+1 {
				t.Fatalf("ParseACL = %v, %.200v", a, err)
			}
			return
		}
		for _, q := range fuzzQueries {
			a.Allowed(q.client, q.user, q.topic, q.access)
		}
	})
}

// FuzzACLAllowed checks Allowed against a plain reference (refAllowed) on
// topic names, and that a subscription it allows lets through every message
// the subscription would bring: Read on sub implies Read on any topic name
// matching sub, here sub with its wildcards filled in with fill. Seeds: every
// query of aclCases up to maxSeed.
func FuzzACLAllowed(f *testing.F) {
	for _, tc := range aclCases {
		for _, q := range tc.queries {
			if len(q.topic) <= maxSeed {
				f.Add([]byte(tc.text), q.client, q.user, q.topic, "x")
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, client, user, sub, fill string) {
		a, err := ParseACL("fuzz", data)
		if err != nil {
			return
		}
		for _, access := range []Access{Read, Write} {
			if got, want := a.Allowed(client, user, sub, access), refAllowed(a, client, user, sub, access); isTopicName(sub) && got != want {
				t.Fatalf("Allowed(%q, %q, %q, %s) = %v, reference says %v", client, user, sub, accessName(access), got, want)
			}
		}
		if !a.Allowed(client, user, sub, Read) {
			return
		}
		for _, parent := range []bool{false, true} {
			topic := fillFilter(sub, fill, parent)
			if isTopicName(topic) && refMatch(sub, topic) && !a.Allowed(client, user, topic, Read) {
				t.Fatalf("subscription %q allowed, its topic %q is not (client %q, user %q)", sub, topic, client, user)
			}
		}
	})
}

// refAllowed answers Allowed for a topic name the plain way: substitute the
// pattern's filter as text, match it with refMatch, deny wins.
func refAllowed(a *ACL, client, user, topic string, access Access) bool {
	if access != Read && access != Write {
		return false
	}
	rules := a.anonymous
	if user != "" {
		rules = a.users[user]
	}
	granted := false
	for _, r := range append(append([]aclRule(nil), rules...), a.patterns...) {
		filter := strings.Join(r.levels, "/")
		if r.client || r.user {
			levels := append([]string(nil), r.levels...)
			for i, l := range levels {
				switch {
				case l == "%c" && r.client:
					levels[i] = client
				case l == "%u" && r.user:
					levels[i] = user
				default:
					continue
				}
				if levels[i] == "" || strings.ContainsAny(levels[i], "+#/") {
					filter = ""
				}
			}
			if filter != "" {
				filter = strings.Join(levels, "/")
			}
		}
		if filter == "" || !refMatch(filter, topic) {
			continue
		}
		if r.access == deny {
			return false
		}
		granted = granted || r.access&access != 0
	}
	return granted
}

// refMatch is MQTT 3.1.1 §4.7 matching of a topic name by a filter.
func refMatch(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && !strings.HasPrefix(filter, "$") {
		return false
	}
	f, n := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, l := range f {
		switch {
		case l == "#":
			return true
		case i == len(n):
			return false
		case l != "+" && l != n[i]:
			return false
		}
	}
	return len(f) == len(n)
}

// isTopicName reports whether s is a topic a device may publish to.
func isTopicName(s string) bool {
	_, err := splitTopic(s, false)
	return err == nil
}

// fillFilter makes a topic name from a filter: each '+' becomes fill, and a
// final '#' becomes fill or, with parent, goes away with its '/'.
func fillFilter(filter, fill string, parent bool) string {
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		switch {
		case l == "#" && parent && i > 0:
			levels = levels[:i]
		case l == "+" || l == "#":
			levels[i] = fill
		}
	}
	return strings.Join(levels, "/")
}
