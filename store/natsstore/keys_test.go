package natsstore

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/mqttgw/mqttgw/store"
)

// kvKeyRE is nats.go's rule for a valid key-value key (jetstream/kv.go,
// validKeyRe), with the '.'-separated tokens JetStream's subjects need.
var kvKeyRE = regexp.MustCompile(`^[-/_=a-zA-Z0-9]+(\.[-/_=a-zA-Z0-9]+)*$`)

func TestKVKey(t *testing.T) {
	for _, tc := range []struct {
		name, key, want string
	}{
		{"plain", "c1", "session.YzE"},
		{"dots_and_wildcards", "a.*>", "session.YS4qPg"},
		{"zero_byte", "\x00", "session.AA"},
		{"high_bytes", "\xff\xfe", "session.__4"}, // base64url's _ for /
		{"longest_inline", strings.Repeat("k", inlineKeyMax), "session." + b64.EncodeToString([]byte(strings.Repeat("k", inlineKeyMax)))},
		{"hashed", strings.Repeat("k", inlineKeyMax+1), "session.=wTI_CFRlikKF2MMME9XC91jm2HiA-LeB7gEQl6njyqg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, hashed := kvKey(store.KindSession, tc.key)
			if got != tc.want {
				t.Fatalf("kvKey = %q, want %q", got, tc.want)
			}
			if hashed != (len(tc.key) > inlineKeyMax) {
				t.Fatalf("hashed = %v for %d octets", hashed, len(tc.key))
			}
			checkKVKey(t, []byte(tc.key))
		})
	}
	// Every kind's name is a valid first token.
	for _, k := range store.Kinds() {
		if kv, _ := kvKey(k, "x"); !kvKeyRE.MatchString(kv) {
			t.Errorf("%s: key %q", k, kv)
		}
	}
}

// checkKVKey checks that key's KV key is valid, short, and gives key back:
// by itself when inline, through the envelope when hashed.
func checkKVKey(t *testing.T, key []byte) {
	t.Helper()
	kv, hashed := kvKey(store.KindMQTTSNSession, string(key))
	if !kvKeyRE.MatchString(kv) || strings.Count(kv, ".") != 1 {
		t.Fatalf("key %q: KV key %q is not one kind and one valid token", key, kv)
	}
	if len(kv) > len(store.KindMQTTSNSession.String())+1+1024 {
		t.Fatalf("key of %d octets: KV key of %d", len(key), len(kv))
	}
	kind, back, inline, err := parseKVKey(kv)
	if err != nil || kind != store.KindMQTTSNSession.String() || inline == hashed {
		t.Fatalf("parseKVKey(%q) = %q, %q, %v, %v", kv, kind, back, inline, err)
	}
	if inline {
		if back != string(key) {
			t.Fatalf("inline key %q came back as %q", key, back)
		}
		return
	}
	value := []byte("value")
	env, err := appendEnvelope(nil, string(key), value)
	if err != nil {
		t.Fatal(err)
	}
	k, v, err := parseEnvelope(env)
	if err != nil || k != string(key) || !bytes.Equal(v, value) {
		t.Fatalf("envelope of %d-octet key: %d octets, %q, %v", len(key), len(k), v, err)
	}
}

func TestParseKVKeyRefuses(t *testing.T) {
	for _, kv := range []string{
		"session",     // no token
		"session.",    // empty token
		"session.!!",  // not base64url
		"session.YQ=", // padding: not raw base64url
		"session.a",   // a lone base64 digit is no whole octet
	} {
		if _, _, _, err := parseKVKey(kv); err == nil {
			t.Errorf("parseKVKey(%q) accepted", kv)
		}
	}
	for _, env := range [][]byte{nil, {0}, {2, 0, 0, 0, 0, 0, 0}, {1, 0, 1}, {1, 0, 0, 0, 0, 0, 0, 0}} {
		if _, _, err := parseEnvelope(env); err == nil {
			t.Errorf("parseEnvelope(%x) accepted", env)
		}
	}
}

// FuzzKVKey: every store key maps to a valid KV key of bounded length that
// gives the key back.
func FuzzKVKey(f *testing.F) {
	f.Add([]byte("c1"))                                // a client id
	f.Add([]byte("sn:client/with.dots*and>wildcards")) // subject metacharacters
	f.Add([]byte{0, 0xff, '.', ' ', '\n'})             // control and high octets
	f.Add(bytes.Repeat([]byte{'k'}, inlineKeyMax))     // the longest inline key
	f.Add(bytes.Repeat([]byte{0xff}, inlineKeyMax+1))  // the shortest hashed key
	f.Fuzz(func(t *testing.T, key []byte) {
		if len(key) == 0 || len(key) > store.MaxKeyLen {
			return
		}
		checkKVKey(t, key)
	})
}

func TestVersionAtLeast(t *testing.T) {
	for v, want := range map[string]bool{
		"2.12.0": true, "2.15.3": true, "v2.12.1": true, "3.0.0": true, "2.13.0-beta.1": true,
		"2.11.9": false, "2.9.10": false, "1.99.0": false, "": false, "2": false, "x.y.z": false,
	} {
		if got := versionAtLeast(v, 2, 12); got != want {
			t.Errorf("versionAtLeast(%q, 2, 12) = %v, want %v", v, got, want)
		}
	}
}
