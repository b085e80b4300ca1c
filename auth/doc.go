// Package auth reads device credentials and access rules in Mosquitto's own file
// formats, so one set of files serves the broker and the gateway:
//
//   - the PSK file (Mosquitto's psk_file): `identity:hexkey` lines, for DTLS PSK
//     (coaps listeners);
//   - the password file written by mosquitto_passwd: `username:hash` lines with
//     `$6$salt$hash` (salted SHA-512) or `$7$iterations$salt$hash` (PBKDF2-SHA512)
//     hashes, salt and hash in base64;
//   - the ACL file (Mosquitto's acl_file): `topic`, `user` and `pattern` lines
//     saying which topics each device may publish to (Write) and subscribe to
//     (Read); see ACL for the rules and where they differ from Mosquitto's.
//
// In all, blank lines and lines starting with '#' are skipped, and a malformed
// line is an error naming its line number — never a user, key or rule.
//
// It also writes password files as mosquitto_passwd does (HashPassword,
// PasswordFile, UpdatePasswordFile: `mqttgw passwd`), and limits failed
// authentications per source address (FailureLimiter).
//
// It starts no goroutines and does no I/O after loading: PSKs, Passwords and ACL
// are immutable and safe for concurrent use; a FailureLimiter is mutable, safe
// for concurrent use, and takes the time as an argument. Only the Load*,
// UpdatePasswordFile and WritePasswordFile functions touch files.
package auth
