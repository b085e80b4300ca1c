package auth

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
)

// maxPSK bounds a key: DTLS allows 2^16-1 octets (RFC 4279 §5.3); real ones are
// 16 to 64.
const maxPSK = 1024

// PSKs maps DTLS PSK identities to keys (Mosquitto's psk_file).
type PSKs struct {
	keys map[string][]byte
}

// LoadPSKFile reads a PSK file.
func LoadPSKFile(path string) (*PSKs, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return ParsePSKs(path, bytes.NewReader(data))
}

// ParsePSKs reads `identity:hexkey` lines; name is used in errors.
func ParsePSKs(name string, r io.Reader) (*PSKs, error) {
	p := &PSKs{keys: map[string][]byte{}}
	err := eachEntry(name, r, func(id, value string) error {
		if value == "" {
			return fmt.Errorf("%w: identity %q has an empty key", ErrMalformed, id)
		}
		key, err := hex.DecodeString(value)
		if err != nil {
			return fmt.Errorf("%w: identity %q: key is not hexadecimal: %v", ErrMalformed, id, err)
		}
		if len(key) > maxPSK {
			return fmt.Errorf("%w: identity %q: key longer than %d bytes", ErrMalformed, id, maxPSK)
		}
		if _, dup := p.keys[id]; dup {
			return fmt.Errorf("%w: identity %q", ErrDuplicate, id)
		}
		p.keys[id] = key
		return nil
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Key returns the key of identity; the caller must not modify it.
func (p *PSKs) Key(identity string) ([]byte, bool) {
	if p == nil {
		return nil, false
	}
	k, ok := p.keys[identity]
	return k, ok
}

// Len counts the identities.
func (p *PSKs) Len() int {
	if p == nil {
		return 0
	}
	return len(p.keys)
}
