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
// time only through Env.Now (go-coap's own timers and the sender's back-off
// timers, which measure durations, excepted) and counts into Env.Metrics as
// mqttgw_coap_*{listener}.
//
// # Device state and go-coap's connections
//
// The device registry (package session) owns each device's record: its
// identity, class, keepalive, liveness and last address. The engine keeps only
// protocol state — a device's observations (token, sequence, queue), the
// state of its notifications' sending and, for coaps, the DTLS session of its
// last request — keyed by the device's name, and finds the device last seen
// at an address through Env.Sessions.ByPeer. The
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
// go-coap keeps the DTLS sessions (one connection per session, holding
// message-layer state), decodes and encodes messages, and does block-wise
// transfers; plain CoAP's single-datagram exchanges are the engine's own, on
// the listener's socket, with no connection and no goroutine per peer:
//
//   - Until a plain CoAP address has proven that it receives there
//     (unproven.go) — it echoed an Echo option value (RFC 9175) or the
//     Message ID of a CoAP ping or a Confirmable notification the gateway
//     sent it — it is an entry of a bounded, short-lived udpgw.Sources table
//     (anti-amplification budget of 3 × what it sent, rate limit, last
//     Message IDs), its answers and notifications go out only within its
//     budget (4.01 with an Echo option otherwise), a plain GET leaves no
//     state, and an observation whose address does not prove itself within
//     UnprovenTTL ends.
//   - Once proven, it is served on the proven path (fast.go): its requests
//     are decoded on the reader, deduplicated over EXCHANGE_LIFETIME by a
//     small per-address entry (its last Message IDs and Confirmable answers,
//     forgotten EXCHANGE_LIFETIME after its last datagram, at most MaxPeers),
//     and served by a bounded pool of workers, one request of an address at a
//     time; ACK, RST and CoAP pings are answered on the reader. An idle
//     device costs its record here, its session in the registry and its
//     proof, an observation its record: under 1 KiB each, no goroutine
//     (memory_test.go measures and bounds it).
//   - A block-wise transfer (a request with Block1 or Block2) gets a go-coap
//     connection for its address, closed after ConnIdle (EXCHANGE_LIFETIME)
//     of silence; the address's datagrams go there while it lives. A proven
//     answer above one block goes as its first block (Block2, RFC 7959
//     §2.4), the client fetching the rest on that connection.
//   - Notifications leave from one sender goroutine per listener
//     (notify.go), encoded by the engine (appendNotification), on the socket
//     for plain CoAP and on the device's DTLS session for coaps.
//
// A coaps peer is proven by its DTLS handshake (the cookie): no budget there;
// its session lives ConnIdle (Keepalive × 1.5; go-coap's own 16 s inactivity
// ends nothing). No CoAP ping keepalive is sent: a sleepy device could not
// answer it.
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
//   - go-coap runs one handler-loop goroutine per connection: per DTLS
//     session, and per plain CoAP address in a block-wise transfer; Close
//     (and the idle expiry) cancel it. Every handler call is counted in the
//     listener's WaitGroup, so Close returns after the last one.
//   - expirePeers (plain CoAP) or go-coap's periodic runner (coaps), one each,
//     expire idle connections every 2 s (expirePeers also expires unproven
//     sources and the proven path's entries, and ends the observations of
//     addresses that never proved themselves); Close stops it.
//   - At most maxFastWorkers workers serve the proven plain CoAP sources'
//     requests (fast.go), started when requests wait and exiting when none
//     is left; Close waits for them. No goroutine stays for an idle device.
//   - One sender goroutine per listener sends every notification, and drives
//     the retransmission timers of Confirmable ones and the proof waits of
//     held ones (notify.go); Serve starts it, Close stops it. Short-lived
//     goroutines unsubscribe the broker after an observation ended off a
//     handler, or after SessionEnded (called on the gateway's driver
//     goroutine, which it never makes wait for the broker), and close an
//     ended session's broker connection (transparent mode). Close waits for
//     all of them.
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
// A reader never waits for a handler: at most maxInflight requests per peer
// are queued (the proven path's queue, or go-coap's, sized for them, through
// the monitor) and the rest dropped; ACK and RST are consumed on the reader.
// Handlers may wait for the broker (a QoS 1 publish) — one request of a peer
// at a time, never the reader. The broker's delivery callback only queues
// (ObserverQueue per observation, drop-oldest, counted) and puts the device
// on the sender's ready list; the sender sends one notification per ready
// device in turn, and a device with a Confirmable notification in flight
// waits for its ACK (NSTART 1) off the list, so a slow observer delays only
// itself. Notifications of one observation leave in order with rising
// Observe numbers, after the registration response; the sender holds no lock
// across a write.
//
// Lock order: Listener.mu before device.mu; peersMu, runMu, proofMu, fastMu
// and sendMu are taken alone, and so is the lock of l.sources
// (udpgw.Sources), whose callbacks take no lock. The persister's mu
// (persist.go) is a leaf: taken alone or under Listener.mu or device.mu, it
// takes nothing else.
// device.subOp (held across Broker.Subscribe/Unsubscribe of that device) and
// device.connOp (held across Connector.Connect/Disconnect of that device) are
// each taken before either, never together, and never by the reader or the
// delivery path. Registry
// calls (Touch, Refresh, ByPeer, Session methods) take only registry and
// session locks, so they may be made with Listener.mu or device.mu held; the
// registry calls back into the engine only through SessionEnded, with none of
// its locks held.
package coap
