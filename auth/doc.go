// Package auth reads device credentials in Mosquitto's own file formats, so one
// set of files serves the broker and the gateway:
//
//   - the PSK file (Mosquitto's psk_file): `identity:hexkey` lines, for DTLS PSK
//     (coaps listeners);
//   - the password file written by mosquitto_passwd: `username:hash` lines with
//     `$6$salt$hash` (salted SHA-512) or `$7$iterations$salt$hash` (PBKDF2-SHA512)
//     hashes, salt and hash in base64.
//
// In both, blank lines and lines starting with '#' are skipped, and a malformed
// line is an error naming its line number — never a user.
//
// It starts no goroutines and does no I/O after loading: PSKs and Passwords are
// immutable and safe for concurrent use.
package auth
