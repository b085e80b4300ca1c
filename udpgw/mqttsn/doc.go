// Package mqttsn is the MQTT-SN 1.2 gateway engine of mqttgw (aggregate mode): one
// UDP socket, every client's protocol state, and the bridge to the broker through a
// udpgw.Broker. It implements udpgw.Listener. The codec and the client live in the
// top-level package mqttsn; this package holds only the gateway's side.
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
// (T_RETRY, N_RETRY) and duplicate detection of theirs. Keepalive supervision is
// the session table's: the gateway's one driver expires silent sessions, queues
// their wills and calls Lost.
//
// # Goroutines
//
// Serve runs the reader on its caller's goroutine and starts, for its own
// lifetime, a fixed pool of Options.Workers workers and one driver. Close (or the
// end of Serve's context) stops the reader at once; Serve then lets the workers
// finish the broker operations already queued, for at most Options.DrainTimeout,
// so that devices still get the PUBACK of a QoS 1 publish the broker took, stops
// the driver, closes the socket and returns after every goroutine it started has
// exited. Nothing else is started: sessions are structs, not goroutines, and all
// timers (retransmissions, expiry of will exchanges and of persistent sessions,
// ADVERTISE) come from the driver's one ticker.
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
// One mutex, Engine.mu, guards every client, the address and client id tables,
// the pending will exchanges and the operation queues. It is never held across a
// Broker call or a socket write: handlers collect their datagrams in an outbox
// that is written after the unlock. Engine.mu may be held while calling into the
// session table (whose own locks are leaves); the session table never calls back.
// lifeMu (Serve/Close) and the log limiter's mutex are leaves too.
package mqttsn
