package auth

import (
	"bufio"
	"bytes"
	"errors"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mqttgw/mqttgw/internal/fuzzcorpus"
)

// Hash fixtures, made as mosquitto_passwd 2.0 makes them but with fixed salts
// (TestPasswordFixtures checks them; TestHashPasswordMatchesMosquittoPasswd
// checks that the real tool makes the same from the same salt).
const (
	// secretHash is "secret" with the salt "fixture-salt".
	secretHash = "$7$101$Zml4dHVyZS1zYWx0$kluZB+fIitdoTkiFQnTgesJUa+Rqr4EoDFNdUUCl4Xj7WJSl9zbSt8U9ew0cbW/XbOsFyRanNXpJZZCLcnRUow=="
	// hunter2Hash is "hunter2" with the salt "other-salt!!".
	hunter2Hash = "$7$101$b3RoZXItc2FsdCEh$kpq0SOWgUxZZWYtcPFn+fqYN46Y5mAlrYk2MRqsnNAUd1umlWTt2mXSGJ6MAQbUHYSXLrWwX0UPG5FbtChl6xQ=="
	// sha512Hash is a well-formed $6$ hash (12-byte salt, 64-byte sum) whose
	// password nobody knows.
	sha512Hash = "$6$Y+/gp4APGIRE/Z3E$QgCE7kRd6oQiqMJRIQQZqAIrY004XppleNz4o84oF72xQ+TPRLWj4ghxghWa2JV8P1XeJmmqzZ4h9/004LDNBQ=="
	// sum is the base64 of a 64-byte hash, for building malformed lines.
	sum = "QgCE7kRd6oQiqMJRIQQZqAIrY004XppleNz4o84oF72xQ+TPRLWj4ghxghWa2JV8P1XeJmmqzZ4h9/004LDNBQ=="
)

