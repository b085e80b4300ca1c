package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mqttgw/mqttgw/auth"
	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

// runPasswd runs `mqttgw passwd args...` with stdin as its standard input.
func runPasswd(stdin string, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = passwd(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// mustPasswd runs `mqttgw passwd` and fails the test unless it exits 0.
func mustPasswd(t *testing.T, stdin string, args ...string) {
	t.Helper()
	if code, out, errOut := runPasswd(stdin, args...); code != 0 {
		t.Fatalf("mqttgw passwd %q: exit %d\n%s%s", args, code, out, errOut)
	}
}

// mosquittoPasswd runs the real mosquitto_passwd.
func mosquittoPasswd(t *testing.T, args ...string) {
	t.Helper()
	mosquittotest.RequireTools(t, "mosquitto_passwd")
	bin, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		bin = "/usr/bin/mosquitto_passwd"
	}
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd %q: %v: %s", args, err, out)
	}
}

// passwdCredential is a user name and password, and whether they should log in.
type passwdCredential struct {
	user, password string
	ok             bool
}

// checkWithMqttgw checks each passwdCredential against path with mqttgw's own
// reader.
func checkWithMqttgw(t *testing.T, path string, creds []passwdCredential) {
	t.Helper()
	p, err := auth.LoadPasswordFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range creds {
		if got := p.Check(c.user, c.password); got != c.ok {
			t.Errorf("mqttgw: Check(%q, %q) = %v, want %v", c.user, c.password, got, c.ok)
		}
	}
}

// TestPasswdFileAcceptedByMosquitto: users written by `mqttgw passwd` (batch,
// and from standard input) log in to a real Mosquitto using the file as its
// password_file, with allow_anonymous false; wrong passwords, deleted and
// unknown users are refused; mqttgw's own reader agrees.
func TestPasswdFileAcceptedByMosquitto(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "passwd")
	mustPasswd(t, "", "-c", "-b", path, "alice", "s3cret")
	mustPasswd(t, "", "-b", path, "bob smith", "pass with:colon and $dollar")
	mustPasswd(t, "jürgens pässwort\njürgens pässwort\n", path, "jürgen")
	mustPasswd(t, "", "-b", path, "dave", "gone soon")
	mustPasswd(t, "", "-D", path, "dave")
	mustPasswd(t, "", "-b", path, "alice", "changed") // in place

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "alice:$7$101$") || !strings.HasPrefix(lines[1], "bob smith:$7$101$") ||
		!strings.HasPrefix(lines[2], "jürgen:$7$101$") {
		t.Fatalf("file:\n%s", data)
	}

	creds := []passwdCredential{
		{"alice", "changed", true},
		{"alice", "s3cret", false},
		{"bob smith", "pass with:colon and $dollar", true},
		{"bob smith", "pass with", false},
		{"jürgen", "jürgens pässwort", true},
		{"dave", "gone soon", false},
		{"mallory", "s3cret", false},
	}
	checkWithMqttgw(t, path, creds)

	b := mosquittotest.Start(t, mosquittotest.Options{Extra: "password_file " + path})
	for _, c := range creds {
		err := b.PublishErr(t, mosquittotest.PubOptions{Username: c.user, Password: c.password, Topic: "t", Payload: []byte("x")})
		switch {
		case c.ok && err != nil:
			t.Errorf("mosquitto refuses %q with the right password: %v", c.user, err)
		case !c.ok && (err == nil || !strings.Contains(err.Error(), "not authorised")):
			t.Errorf("mosquitto with user %q, password %q: %v, want not authorised", c.user, c.password, err)
		}
	}
	if err := b.PublishErr(t, mosquittotest.PubOptions{Topic: "t", Payload: []byte("x")}); err == nil {
		t.Error("mosquitto lets an anonymous client in")
	}
}

// TestPasswdEditsMosquittoPasswdFile: a file made by the real
// mosquitto_passwd (both hash kinds) is read by mqttgw; `mqttgw passwd` adds,
// changes and deletes users in it, keeping the others' lines; and
// mosquitto_passwd can go on editing the result.
func TestPasswdEditsMosquittoPasswdFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "passwd")
	mosquittoPasswd(t, "-c", "-b", path, "alice", "s3cret")
	mosquittoPasswd(t, "-H", "sha512", "-b", path, "bob", "hunter2")
	mosquittoPasswd(t, "-b", path, "carol", "carol's")
	checkWithMqttgw(t, path, []passwdCredential{
		{"alice", "s3cret", true}, {"alice", "wrong", false},
		{"bob", "hunter2", true}, {"bob", "hunter", false},
		{"carol", "carol's", true}, {"carol", "", false},
	})
	before, _ := os.ReadFile(path)
	lines := strings.SplitAfter(string(before), "\n")

	mustPasswd(t, "", "-b", path, "dave", "d4ve")
	mustPasswd(t, "", "-b", path, "bob", "new bob")
	mustPasswd(t, "", "-D", path, "carol")
	after, _ := os.ReadFile(path)
	got := strings.SplitAfter(string(after), "\n")
	if len(got) != 4 || got[0] != lines[0] || !strings.HasPrefix(got[1], "bob:$7$101$") || !strings.HasPrefix(got[2], "dave:$7$") || got[3] != "" {
		t.Fatalf("before:\n%s\nafter:\n%s", before, after)
	}
	mosquittoPasswd(t, "-b", path, "erin", "erin's")
	mosquittoPasswd(t, "-D", path, "dave")
	checkWithMqttgw(t, path, []passwdCredential{
		{"alice", "s3cret", true},
		{"bob", "new bob", true}, {"bob", "hunter2", false},
		{"carol", "carol's", false},
		{"dave", "d4ve", false},
		{"erin", "erin's", true},
	})
}

