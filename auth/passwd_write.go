package auth

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"
)

// What mosquitto_passwd 2.0 writes (apps/mosquitto_passwd/mosquitto_passwd.c,
// common/password_mosq.c): PW_DEFAULT_ITERATIONS, SALT_LEN, and its limit on
// user names and passwords.
const (
	defaultIterations = 101
	saltLen           = 12
	maxCredentialLen  = 65535
)

// newFileMode is the mode of a password file WritePasswordFile creates: only
// its owner may read the hashes.
const newFileMode = 0o600

// HashPassword returns password's hash as Mosquitto 2.0's mosquitto_passwd
// writes it: "$7$101$SALT$HASH", PBKDF2-HMAC-SHA512 with 101 iterations over a
// random 12-byte salt, a 64-byte key, salt and key in standard base64 with
// padding. Mosquitto (password_file) and ParsePasswords both accept it.
func HashPassword(password string) (string, error) {
	if len(password) > maxCredentialLen {
		return "", fmt.Errorf("auth: password longer than %d bytes", maxCredentialLen)
	}
	salt := make([]byte, saltLen)
	rand.Read(salt) // never fails (crypto/rand, Go 1.24)
	return hashWithSalt(password, salt, defaultIterations)
}

// hashWithSalt is HashPassword with a given salt and iteration count.
func hashWithSalt(password string, salt []byte, iterations int) (string, error) {
	sum, err := pbkdf2.Key(sha512.New, password, salt, iterations, sha512.Size)
	if err != nil {
		return "", fmt.Errorf("auth: hash password: %w", err)
	}
	enc := base64.StdEncoding
	return "$7$" + strconv.Itoa(iterations) + "$" + enc.EncodeToString(salt) + "$" + enc.EncodeToString(sum), nil
}

// CheckUsername reports why user cannot be written to a password file, or nil.
// Like mosquitto_passwd it refuses ':' (it ends the name), control characters
// and names over 65535 bytes. It also refuses what mosquitto_passwd lets
// through but no one could log in as, or the two readers would disagree on: an
// empty name, one starting with '#' (a comment line), one starting or ending
// with a space (Mosquitto trims them, ParsePasswords does not), and one that is
// not UTF-8 (MQTT user names are UTF-8 strings).
func CheckUsername(user string) error {
	why := ""
	switch {
	case user == "":
		why = "is empty"
	case len(user) > maxCredentialLen:
		why = fmt.Sprintf("is longer than %d bytes", maxCredentialLen)
	case strings.Contains(user, ":"):
		why = "holds ':'"
	case strings.IndexFunc(user, isControl) >= 0:
		why = "holds a control character"
	case !utf8.ValidString(user):
		why = "is not UTF-8"
	case user[0] == '#':
		why = "starts with '#' (a comment)"
	case user[0] == ' ' || user[len(user)-1] == ' ':
		why = "starts or ends with a space"
	default:
		return nil
	}
	return fmt.Errorf("auth: %w %.80q: %s", ErrBadUsername, user, why)
}

// isControl is C's iscntrl in the C locale, which mosquitto_passwd applies to
// each byte of a user name.
func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// PasswordFile is the text of a password file being edited. Set and Delete
// change one user's line; every other line (users, comments, blank lines, line
// endings) stays as it was, in order. A PasswordFile always holds a file that
// ParsePasswords accepts.
type PasswordFile struct {
	name  string
	lines []string // each with its "\n", except perhaps the last
}

// NewPasswordFile starts editing data, a password file's text (nil for a new
// file); name is used in errors. It refuses a file ParsePasswords refuses, so
// that an edit never hides a broken line.
func NewPasswordFile(name string, data []byte) (*PasswordFile, error) {
	if _, err := ParsePasswords(name, bytes.NewReader(data)); err != nil {
		return nil, err
	}
	return &PasswordFile{name: name, lines: strings.SplitAfter(string(data), "\n")}, nil
}

