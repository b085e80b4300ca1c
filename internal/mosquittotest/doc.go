// Package mosquittotest runs a real Mosquitto broker, and real
// mosquitto_sub and mosquitto_pub clients, for integration tests.
//
// Start writes a mosquitto.conf (and password, ACL and TLS files when asked)
// into t.TempDir(), starts mosquitto on a free port of 127.0.0.1 and returns
// once the broker accepts connections (for TLS: once a full handshake that
// verifies the generated CA succeeds). Nothing listens anywhere but
// 127.0.0.1; a Mosquitto system service on port 1883 is never used.
//
// # Processes and goroutines
//
//   - Start and Restart start one mosquitto process and one goroutine that
//     waits for it. Broker.Stop ends both: SIGTERM, then SIGKILL if the
//     process has not exited after a bound. Broker.Kill ends both with
//     SIGKILL at once, as a crash would. Start registers Stop with
//     t.Cleanup, and a cleanup that logs the broker's log via t.Log when the
//     test failed.
//   - Broker.Subscribe starts one mosquitto_sub process (under stdbuf, so that
//     its piped output is line buffered), one goroutine that waits for it and
//     one goroutine that reads its output. Sub.Close ends all three and
//     returns after they exit; Subscribe registers Close with t.Cleanup, so
//     subscribers stop before their broker does.
//   - Broker.Publish runs mosquitto_pub to completion; nothing outlives the
//     call.
//
// Children are also sent SIGKILL if the test binary dies (Pdeathsig, Linux).
//
// # Ordering and blocking
//
// Every wait is bounded: broker readiness, SUBACK, stop and publish each have
// a timeout, and Sub.Next and Sub.Poll take one. Messages of one Sub arrive
// in the order mosquitto_sub printed them. A Sub buffers up to a fixed number of
// unread messages; past that the test fails on the next read rather than
// blocking mosquitto_sub.
//
// Methods that take a testing.TB call t.Fatal on failure and must be called
// from the goroutine running that test. Broker.Restart fails the test given
// to Start.
//
// The tools come from Debian's mosquitto, mosquitto-clients and coreutils
// packages; scripts/install-test-deps.sh installs them. A missing tool fails
// the test, it is never skipped.
package mosquittotest