// TestPasswdCreateAndDelete: -c makes a 0600 file and replaces an existing
// one; -D removes one user and refuses an unknown one, naming it; without -c
// the file must exist.
func TestPasswdCreateAndDelete(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "passwd")
	if code, _, errOut := runPasswd("", "-b", path, "alice", "pw"); code != 1 || !strings.Contains(errOut, "no such file") {
		t.Errorf("without -c on a missing file: exit %d, %q", code, errOut)
	}
	mustPasswd(t, "", "-c", "-b", path, "alice", "pw")
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("created file: %v, %v; want mode 0600", fi, err)
	}
	mustPasswd(t, "", "-b", path, "bob", "pw2")
	mustPasswd(t, "", "-c", "-b", path, "carol", "pw3")
	checkWithMqttgw(t, path, []passwdCredential{{"carol", "pw3", true}, {"alice", "pw", false}, {"bob", "pw2", false}})

	mustPasswd(t, "", "-b", path, "dave", "pw4")
	mustPasswd(t, "", "-D", path, "carol")
	checkWithMqttgw(t, path, []passwdCredential{{"carol", "pw3", false}, {"dave", "pw4", true}})
	code, _, errOut := runPasswd("", "-D", path, "mallory")
	if code != 1 || !strings.Contains(errOut, `unknown user "mallory"`) {
		t.Errorf("-D of an unknown user: exit %d, %q", code, errOut)
	}
	checkWithMqttgw(t, path, []passwdCredential{{"dave", "pw4", true}})
}

// TestPasswdFromStdin: without -b the password is read twice, one line each;
// the prompts go to standard error.
func TestPasswdFromStdin(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	code, out, errOut := runPasswd("s3cret\ns3cret\n", "-c", path, "alice")
	if code != 0 || out != "" || errOut != "Password: Reenter password: " {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	mustPasswd(t, "with spaces \r\nwith spaces \r\n", path, "bob") // CRLF is not part of it
	mustPasswd(t, "no newline\nno newline", path, "carol")         // nor a missing last newline
	checkWithMqttgw(t, path, []passwdCredential{
		{"alice", "s3cret", true},
		{"bob", "with spaces ", true},
		{"carol", "no newline", true},
	})
	for _, tt := range []struct{ name, stdin, want string }{
		{"mismatch", "one\ntwo\n", "passwords do not match"},
		{"one line", "one\n", "read password again: no line on standard input"},
		{"nothing", "", "read password: no line on standard input"},
		{"empty", "\n\n", "empty password"},
	} {
		code, _, errOut := runPasswd(tt.stdin, path, "dave")
		if code != 1 || !strings.Contains(errOut, tt.want) {
			t.Errorf("%s: exit %d, stderr %q, want %q", tt.name, code, errOut, tt.want)
		}
	}
	checkWithMqttgw(t, path, []passwdCredential{{"dave", "one", false}, {"alice", "s3cret", true}})
}

// TestPasswdUsage: wrong arguments print the usage to stderr with exit 2 and
// leave the file alone; --help prints it, with examples, to stdout.
func TestPasswdUsage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	mustPasswd(t, "", "-c", "-b", path, "alice", "pw")
	before, _ := os.ReadFile(path)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-b", path, "bob"}, "-b needs FILE, USER and PASSWORD"},
		{[]string{"-c", "-b", path, "bob"}, "-b needs FILE, USER and PASSWORD"},
		{[]string{path, "bob", "pw"}, "want FILE and USER"},
		{[]string{path}, "want FILE and USER"},
		{nil, "want FILE and USER"},
		{[]string{"-c", "-D", path, "alice"}, "-c and -D cannot be used together"},
		{[]string{"-b", "-D", path, "alice", "pw"}, "-b and -D cannot be used together"},
		{[]string{"-D", path, "alice", "extra"}, "want FILE and USER"},
		{[]string{"-x", path, "alice"}, "flag provided but not defined: -x"},
		{[]string{"-b", path, "a:b", "pw"}, `invalid user name "a:b": holds ':'`},
		{[]string{"-b", path, "a\tb", "pw"}, "holds a control character"},
		{[]string{"-b", path, "", "pw"}, "is empty"},
		{[]string{"-b", path, "#x", "pw"}, "starts with '#'"},
	} {
		code, out, errOut := runPasswd("pw\npw\n", tt.args...)
		if code != 2 || out != "" || !strings.Contains(errOut, tt.want) || !strings.Contains(errOut, "usage: mqttgw passwd") {
			t.Errorf("mqttgw passwd %q: exit %d, stdout %q, stderr %q; want 2 and %q with the usage", tt.args, code, out, errOut, tt.want)
		}
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
		t.Errorf("a usage error changed the file")
	}
	if code, out, errOut := runCLI("passwd", "--help"); code != 0 || errOut != "" ||
		!strings.HasPrefix(out, "usage: mqttgw passwd [-c] [-b] [-D] FILE USER [PASSWORD]") || !strings.Contains(out, "Examples:\n  mqttgw passwd -c ") {
		t.Errorf("--help: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, out, _ := runCLI("--help"); code != 0 || !strings.Contains(out, "mqttgw passwd [-c] [-b] [-D] FILE USER [PASSWORD]") {
		t.Errorf("mqttgw --help does not list passwd: %q", out)
	}
	if code, _, errOut := runCLI("passwd"); code != 2 || !strings.Contains(errOut, "usage: mqttgw passwd") {
		t.Errorf("mqttgw passwd without arguments: exit %d, %q", code, errOut)
	}
}
