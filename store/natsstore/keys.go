package natsstore

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/mqttgw/mqttgw/store"
)

// State keys. A store key is any byte string of 1 to store.MaxKeyLen octets;
// a JetStream key-value key is a subject: tokens of [-/_=.A-Za-z0-9]
// separated by '.', and the whole subject travels on the NATS protocol's
// control line (4 KiB by default). So each record's KV key is its kind's name
// and one more token:
//
//	<kind>.<base64url(key)>        key of at most inlineKeyMax octets
//	<kind>.=<base64url(sha256(key))>  longer keys
//
// Base64url without padding (RFC 4648 §5) uses only [-_A-Za-z0-9], and never
// '=', which marks the hashed form. The inline form is reversible by itself;
// a hashed key's record carries the key in front of its value (see
// appendEnvelope), so every form gives back the store key when read. Range
// sorts the decoded keys, since neither form keeps the keys' byte order.

// inlineKeyMax is the longest key kept inline: its token is at most 1 024
// octets, which keeps every subject well inside the control line.
const inlineKeyMax = 768

// hashedMark starts a hashed key's token.
const hashedMark = "="

var b64 = base64.RawURLEncoding

// kvKey returns key's KV key under kind, and whether it is hashed (its value
// then needs the envelope). The caller has checked key's length.
func kvKey(kind store.Kind, key string) (kv string, hashed bool) {
	return kvKeyIn(kind.String(), key)
}

// kvKeyIn is kvKey under any prefix: a kind's name, or one of the fleet's
// own (owner.go), which no kind's name equals.
func kvKeyIn(prefix, key string) (kv string, hashed bool) {
	if len(key) <= inlineKeyMax {
		return prefix + "." + b64.EncodeToString([]byte(key)), false
	}
	sum := sha256.Sum256([]byte(key))
	return prefix + "." + hashedMark + b64.EncodeToString(sum[:]), true
}

// parseKVKey splits a KV key (without the bucket's subject prefix) into its
// kind's name and token; inline tells the token's form, and for an inline
// token key is the store key.
func parseKVKey(kv string) (kind, key string, inline bool, err error) {
	kind, tok, ok := strings.Cut(kv, ".")
	if !ok || tok == "" {
		return "", "", false, fmt.Errorf("key %q: no kind and token: %w", kv, store.ErrCorrupt)
	}
	if strings.HasPrefix(tok, hashedMark) {
		return kind, "", false, nil
	}
	k, err := b64.DecodeString(tok)
	if err != nil || len(k) == 0 {
		return "", "", false, fmt.Errorf("key %q: not base64url: %w", kv, store.ErrCorrupt)
	}
	return kind, string(k), true, nil
}

// envelopeVersion is the version of a hashed key's record.
const envelopeVersion = 1

// appendEnvelope appends the record stored under a hashed key: the store key
// and the value, in the store package's record format.
//
//	0      version = 1
//	1-2    key length K (Uint16), then K octets
//	...    value: Uint32 length + octets
func appendEnvelope(buf []byte, key string, value []byte) ([]byte, error) {
	e := store.NewEncoder(buf, envelopeVersion)
	e.Str(key)
	e.Bytes(value)
	return e.Finish()
}

// parseEnvelope decodes appendEnvelope's record.
func parseEnvelope(b []byte) (key string, value []byte, err error) {
	d := store.NewDecoder(b, envelopeVersion)
	key = d.Str()
	value = d.Bytes()
	if err := d.Finish(); err != nil {
		return "", nil, fmt.Errorf("hashed key record: %w: %w", store.ErrCorrupt, err)
	}
	if value == nil {
		value = []byte{}
	}
	return key, value, nil
}