// passwdCases are password files and what ParsePasswords makes of them: the
// users and their passwords ("" when unknown) when it accepts the file, or the
// start of its error. A malformed line refuses the whole file, so nobody
// logs in with it: a bad line is never a user and never skipped (Mosquitto's
// broker skips some bad lines and warns). Each text is also a seed of
// FuzzParsePasswords (testdata/fuzz/FuzzParsePasswords/ok_<name> or
// err_<name>).
var passwdCases = []struct {
	name, text string
	users      map[string]string // nil when refused
	err        string
}{{
	// No users: a file nobody can log in with.
	name: "empty", text: "", users: map[string]string{},
}, {
	// Comments, blank and white lines, CRLF, no final newline.
	name: "comments_blank_crlf", text: "# users\r\n\r\nalice:" + secretHash + "\r\n  \t\nbob:" + hunter2Hash,
	users: map[string]string{"alice": "secret", "bob": "hunter2"},
}, {
	// A $6$ line (mosquitto_passwd -H sha512, Mosquitto 1.6 and before).
	name: "sha512", text: "carol:" + sha512Hash + "\n", users: map[string]string{"carol": ""},
}, {
	// A user name may hold spaces and any UTF-8 but ':'.
	name: "names_with_spaces_utf8", text: "bob smith:" + secretHash + "\njürgen:" + hunter2Hash + "\n",
	users: map[string]string{"bob smith": "secret", "jürgen": "hunter2"},
}, {
	// A line with no ':' is not an unnamed user.
	name: "no_colon", text: "alice:" + secretHash + "\nbob\n",
	err: "auth: pw:2: malformed line: want NAME:VALUE, found no ':'",
}, {
	// A plain text password (before mosquitto_passwd -U) is not a hash.
	name: "plain_text_password", text: "alice:" + secretHash + "\nbob:hunter2\n",
	err: `auth: pw:2: user "bob": malformed line: hash does not start with $6$ or $7$`,
}, {
	// A user without a hash has no password.
	name: "empty_hash", text: "bob:\n",
	err: `auth: pw:1: user "bob": malformed line: hash does not start with $6$ or $7$`,
}, {
	// mosquitto_passwd -b FILE '' PASS writes this line.
	name: "empty_name", text: ":" + secretHash + "\n",
	err: "auth: pw:1: malformed line: empty name before ':'",
}, {
	// Only '#' at the very start makes a comment.
	name: "indented_comment", text: "  # note\n",
	err: "auth: pw:1: malformed line: want NAME:VALUE, found no ':'",
}, {
	name: "unknown_kind", text: "u:$5$abc$def\n",
	err: `auth: pw:1: user "u": malformed line: unknown hash type $5$`,
}, {
	name: "missing_field", text: "u:$7$101$" + sum + "\n",
	err: `auth: pw:1: user "u": malformed line: $7$ hash has 3 fields`,
}, {
	name: "zero_iterations", text: "u:$7$0$Y+/gp4APGIRE/Z3E$" + sum + "\n",
	err: `auth: pw:1: user "u": malformed line: $7$ iterations "0"`,
}, {
	// More than maxIterations: each check would take seconds.
	name: "too_many_iterations", text: "u:$7$1000001$Y+/gp4APGIRE/Z3E$" + sum + "\n",
	err: `auth: pw:1: user "u": malformed line: $7$ iterations "1000001"`,
}, {
	name: "iterations_overflow", text: "u:$7$99999999999999999999$Y+/gp4APGIRE/Z3E$" + sum + "\n",
	err: `auth: pw:1: user "u": malformed line: $7$ iterations "99999999999999999999"`,
}, {
	name: "salt_not_base64", text: "u:$6$!!$" + sum + "\n",
	err: `auth: pw:1: user "u": malformed line: salt is not base64`,
}, {
	name: "empty_salt", text: "u:$6$$" + sum + "\n",
	err: `auth: pw:1: user "u": malformed line: salt is not base64`,
}, {
	name: "short_hash", text: "u:$6$Y+/gp4APGIRE/Z3E$QgCE\n",
	err: `auth: pw:1: user "u": malformed line: hash is not 64 bytes of base64`,
}, {
	// Trailing white space after the hash (Mosquitto trims it) is refused.
	name: "trailing_space", text: "alice:" + secretHash + " \n",
	err: `auth: pw:1: user "alice": malformed line: hash is not 64 bytes of base64`,
}, {
	name: "duplicate", text: "u:" + secretHash + "\n# again\nu:" + hunter2Hash + "\n",
	err: `auth: pw:3: duplicate entry: user "u"`,
}}

func TestPasswordFixtures(t *testing.T) {
	for _, f := range []struct{ hash, password, salt string }{
		{secretHash, "secret", "fixture-salt"},
		{hunter2Hash, "hunter2", "other-salt!!"},
	} {
		if got, err := hashWithSalt(f.password, []byte(f.salt), defaultIterations); err != nil || got != f.hash {
			t.Errorf("hashWithSalt(%q, %q) = %s, %v; the fixture is %s", f.password, f.salt, got, err, f.hash)
		}
	}
}

// TestParsePasswordsTable: accepted files hold their users with their
// passwords; a refused file names its bad line, and nobody logs in with it.
func TestParsePasswordsTable(t *testing.T) {
	for _, tc := range passwdCases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePasswords("pw", strings.NewReader(tc.text))
			if tc.users == nil {
				if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
					t.Fatalf("err = %v, want prefix %q", err, tc.err)
				}
				var le *lineError
				if !errors.As(err, &le) || !(errors.Is(err, ErrMalformed) || errors.Is(err, ErrDuplicate)) {
					t.Errorf("err %v: not a lineError wrapping ErrMalformed or ErrDuplicate", err)
				}
				if p != nil {
					t.Fatalf("refused file gave %d users", p.Len())
				}
				// What a caller holding the result has: no users at all.
				for _, u := range []string{"alice", "bob", "u", ""} {
					if p.Has(u) || p.Check(u, "secret") || p.Check(u, "hunter2") {
						t.Errorf("user %q logs in with a refused file", u)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Len() != len(tc.users) {
				t.Errorf("Len = %d, want %d", p.Len(), len(tc.users))
			}
			for u, pw := range tc.users {
				if !p.Has(u) {
					t.Errorf("user %q missing", u)
				}
				if pw != "" && !p.Check(u, pw) {
					t.Errorf("Check(%q, %q) = false", u, pw)
				}
				if p.Check(u, pw+"x") || p.Check(u, "") {
					t.Errorf("Check(%q) accepts a wrong password", u)
				}
			}
			if p.Check("nobody", "secret") {
				t.Error("unknown user logs in")
			}
		})
	}
}

