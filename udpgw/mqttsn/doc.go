// Package mqttsn is the MQTT-SN 1.2 gateway engine of mqttgw (aggregate mode): one
// UDP socket (or, for mqttsns listeners, one DTLS 1.2 listener), every client's
// protocol state, and the bridge to the broker through a udpgw.Broker. It implements udpgw.Listener, udpgw.Ticker and session.Owner, and
// is built like every engine: New(udpgw.Env, Options). The codec and the client
// live in the top-level package mqttsn; this package holds only the gateway's side.
//
// # What it does
//
// CONNECT with clean and persistent sessions and the whole will exchange, take-over
// by a second CONNECT, NAT rebinding (a device is known by its client id: a
// PINGREQ(ClientId) or CONNECT from a new address moves it), REGISTER/REGACK both
// ways, PUBLISH at QoS -1, 0, 1 and 2 with registered, predefined and short topic
// ids, SUBSCRIBE/UNSUBSCRIBE by name, filter, predefined id and short name,
// sleeping clients with bounded buffers, will updates, SEARCHGW/GWINFO and
// periodic ADVERTISE, forwarder encapsulation, retransmission towards clients
// (T_RETRY, N_RETRY) and duplicate detection of theirs.
//
// REGISTER asks the Broker's PublishChecker, when it has one, whether the client
// may publish to the name: a topic the ACL denies gets REGACK "not supported".
//
// # Persistent sessions and restarts
//
// With Options.State (a durable store), every client with CleanSession false
// has one record in the store (record.go), written when its state changes and
// read back by Serve before the first datagram: after a crash and a restart
// its registrations, subscriptions, will, QoS 2 exchanges awaiting PUBREL and,
// when it sleeps, its buffered messages are there, and it goes on without a
// new CONNECT. Answers that tell the client about a change (PUBREC, PUBCOMP,
// REGACK, SUBACK, UNSUBACK, the answer to DISCONNECT) wait for the commit that
// holds it. A client whose keepalive ran out while the gateway was down is
// lost at start: the registry's driver publishes its will. persist.go has the
// details and the ordering argument. A CONNECT with CleanSession false whose
// session the gateway does not have (never had, expired, or lost with a
// restart without a store) gets a new, empty session: MQTT-SN 1.2 has no
// session-present flag; it is counted (mqttgw_mqttsn_persistent_connects_total
// {session="new"}).
//
// # Over DTLS (mqttsns)
//
// With Options.DTLS the socket is a pion DTLS 1.2 listener with pre-shared keys
// (RFC 4279); the engine above it is the same. The cookie exchange stays on
// (RFC 6347 §4.2.1: nothing larger than a ClientHello goes to an unverified
// source), and connection ids (RFC 9146) let a client behind a rebinding NAT
// keep its DTLS session. A peer is known by the address its handshake came
// from, for as long as its connection lasts, wherever its records later come
// from. The PSK identity is the client id: a CONNECT with another client id
// is refused (CONNACK "not supported"), a PINGREQ waking another client is
// dropped, and the session's user (the ACL's %u) is the identity; a datagram
// acts for a client (or its will exchange) only when its connection proved
// that client's id, so a connection that later gets the same address never
// inherits the session found there. Forwarder
// encapsulation is dropped: one identity cannot prove many nodes' ids.
// ADVERTISE is refused (it is a broadcast). A connection with nothing to do
// (no session, no will exchange at its peer) for DTLSOptions.IdleCheck is
// closed. A message is at most about 8 KiB over DTLS (pion's datagram buffer).
//
// # Addresses that have not proven they receive (plain UDP)
//
// Nothing in a UDP datagram proves its source address. Every datagram of a
// plain mqttsn listener is first recorded in a udpgw.Sources table, before it
// is decoded: until an address has proven it receives, it is sent at most
// Options.Amplification (3) times the bytes it sent (the rest is held and
// counted, mqttgw_amplification_held_bytes_total) and admitted at
// Options.UnprovenRate. It proves itself by echoing a value the gateway chose
// at random and sent only there: the MsgId of the gateway's REGISTER, QoS 1
// or 2 PUBLISH or PUBREL, or a topic id it was given (at random) in a REGACK
// or SUBACK, used in a PUBLISH. A message that does not fit the budget (a
// large retained message after a spoofed SUBSCRIBE) waits, and the client gets
// a small probe instead: a REGISTER of "$GW/probe" (MQTT-SN 1.2 §6.5: clients
// answer any REGISTER with REGACK and its MsgId). Clients connected from an
// unproven address are bounded (Options.MaxUnproven, least recently heard
// evicted first, also when max_clients is reached; what they buffer by
// Options.MaxUnprovenBytes) and short-lived (UnprovenTTL of silence, twice
// that after CONNECT, unless asleep). unproven.go has the details. Over DTLS
// the handshake's cookie proves the address and none of this applies.
//
// # What the registry owns
//
// The device registry (udpgw.Env.Sessions) is the one owner of each client's
// address, liveness, sleep state and will; the engine keeps no copy. A CONNECT
// creates the client's session (Touch: the gateway's Created hook gives it its
// class and publishes its birth) with the CONNECT's Duration as keepalive, and
// its will, in the device's own topic space (the gateway maps it when it
// publishes it). Every later datagram refreshes it (Refresh, which moves it on
// NAT rebinding). A datagram's client is the registry's session at its address
// (ByPeer), then the engine's client record by that session's client id; answers
// go to the session's last address (Session.Peer). A clean DISCONNECT and a
// take-over end the session (End: no will); keepalive supervision is the
// registry's: the gateway's driver expires silent sessions, publishes their
// wills and then calls SessionEnded, where the engine drops the client's
// connection. What stays here is protocol state: topic ids, subscriptions,
// buffered and in-flight messages, the pending will exchanges (keyed by address,
// with their will until CONNACK) and the persistent sessions of clients gone.
//
// # Goroutines
//
// Serve runs the reader on its caller's goroutine and starts, for its own
// lifetime, a fixed pool of Options.Workers workers and, with Options.State,
// a few writers, which commit changed session records; Serve restores the
// records before it starts them. With Options.Owners (a fleet), a
// persistent CONNECT for a client not held here starts one loader goroutine
// that reads the client's record (at most 64 at once, fleet.go); Serve's
// drain waits for them. With Options.Owners the owner keys' watch calls the
// engine on the store's goroutine (it takes Engine.mu, no I/O) from Serve's
// start until its drain. Over DTLS, Serve's
// goroutine runs the accept loop instead, which starts one goroutine per
// connection (its handshake, at most DTLSOptions.MaxHandshakes at once, then
// its reader); pion runs its own socket reader and a few goroutines per
// connection. Close (or the end of Serve's context) stops the reader at once
// (over DTLS: the accept loop and the handshakes under way; the connections'
// readers still read, but the engine takes nothing more); Serve then lets the
// workers finish the broker operations already queued, for at most
// Options.DrainTimeout, so that devices still get the PUBACK of a QoS 1
// publish the broker took, commits the session records left (and sends the
// answers waiting for them), closes the socket (over DTLS: every connection,
// with close_notify, which ends their goroutines and pion's) and returns after
// every goroutine it started has exited. Nothing else
// is started: sessions are structs, not goroutines, and the engine has no timer.
// Its timed work (retransmissions, expiry of will exchanges and of persistent
// sessions, ADVERTISE) is Tick(now), which the gateway's one driver calls every
// TickEvery, before Serve, during it and after it (a write to the closed socket
// is dropped).
//
// # Blocking and ordering
//
// The reader never waits for the broker. Everything that does — PUBLISH at any
// QoS, SUBSCRIBE, UNSUBSCRIBE, dropping a session's subscriptions — is an
// operation queued on the client (at most Options.MaxClientOps; beyond that the
// client gets "rejected: congestion") and run by a worker, which answers the
// client (PUBACK, PUBREC, SUBACK, UNSUBACK) when the broker has answered. A
// client's operations run one at a time in the order they arrived, so its
// publishes reach the broker in order and an UNSUBSCRIBE never overtakes its
// SUBSCRIBE; different clients' operations run in parallel, round robin.
//
// Towards a client there is one message in flight at a time (REGISTER, then the
// PUBLISH it names; PUBLISH QoS 1 until PUBACK; QoS 2 until PUBCOMP); the others
// wait in the client's buffer, bounded by Options.MaxBuffered, dropping the
// oldest. Broker messages arrive through the deliver callback given to
// Broker.Subscribe, which only queues and sends one datagram: it never blocks.
//
// # Locks
//
// One mutex, Engine.mu, guards every client, the client id table, the pending
// will exchanges and the operation queues. It is never held across a Broker call
// or a socket write: handlers collect their datagrams in an outbox that is
// written after the unlock. Nor is it held across a store call: a writer
// snapshots the changed records under it and commits them after the unlock.
// Engine.mu may be held while calling into the
// registry (Touch, Refresh, ByPeer, End and Session methods take only the
// registry's own locks; the Created hook that Touch runs only enqueues), and
// while calling the udpgw.Sources table, whose mutex is a leaf. The
// registry calls the engine back only in SessionEnded, from the gateway's
// driver with no registry lock held, which takes Engine.mu itself. lifeMu
// (Serve/Close), the log limiters' mutexes and the DTLS transport's mutex
// (its connections by peer, read under Engine.mu for a peer's PSK identity)
// are leaves. The Broker's PublishChecker runs under Engine.mu and takes only
// the registry's locks and its own.
package mqttsn
