package auth

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// maxIterations bounds a $7$ hash's PBKDF2 iterations, so a hostile file cannot
// make each check take minutes; mosquitto_passwd writes 101 (Mosquitto 2.0) or up
// to 1000 (2.1).
const maxIterations = 1_000_000

// Passwords checks user names and passwords against a mosquitto_passwd file.
type Passwords struct {
	users map[string]hash
	// dummy is checked for unknown users: the kind and iterations most users
	// of the file have, so that an unknown user costs as much time as a wrong
	// password and user names cannot be told apart by timing.
	dummy hash
}

type hash struct {
	kind       byte // '6' salted SHA-512, '7' PBKDF2-SHA512
	iterations int
	salt, sum  []byte
}

// LoadPasswordFile reads a password file.
func LoadPasswordFile(path string) (*Passwords, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return ParsePasswords(path, bytes.NewReader(data))
}

// ParsePasswords reads `username:hash` lines; name is used in errors.
func ParsePasswords(name string, r io.Reader) (*Passwords, error) {
	p := &Passwords{users: map[string]hash{}}
	err := eachEntry(name, r, func(user, value string) error {
		h, err := parseHash(value)
		if err != nil {
			return fmt.Errorf("user %q: %w", user, err)
		}
		if _, dup := p.users[user]; dup {
			return fmt.Errorf("%w: user %q", ErrDuplicate, user)
		}
		p.users[user] = h
		return nil
	})
	if err != nil {
		return nil, err
	}
	p.dummy = dummyFor(p.users)
	return p, nil
}

// dummyFor returns a hash that no password matches, costing what the most
// common kind and iteration count among users cost (ties: the costlier);
// mosquitto_passwd 2.0's $7$ with 101 iterations when there are no users.
func dummyFor(users map[string]hash) hash {
	type cost struct {
		kind       byte
		iterations int
	}
	count := map[cost]int{}
	best, n := cost{'7', defaultIterations}, 0
	for _, h := range users {
		c := cost{h.kind, h.iterations}
		count[c]++
		if m := count[c]; m > n || (m == n && (c.kind > best.kind || c.kind == best.kind && c.iterations > best.iterations)) {
			best, n = c, m
		}
	}
	// All-zero sum: PBKDF2 and SHA-512 outputs are never all zero in practice,
	// and Check requires the user to exist anyway.
	return hash{kind: best.kind, iterations: best.iterations, salt: make([]byte, saltLen), sum: make([]byte, sha512.Size)}
}

// parseHash reads "$6$salt$hash" or "$7$iterations$salt$hash" (Mosquitto 2.0,
// mosquitto_passwd(1)); salt and hash are standard base64.
func parseHash(s string) (hash, error) {
	parts := strings.Split(s, "$")
	if len(parts) < 2 || parts[0] != "" {
		return hash{}, fmt.Errorf("%w: hash does not start with $6$ or $7$", ErrMalformed)
	}
	var h hash
	var salt, sum string
	switch {
	case parts[1] == "6" && len(parts) == 4:
		h.kind, salt, sum = '6', parts[2], parts[3]
	case parts[1] == "7" && len(parts) == 5:
		n, err := strconv.Atoi(parts[2])
		if err != nil || n < 1 || n > maxIterations {
			return hash{}, fmt.Errorf("%w: $7$ iterations %q: want 1..%d", ErrMalformed, parts[2], maxIterations)
		}
		h.kind, h.iterations, salt, sum = '7', n, parts[3], parts[4]
	case parts[1] == "6" || parts[1] == "7":
		return hash{}, fmt.Errorf("%w: $%s$ hash has %d fields", ErrMalformed, parts[1], len(parts)-1)
	default:
		return hash{}, fmt.Errorf("%w: unknown hash type $%s$ (want $6$ or $7$)", ErrMalformed, parts[1])
	}
	var err error
	if h.salt, err = base64.StdEncoding.DecodeString(salt); err != nil || len(h.salt) == 0 {
		return hash{}, fmt.Errorf("%w: salt is not base64", ErrMalformed)
	}
	if h.sum, err = base64.StdEncoding.DecodeString(sum); err != nil || len(h.sum) != sha512.Size {
		return hash{}, fmt.Errorf("%w: hash is not %d bytes of base64", ErrMalformed, sha512.Size)
	}
	return h, nil
}

// Check reports whether password is user's. The hashes are compared in
// constant time, and an unknown user is checked against a dummy hash costing
// what most users' hashes cost, so neither the password nor whether the user
// exists shows in how long Check takes.
func (p *Passwords) Check(user, password string) bool {
	if p == nil {
		return false
	}
	h, ok := p.users[user]
	if !ok {
		h = p.dummy
	}
	var sum []byte
	switch h.kind {
	case '6':
		// Mosquitto: SHA-512 over the password, then the salt.
		d := sha512.New()
		d.Write([]byte(password))
		d.Write(h.salt)
		sum = d.Sum(nil)
	case '7':
		var err error
		sum, err = pbkdf2.Key(sha512.New, password, h.salt, h.iterations, sha512.Size)
		if err != nil {
			return false
		}
	}
	return subtle.ConstantTimeCompare(sum, h.sum) == 1 && ok
}

// Has reports whether user is in the file (without checking a password): an
// MQTT-SN CONNECT carries a client id and no password, so require_known_client
// can ask only this.
func (p *Passwords) Has(user string) bool {
	if p == nil {
		return false
	}
	_, ok := p.users[user]
	return ok
}

// Len counts the users.
func (p *Passwords) Len() int {
	if p == nil {
		return 0
	}
	return len(p.users)
}