// TestPasswordsDummyCost: an unknown user is checked against a dummy of the
// kind and iteration count most of the file's users have.
func TestPasswordsDummyCost(t *testing.T) {
	h := func(iter string) string { return "$7$" + iter + "$Y+/gp4APGIRE/Z3E$" + sum }
	tests := []struct {
		name, text string
		kind       byte
		iterations int
	}{
		{"empty file: mosquitto_passwd 2.0's default", "", '7', 101},
		{"all 1000", "a:" + h("1000") + "\nb:" + h("1000") + "\n", '7', 1000},
		{"most 101", "a:" + h("101") + "\nb:" + h("1000") + "\nc:" + h("101") + "\n", '7', 101},
		{"tie: the costlier", "a:" + h("101") + "\nb:" + h("1000") + "\n", '7', 1000},
		{"sha512 only", "a:" + sha512Hash + "\n", '6', 0},
		{"tie between kinds: pbkdf2", "a:" + sha512Hash + "\nb:" + h("5") + "\n", '7', 5},
	}
	for _, tt := range tests {
		p, err := ParsePasswords("pw", strings.NewReader(tt.text))
		if err != nil {
			t.Fatal(err)
		}
		if p.dummy.kind != tt.kind || p.dummy.iterations != tt.iterations || len(p.dummy.sum) != 64 || len(p.dummy.salt) != saltLen {
			t.Errorf("%s: dummy %c/%d, want %c/%d", tt.name, p.dummy.kind, p.dummy.iterations, tt.kind, tt.iterations)
		}
	}
}

// BenchmarkCheckKnownVsUnknown shows what TestPasswordsDummyCost asserts
// structurally: a wrong password for a known user and any password for an
// unknown one cost the same (5000 iterations, so milliseconds each). A
// measurement, not a test: timings on a shared machine are no pass/fail.
func BenchmarkCheckKnownVsUnknown(b *testing.B) {
	h, err := hashWithSalt("pw", []byte("0123456789ab"), 5000)
	if err != nil {
		b.Fatal(err)
	}
	p, err := ParsePasswords("pw", strings.NewReader("alice:"+h+"\n"))
	if err != nil {
		b.Fatal(err)
	}
	for _, user := range []string{"alice", "mallory"} {
		b.Run(user, func(b *testing.B) {
			for b.Loop() {
				if p.Check(user, "wrong") {
					b.Fatal("wrong password accepted")
				}
			}
		})
	}
}

// passwdCorpus is testdata/fuzz/FuzzParsePasswords as passwdCases make it.
func passwdCorpus() map[string][]byte {
	want := map[string][]byte{}
	for _, tc := range passwdCases {
		prefix := "ok_"
		if tc.users == nil {
			prefix = "err_"
		}
		want[prefix+tc.name] = fuzzcorpus.File([]byte(tc.text))
	}
	return want
}

