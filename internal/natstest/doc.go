// Package natstest runs a real NATS cluster with JetStream for integration
// tests: by default three nats-server processes routed to each other, the
// smallest cluster in which replicated streams and key-value buckets survive
// the loss of one node.
//
// Start writes one config per node into t.TempDir() (client, route and
// monitoring listeners on free ports of 127.0.0.1, a JetStream store
// directory, and the user, token or TLS settings asked for), starts the
// nodes and returns once every node's /healthz answers 200: listening,
// routed, and its JetStream current with an elected meta leader. Nothing
// listens anywhere but 127.0.0.1; a nats-server system service is never
// used.
//
// # Processes and goroutines
//
// Each running node is one nats-server process and one goroutine that waits
// for it. Cluster.Kill (SIGKILL) and Cluster.Stop (SIGTERM, then SIGKILL
// after a bound) end both and return after the process exited; Start
// registers a cleanup that stops every node, and one that logs the nodes'
// logs via t.Log when the test failed. Cluster.Restart starts a node again on
// the same ports with the same store. Children are also sent SIGKILL if the
// test binary dies (Pdeathsig, Linux). The health probes use short-lived
// HTTP connections, closed before the call returns.
//
// # Ordering and blocking
//
// Every wait is bounded (start, health, stop) and polls: no fixed sleeps.
// Methods call t.Fatal on failure and must be called from the goroutine
// running the test given to Start.
//
// # The server
//
// The tests need nats-server MinVersion or newer (atomic batch publish,
// per-message TTL): the one named by $MQTTGW_NATS_SERVER, else the first of
// PATH and /usr/local/bin that is new enough. Debian 12's package (2.9.10) is
// too old; scripts/install-test-deps.sh builds the server from its Go module.
// A missing or too old server skips the test, except in CI (CI=true), where
// it fails it.
package natstest
