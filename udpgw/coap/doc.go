// Package coap is the CoAP (RFC 7252) and CoAP-over-DTLS (§9, "coaps") listener,
// on go-coap/v3: the gateway's only importer of go-coap.
//
// Resources: POST or PUT /ps/{topic...} publishes the payload (query qos, retain;
// Confirmable → QoS 1, Non-confirmable → QoS 0), answered 2.04 only after the
// broker acknowledged a QoS ≥ 1 publish, 5.03 with Max-Age when it is away.
// GET /ps/{topic} reads the retained or last value (2.05, 4.04); with Observe 0 it
// registers an observation (RFC 7641) backed by an MQTT subscription, ended by
// Observe 1, by a RST, or by a Confirmable notification never acknowledged.
// Bodies travel block-wise (RFC 7959) up to Options.MaxPayload, 4.13 above.
// Devices are named by their DTLS PSK identity, else the query's c, else their
// source address; credentials come from the PSK or the query (u, p or t).
//
// # Construction
//
// New takes the udpgw.Env every engine takes (name, logger, metrics registry,
// clock, broker, device registry) and this package's Options. The engine reads
// time only through Env.Now (go-coap's own timers excepted) and counts into
// Env.Metrics as mqttgw_coap_*{listener}.
//
// # Device state and go-coap's connections
//
// The device registry (package session) owns each device's record: its
// identity, class, keepalive, liveness and last address. The engine keeps only
// protocol state — a device's observations (token, sequence, queue) and the
// go-coap connection of its last request — keyed by the device's name, and
// finds the device last seen at an address through Env.Sessions.ByPeer. The
// first valid request of a device creates its session (Sessions.Touch; the
// gateway's Created hook sets its class, which may override its keepalive, and
// publishes its birth), every request touches it, and an ACK or RST to a
// notification refreshes it (Sessions.Refresh, which never creates one). The
// engine never sets a session's keepalive: Options.Keepalive is the listener's
// default, which the gateway gives the registry. When the gateway's driver
// expires a session after its keepalive × 1.5 of silence, the registry calls
// SessionEnded (the engine is the listener's session.Owner): the device's
// observations end, its broker subscriptions go, and it is forgotten unless it
// came back meanwhile. So a device that changes address or port (NAT rebinding)
// keeps its observations, and notifications follow its session's address: where
// its latest request (or acknowledgement) came from.
//
// go-coap keeps one connection per peer (per address for plain CoAP, per DTLS
// session for coaps) holding message-layer state only. A plain CoAP address
// gets one only once it has proven that it receives there (unproven.go): it
// echoed an Echo option value (RFC 9175) or the Message ID of a CoAP ping or
// a Confirmable notification the gateway sent it. Until then the address is
// an entry of a bounded, short-lived udpgw.Sources table (anti-amplification
// budget of 3 × what it sent, rate limit, last Message ID), its requests are
// served without a connection, its answers and notifications go out only
// within its budget (4.01 with an Echo option otherwise), a plain GET leaves
// no state, and an observation whose address does not prove itself within
// UnprovenTTL ends. A coaps peer is proven by its DTLS handshake (the cookie):
// no budget there. go-coap's own
// inactivity (16 s by default) no longer ends anything: a plain CoAP
// connection is closed after ConnIdle (EXCHANGE_LIFETIME) and recreated when a
// notification is due; a DTLS session lives ConnIdle (Keepalive × 1.5). No
// CoAP ping keepalive is sent: a sleepy device could not answer it.
//
// # Restarts
//
// With Options.State (the gateway's store), every observation is kept there
// (persist.go, record.go), and Serve restores them before it reads a
// datagram: after a crash (even kill -9) and a restart an observer whose
// device's session the gateway restored (store.KindSession) goes on being
// notified, with the same token, at its device's address, with Observe
// numbers above all it was sent (RFC 7641 §3.4, §4.4); its subscription is
// made again at the broker. The registration response waits for the record's
// commit.
//
// # Transparent mode
//
// When env.Broker is also a udpgw.Connector (the gateway's listener in
// transparent mode), every device reaches the broker over a connection of its
// own, made with its own credentials (the query's u and p; a coaps device's
// PSK identity as user name; none for a device that gave none) when its
// session's first request is served, on that request's goroutine, and closed
// when the session ends. Clean session always (CoAP has no session flag), no
// will (a class's will stays the gateway's). The broker refusing the identity
// is 4.01, the broker away or the connection limit 5.03 with Max-Age; a plain
// CoAP source that has not proven its address opens none (4.01 with Echo
// first). Details in transparent.go.
//
// # Goroutines
//
//   - Serve's caller reads the plain CoAP socket (readUDP); for coaps, go-coap's
//     DTLS server accepts on it and runs one goroutine per DTLS session that
//     reads it. Close (or the end of Serve's context) stops them.
//   - go-coap runs one handler-loop goroutine per connection; Close (and the idle
//     expiry) cancel it. Every handler call is counted in the listener's
//     WaitGroup, so Close returns after the last one.
//   - expirePeers (plain CoAP) or go-coap's periodic runner (coaps), one each,
//     expire idle connections every 2 s (expirePeers also expires unproven
//     sources and ends the observations of addresses that never proved
//     themselves); Close stops it.
//   - One pump goroutine per device with notifications waiting, exiting when the
//     queue is empty (a pump whose notification does not fit an unproven
//     address's budget waits for the address's proof, a bounded time);
//     short-lived goroutines unsubscribe the broker after an observation ended
//     off a handler, or after SessionEnded (called on the gateway's driver
//     goroutine, which it never makes wait for the broker), and close an ended
//     session's broker connection (transparent mode). Close waits for all of
//     them.
//   - One goroutine per request of an unproven source being served (a publish
//     may wait for the broker), at most maxUnprovenInflight at once and
//     maxInflight per source; Close waits for them.
//   - With Options.State, one writer goroutine committing observation
//     records, started by Serve and stopped by Close (Serve then writes what
//     is left), and at start one short-lived goroutine per restored device's
//     filter, subscribing it again at the broker.
//
// # Ordering and blocking
//
// A reader never waits for a handler: the monitor admits at most maxInflight
// requests per peer into go-coap's queue (sized for them) and drops the rest;
// ACK and RST are consumed by the monitor. Handlers may wait for the broker (a
// QoS 1 publish) — one peer at a time, never the reader. The broker's delivery
// callback only queues (ObserverQueue per observation, drop-oldest, counted)
// and starts the device's pump; a pump sends one notification at a time and
// waits for a Confirmable one's ACK, so a slow observer delays only itself.
// Notifications of one observation leave in order with rising Observe numbers,
// after the registration response.
//
// Lock order: Listener.mu before device.mu; peersMu, runMu and proofMu are
// taken alone, and so is the lock of l.sources (udpgw.Sources), whose
// callbacks take no lock. The persister's mu (persist.go) is a leaf: taken
// alone or under Listener.mu or device.mu, it takes nothing else.
// device.subOp (held across Broker.Subscribe/Unsubscribe of that device) and
// device.connOp (held across Connector.Connect/Disconnect of that device) are
// each taken before either, never together, and never by the reader or the
// delivery path. Registry
// calls (Touch, Refresh, ByPeer, Session methods) take only registry and
// session locks, so they may be made with Listener.mu or device.mu held; the
// registry calls back into the engine only through SessionEnded, with none of
// its locks held.
package coap