// TestPasswdFuzzCorpusMatchesTables checks testdata/fuzz/FuzzParsePasswords
// holds every passwdCases text. Run `go test ./auth/ -run
// TestPasswdFuzzCorpusMatchesTables -update-corpus` after changing the table.
func TestPasswdFuzzCorpusMatchesTables(t *testing.T) {
	fuzzcorpus.Check(t, filepath.Join("testdata", "fuzz", "FuzzParsePasswords"), passwdCorpus(), *updateCorpus)
}

// FuzzParsePasswords checks that no text makes ParsePasswords panic, that a
// refusal names a line of the file, and that a file it accepts can be edited:
// NewPasswordFile keeps its text byte for byte; setting the password of its
// first user and of a new one, then deleting the new one, changes those users
// alone. Seeds: passwdCases (commented there), in
// testdata/fuzz/FuzzParsePasswords.
func FuzzParsePasswords(f *testing.F) {
	for _, tc := range passwdCases {
		f.Add([]byte(tc.text))
	}
	const newUser = "fuzz-new-user"
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePasswords("fuzz", bytes.NewReader(data))
		if err != nil {
			var le *lineError
			switch {
			case p != nil:
				t.Fatalf("ParsePasswords = %v users and %v", p.Len(), err)
			case errors.Is(err, bufio.ErrTooLong):
			case !errors.As(err, &le) || !(errors.Is(err, ErrMalformed) || errors.Is(err, ErrDuplicate)) ||
				le.file != "fuzz" || le.line < 1 || le.line > bytes.Count(data, []byte("\n"))+1:
				t.Fatalf("ParsePasswords: %.200v", err)
			}
			return
		}
		p.Check("u", "p") // must not panic

		pf, err := NewPasswordFile("fuzz", data)
		if err != nil {
			t.Fatalf("NewPasswordFile refuses what ParsePasswords accepts: %v", err)
		}
		if !bytes.Equal(pf.Bytes(), data) {
			t.Fatalf("Bytes() = %q, want the text unchanged", pf.Bytes())
		}
		users := slices.Sorted(maps.Keys(p.users))
		var first string
		if len(users) > 0 && CheckUsername(users[0]) == nil {
			first = users[0]
			if err := pf.Set(first, secretHash); err != nil {
				t.Fatalf("Set(%q): %v", first, err)
			}
		}
		if err := pf.Set(newUser, hunter2Hash); err != nil {
			t.Fatalf("Set(%q): %v", newUser, err)
		}
		edited, err := ParsePasswords("edited", bytes.NewReader(pf.Bytes()))
		if err != nil {
			t.Fatalf("edited file %q does not parse: %v", pf.Bytes(), err)
		}
		for _, u := range users {
			want := p.users[u]
			switch u {
			case newUser: // set last
				want = mustParseHash(t, hunter2Hash)
			case first:
				want = mustParseHash(t, secretHash)
			}
			if !sameHash(edited.users[u], want) {
				t.Fatalf("user %q changed by the edit", u)
			}
		}
		if !edited.Has(newUser) || edited.Len() != len(users)+btoi(!p.Has(newUser)) {
			t.Fatalf("edited file has %d users, want %q added to the %d", edited.Len(), newUser, len(users))
		}
		if err := pf.Delete(newUser); err != nil {
			t.Fatal(err)
		}
		if err := pf.Delete(newUser); !errors.Is(err, ErrUnknownUser) {
			t.Fatalf("second Delete = %v, want ErrUnknownUser", err)
		}
		deleted, err := ParsePasswords("deleted", bytes.NewReader(pf.Bytes()))
		if err != nil || deleted.Has(newUser) || deleted.Len() != len(users)-btoi(p.Has(newUser)) {
			t.Fatalf("after Delete: %v, %q", err, pf.Bytes())
		}
	})
}

func mustParseHash(t *testing.T, s string) hash {
	t.Helper()
	h, err := parseHash(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func sameHash(a, b hash) bool {
	return a.kind == b.kind && a.iterations == b.iterations && bytes.Equal(a.salt, b.salt) && bytes.Equal(a.sum, b.sum)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
