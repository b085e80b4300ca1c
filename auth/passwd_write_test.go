package auth

import (
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

// hashRE is the shape of mosquitto_passwd 2.0's $7$ hash: 101 iterations, 12
// bytes of salt (16 base64 characters, no padding), 64 bytes of hash (88
// characters, two of them padding).
var hashRE = regexp.MustCompile(`^\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==$`)

func TestHashPassword(t *testing.T) {
	a, err := HashPassword("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := HashPassword("s3cret")
	if !hashRE.MatchString(a) || !hashRE.MatchString(b) {
		t.Fatalf("HashPassword = %s, %s; want mosquitto_passwd's shape", a, b)
	}
	if a == b {
		t.Error("two hashes of one password are equal: the salt is not random")
	}
	p, err := ParsePasswords("pw", strings.NewReader("u:"+a+"\nv:"+b+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !p.Check("u", "s3cret") || !p.Check("v", "s3cret") || p.Check("u", "s3cret\n") {
		t.Error("Check disagrees with HashPassword")
	}
	if _, err := HashPassword(strings.Repeat("x", 65536)); err == nil {
		t.Error("a 65536-byte password was hashed; mosquitto_passwd refuses it")
	}
}

// TestHashPasswordMatchesMosquittoPasswd: from the salt the real
// mosquitto_passwd chose, hashWithSalt makes exactly its line, for passwords
// with spaces, ':', '$', UTF-8 and the longest it takes.
func TestHashPasswordMatchesMosquittoPasswd(t *testing.T) {
	mosquittotest.RequireTools(t, "mosquitto_passwd")
	path := filepath.Join(t.TempDir(), "passwd")
	for i, pw := range []string{"s3cret", "with space:and$dollar", "pässwörd", "x", strings.Repeat("long", 1000)} {
		args := []string{"-b", path, "u", pw}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		if out, err := exec.Command(mosquittoPasswd(), args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v: %s", err, out)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		line := strings.TrimSuffix(string(data), "\n")
		hash, ok := strings.CutPrefix(line, "u:")
		if !ok || !hashRE.MatchString(hash) {
			t.Fatalf("mosquitto_passwd wrote %q", line)
		}
		salt, err := base64.StdEncoding.DecodeString(strings.Split(hash, "$")[3])
		if err != nil {
			t.Fatal(err)
		}
		if got, err := hashWithSalt(pw, salt, defaultIterations); err != nil || got != hash {
			t.Errorf("password %.20q: hashWithSalt = %s, %v; mosquitto_passwd wrote %s", pw, got, err, hash)
		}
	}
}

func mosquittoPasswd() string {
	if p, err := exec.LookPath("mosquitto_passwd"); err == nil {
		return p
	}
	return "/usr/bin/mosquitto_passwd"
}

func TestCheckUsername(t *testing.T) {
	tests := []struct {
		user, why string // why "" when valid
	}{
		{"alice", ""},
		{"bob smith", ""},
		{"jürgen", ""},
		{"sensor-7/a+b#c$d", ""},
		{strings.Repeat("u", 65535), ""},
		{"", "is empty"},
		{strings.Repeat("u", 65536), "is longer than 65535 bytes"},
		{"a:b", "holds ':'"},
		{"a\tb", "holds a control character"},
		{"a\nb", "holds a control character"},
		{"a\x00b", "holds a control character"},
		{"a\x7fb", "holds a control character"},
		{"ab\r", "holds a control character"},
		{"a\xffb", "is not UTF-8"},
		{"#root", "starts with '#' (a comment)"},
		{" alice", "starts or ends with a space"},
		{"alice ", "starts or ends with a space"},
	}
	for _, tt := range tests {
		err := CheckUsername(tt.user)
		switch {
		case tt.why == "" && err != nil:
			t.Errorf("CheckUsername(%.20q) = %v, want nil", tt.user, err)
		case tt.why != "" && (err == nil || !errors.Is(err, ErrBadUsername) || !strings.HasSuffix(err.Error(), ": "+tt.why)):
			t.Errorf("CheckUsername(%.20q) = %v, want ErrBadUsername ending %q", tt.user, err, tt.why)
		}
	}
}

// passwdEdit is one step of a PasswordFile edit: Set (hash != "") or Delete.
type passwdEdit struct {
	user, hash string
	err        string // the start of the error, or ""
}

func set(user, hash string) passwdEdit { return passwdEdit{user: user, hash: hash} }
func del(user string) passwdEdit       { return passwdEdit{user: user} }

// TestPasswordFileEdits: Set replaces a user's line where it is or appends
// one; Delete removes it; other lines, comments and line endings stay.
func TestPasswordFileEdits(t *testing.T) {
	const a, b, s6 = secretHash, hunter2Hash, sha512Hash
	tests := []struct {
		name, text string
		edits      []passwdEdit
		want       string
	}{
		{"add to a new file", "", []passwdEdit{set("alice", a)}, "alice:" + a + "\n"},
		{"add appends", "alice:" + a + "\n", []passwdEdit{set("bob", b)}, "alice:" + a + "\nbob:" + b + "\n"},
		{"add after a last line without newline", "alice:" + a, []passwdEdit{set("bob", b)}, "alice:" + a + "\nbob:" + b + "\n"},
		{"add follows CRLF", "# c\r\nalice:" + a + "\r\n", []passwdEdit{set("bob", b)}, "# c\r\nalice:" + a + "\r\nbob:" + b + "\r\n"},
		{
			"replace in place, keeping comments, order and CRLF",
			"# users\nalice:" + a + "\r\n\nbob:" + s6 + "\ncarol:" + a,
			[]passwdEdit{set("bob", b), set("carol", b), set("alice", b)},
			"# users\nalice:" + b + "\r\n\nbob:" + b + "\ncarol:" + b,
		},
		{
			"delete keeps the others in order",
			"alice:" + a + "\n# keep me\nbob:" + b + "\ncarol:" + a + "\n",
			[]passwdEdit{del("bob")},
			"alice:" + a + "\n# keep me\ncarol:" + a + "\n",
		},
		{"delete the last", "alice:" + a + "\nbob:" + b, []passwdEdit{del("bob")}, "alice:" + a + "\n"},
		{"delete the only", "alice:" + a + "\n", []passwdEdit{del("alice"), set("bob", b)}, "bob:" + b + "\n"},
		{
			"a comment naming a user is not the user",
			"#alice:" + a + "\n",
			[]passwdEdit{{user: "alice", err: `auth: pw: unknown user "alice"`}, set("alice", b)},
			"#alice:" + a + "\nalice:" + b + "\n",
		},
		{
			"delete an unknown user",
			"alice:" + a + "\n",
			[]passwdEdit{{user: "mallory", err: `auth: pw: unknown user "mallory"`}},
			"alice:" + a + "\n",
		},
		{
			"refused names and hashes change nothing",
			"alice:" + a + "\n",
			[]passwdEdit{
				{user: "a:b", hash: a, err: `auth: invalid user name "a:b": holds ':'`},
				{user: "", hash: a, err: `auth: invalid user name "": is empty`},
				{user: "bob", hash: "plain", err: `auth: user "bob": malformed line: hash does not start`},
			},
			"alice:" + a + "\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := NewPasswordFile("pw", []byte(tt.text))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range tt.edits {
				if e.hash != "" {
					err = f.Set(e.user, e.hash)
				} else {
					err = f.Delete(e.user)
				}
				if (err == nil) != (e.err == "") || err != nil && !strings.HasPrefix(err.Error(), e.err) {
					t.Fatalf("edit %q: err = %v, want %q", e.user, err, e.err)
				}
			}
			if got := string(f.Bytes()); got != tt.want {
				t.Errorf("got\n%q\nwant\n%q", got, tt.want)
			}
			if _, err := ParsePasswords("edited", strings.NewReader(string(f.Bytes()))); err != nil {
				t.Errorf("the edited file does not parse: %v", err)
			}
		})
	}
	if _, err := NewPasswordFile("pw", []byte("alice:"+a+"\nbob\n")); err == nil || !strings.HasPrefix(err.Error(), "auth: pw:2: malformed line") {
		t.Errorf("NewPasswordFile of a malformed file: %v", err)
	}
	if err := (&PasswordFile{name: "pw", lines: []string{""}}).Delete("x"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("Delete on an empty file: %v", err)
	}
}

func TestWritePasswordFileModes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "passwd")
	mode := func(p string) fs.FileMode {
		t.Helper()
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode()
	}

	// A new file is 0600, whatever the umask.
	if err := WritePasswordFile(path, []byte("a\n")); err != nil {
		t.Fatal(err)
	}
	if m := mode(path); m != 0o600 {
		t.Errorf("new file mode %v, want 0600", m)
	}
	// An existing file keeps its mode.
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := WritePasswordFile(path, []byte("b\n")); err != nil {
		t.Fatal(err)
	}
	if m := mode(path); m != 0o640 {
		t.Errorf("rewritten file mode %v, want 0640 kept", m)
	}
	// A symbolic link stays one; its target is replaced.
	link := filepath.Join(dir, "link")
	if err := os.Symlink("passwd", link); err != nil {
		t.Fatal(err)
	}
	if err := WritePasswordFile(link, []byte("c\n")); err != nil {
		t.Fatal(err)
	}
	if m := mode(link); m&fs.ModeSymlink == 0 {
		t.Errorf("link replaced by a %v file", m)
	}
	if data, _ := os.ReadFile(path); string(data) != "c\n" {
		t.Errorf("target holds %q", data)
	}
	// A directory is not replaced.
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := WritePasswordFile(sub, []byte("d\n")); err == nil {
		t.Error("a directory was replaced")
	}
	// No temporary file is left behind.
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "link passwd sub" {
		t.Errorf("directory holds %v", names)
	}
}

func TestUpdatePasswordFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "passwd")
	setAlice := func(f *PasswordFile) error { return f.Set("alice", secretHash) }
	if err := UpdatePasswordFile(path, false, setAlice); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("without create on a missing file: %v", err)
	}
	if err := UpdatePasswordFile(path, true, setAlice); err != nil {
		t.Fatal(err)
	}
	if err := UpdatePasswordFile(path, false, func(f *PasswordFile) error { return f.Set("bob", hunter2Hash) }); err != nil {
		t.Fatal(err)
	}
	want := "alice:" + secretHash + "\nbob:" + hunter2Hash + "\n"
	if data, _ := os.ReadFile(path); string(data) != want {
		t.Fatalf("file holds %q", data)
	}
	// A failed edit writes nothing.
	if err := UpdatePasswordFile(path, false, func(f *PasswordFile) error { return f.Delete("mallory") }); !errors.Is(err, ErrUnknownUser) ||
		!strings.Contains(err.Error(), `"mallory"`) {
		t.Fatalf("delete unknown: %v", err)
	}
	if data, _ := os.ReadFile(path); string(data) != want {
		t.Fatalf("file changed by a failed edit: %q", data)
	}
	// Create replaces the file.
	if err := UpdatePasswordFile(path, true, func(f *PasswordFile) error { return f.Set("carol", secretHash) }); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(path); string(data) != "carol:"+secretHash+"\n" {
		t.Fatalf("after create: %q", data)
	}
	// A malformed file is not edited.
	if err := os.WriteFile(path, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := UpdatePasswordFile(path, false, setAlice); err == nil || !errors.Is(err, ErrMalformed) {
		t.Fatalf("edit of a malformed file: %v", err)
	}
}
