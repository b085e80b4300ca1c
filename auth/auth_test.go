package auth

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

func TestParsePSKs(t *testing.T) {
	text := "# devices\n\nsensor-1:00112233445566778899aabbccddeeff\r\nsensor-2:DEADBEEF\n"
	p, err := ParsePSKs("psk", strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if p.Len() != 2 {
		t.Fatalf("Len = %d", p.Len())
	}
	if k, ok := p.Key("sensor-2"); !ok || string(k) != "\xde\xad\xbe\xef" {
		t.Fatalf("sensor-2 key %x %v", k, ok)
	}
	if _, ok := p.Key("nobody"); ok {
		t.Fatal("unknown identity has a key")
	}
	var nilP *PSKs
	if _, ok := nilP.Key("x"); ok || nilP.Len() != 0 {
		t.Fatal("nil PSKs")
	}
}

func TestPSKFileErrorsNameTheLine(t *testing.T) {
	tests := []struct {
		name, text, want string
		is               error
	}{
		{"no colon", "a:00\nb00\n", "auth: psk:2: malformed line: want NAME:VALUE, found no ':'", ErrMalformed},
		{"not hex", "# c\na:0g\n", `auth: psk:2: malformed line: identity "a": key is not hexadecimal`, ErrMalformed},
		{"odd hex", "a:abc\n", `auth: psk:1: malformed line: identity "a": key is not hexadecimal`, ErrMalformed},
		{"empty key", "a:\n", `auth: psk:1: malformed line: identity "a" has an empty key`, ErrMalformed},
		{"empty identity", ":00\n", "auth: psk:1: malformed line: empty name before ':'", ErrMalformed},
		{"duplicate", "a:00\n\na:01\n", `auth: psk:3: duplicate entry: identity "a"`, ErrDuplicate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePSKs("psk", strings.NewReader(tt.text))
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) || !errors.Is(err, tt.is) {
				t.Fatalf("err = %v, want prefix %q (is %v)", err, tt.want, tt.is)
			}
		})
	}
}

func TestLoadPSKFileMissing(t *testing.T) {
	if _, err := LoadPSKFile(filepath.Join(t.TempDir(), "none")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v", err)
	}
}

// TestPasswordsFromMosquittoPasswd checks both hash kinds against files written
// by the real mosquitto_passwd: $7$ (its default) and $6$ (-H sha512).
func TestPasswordsFromMosquittoPasswd(t *testing.T) {
	mosquittotest.RequireTools(t, "mosquitto_passwd")
	bin, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		bin = "/usr/bin/mosquitto_passwd"
	}
	path := filepath.Join(t.TempDir(), "passwd")
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd %v: %v: %s", args, err, out)
		}
	}
	run("-c", "-b", path, "alice", "s3cret")
	run("-H", "sha512", "-b", path, "bob", "hunter2:with colon")
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), "alice:$7$") || !strings.Contains(string(data), "bob:$6$") {
		t.Fatalf("unexpected file:\n%s", data)
	}
	p, err := LoadPasswordFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user, pass string
		want       bool
	}{
		{"alice", "s3cret", true},
		{"alice", "s3cret ", false},
		{"alice", "", false},
		{"bob", "hunter2:with colon", true},
		{"bob", "hunter2", false},
		{"carol", "s3cret", false},
	} {
		if got := p.Check(c.user, c.pass); got != c.want {
			t.Errorf("Check(%q, %q) = %v, want %v", c.user, c.pass, got, c.want)
		}
	}
}

func TestPasswordFileErrorsNameTheLine(t *testing.T) {
	const sum = "QgCE7kRd6oQiqMJRIQQZqAIrY004XppleNz4o84oF72xQ+TPRLWj4ghxghWa2JV8P1XeJmmqzZ4h9/004LDNBQ=="
	tests := []struct{ name, text, want string }{
		{"plain text password", "u:secret\n", `auth: pw:1: user "u": malformed line: hash does not start with $6$ or $7$`},
		{"unknown kind", "u:$5$abc$def\n", `auth: pw:1: user "u": malformed line: unknown hash type $5$`},
		{"missing field", "a:$7$101$Y+/gp4APGIRE/Z3E$" + sum + "\nu:$7$101$" + sum + "\n", `auth: pw:2: user "u": malformed line: $7$ hash has 3 fields`},
		{"bad iterations", "u:$7$0$Y+/gp4APGIRE/Z3E$" + sum + "\n", `auth: pw:1: user "u": malformed line: $7$ iterations "0"`},
		{"bad base64", "u:$6$!!$" + sum + "\n", `auth: pw:1: user "u": malformed line: salt is not base64`},
		{"short hash", "u:$6$Y+/gp4APGIRE/Z3E$QgCE\n", `auth: pw:1: user "u": malformed line: hash is not 64 bytes of base64`},
		{"duplicate", "u:$6$Y+/gp4APGIRE/Z3E$" + sum + "\nu:$6$Y+/gp4APGIRE/Z3E$" + sum + "\n", `auth: pw:2: duplicate entry: user "u"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePasswords("pw", strings.NewReader(tt.text))
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("err = %v, want prefix %q", err, tt.want)
			}
		})
	}
}

func FuzzParsePSKs(f *testing.F) {
	f.Add("id:0011\n")   // one identity
	f.Add("a:b:c\n")     // ':' inside the key
	f.Add("\r\n#x\n:\n") // CRLF, comment, empty name
	f.Fuzz(func(t *testing.T, text string) {
		p, err := ParsePSKs("fuzz", strings.NewReader(text))
		if err == nil {
			p.Key("id")
		}
	})
}