// Set gives user the password hash (from HashPassword; "$6$" and "$7$" hashes
// are accepted): it replaces user's line where it is, or appends one.
func (f *PasswordFile) Set(user, hash string) error {
	if err := CheckUsername(user); err != nil {
		return err
	}
	if _, err := parseHash(hash); err != nil {
		return fmt.Errorf("auth: user %q: %w", user, err)
	}
	line := user + ":" + hash
	if i := f.find(user); i >= 0 {
		f.lines[i] = line + lineEnding(f.lines[i])
		return nil
	}
	// Append, ending the line as the file's lines end.
	eol := "\n"
	if len(f.lines) > 1 && lineEnding(f.lines[len(f.lines)-2]) == "\r\n" {
		eol = "\r\n"
	}
	if last := len(f.lines) - 1; f.lines[last] == "" {
		f.lines[last] = line + eol
	} else { // the last line has no newline yet
		f.lines[last] += eol
		f.lines = append(f.lines, line+eol)
	}
	return nil
}

// Delete removes user's line. A user not in the file is an error wrapping
// ErrUnknownUser.
func (f *PasswordFile) Delete(user string) error {
	i := f.find(user)
	if i < 0 {
		return fmt.Errorf("auth: %s: %w %q", f.name, ErrUnknownUser, user)
	}
	f.lines = append(f.lines[:i], f.lines[i+1:]...)
	if len(f.lines) == 0 {
		f.lines = []string{""}
	}
	return nil
}

// Bytes returns the file's text.
func (f *PasswordFile) Bytes() []byte {
	return []byte(strings.Join(f.lines, ""))
}

// find returns the index of user's line, or -1. It reads lines as eachEntry
// does (which ParsePasswords used to accept the file, so the name is there at
// most once).
func (f *PasswordFile) find(user string) int {
	for i, l := range f.lines {
		// bufio.ScanLines drops "\n" and then one "\r"; eachEntry another "\r".
		l = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(l, "\n"), "\r"), "\r")
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if name, _, _ := strings.Cut(l, ":"); name == user {
			return i
		}
	}
	return -1
}

// lineEnding returns the "\n" or "\r\n" that line ends with, or "".
func lineEnding(line string) string {
	switch {
	case strings.HasSuffix(line, "\r\n"):
		return "\r\n"
	case strings.HasSuffix(line, "\n"):
		return "\n"
	}
	return ""
}

// UpdatePasswordFile edits the password file at path with edit and writes it
// back with WritePasswordFile. With create it starts from an empty file,
// replacing path if it exists (mosquitto_passwd -c); without, path must exist
// and parse. Nothing is written when edit fails.
func UpdatePasswordFile(path string, create bool, edit func(*PasswordFile) error) error {
	var data []byte
	if !create {
		var err error
		if data, err = readFile(path); err != nil {
			return err
		}
	}
	f, err := NewPasswordFile(path, data)
	if err != nil {
		return err
	}
	if err := edit(f); err != nil {
		return err
	}
	return WritePasswordFile(path, f.Bytes())
}

// WritePasswordFile replaces the file at path with data atomically: it writes
// a temporary file beside it, syncs it and renames it over path, so a broker
// or gateway reading the file sees the old one or the new one, never a part.
// A symbolic link is followed and its target replaced. An existing file keeps
// its permission bits and, where the system has them, its owner and group
// (mosquitto_passwd rewrites the file in place, which keeps them too); a new
// one is created with mode 0600.
func WritePasswordFile(path string, data []byte) error {
	target := path
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if target, err = filepath.EvalSymlinks(path); err != nil {
			return fmt.Errorf("auth: %w", err)
		}
	}
	old, err := os.Stat(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		old = nil
	case err != nil:
		return fmt.Errorf("auth: %w", err)
	case !old.Mode().IsRegular():
		return fmt.Errorf("auth: %s: not a regular file", target)
	}
	tmp, err := os.CreateTemp(filepath.Dir(target), "."+filepath.Base(target)+".*.tmp")
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	renamed := false
	defer func() {
		if !renamed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	mode := fs.FileMode(newFileMode)
	if old != nil {
		mode = old.Mode().Perm()
		if err := keepOwner(tmp, old); err != nil {
			return fmt.Errorf("auth: %s: keep owner and group: %w", target, err)
		}
	}
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	if err := os.Rename(tmp.Name(), target); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	renamed = true
	// Make the rename itself durable; a failure here leaves the new file in
	// place, so it is not reported.
	if d, err := os.Open(filepath.Dir(target)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
