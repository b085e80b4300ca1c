// Package mqttsn implements MQTT-SN 1.2 (MQTT For Sensor Networks, Protocol
// Specification Version 1.2, Stanford-Clark and Truong, 2013): a pure codec
// for every message, and a small UDP client.
//
// # Codec
//
// Decode turns one datagram into one Message (a pointer to the struct for
// its type: *Connect, *Publish, ...); Append encodes a Message by appending
// it to a buffer. Both are pure functions: no I/O, no logging, no state.
// Decode never panics on any input, allocates at most the message struct
// and its strings, and returns byte slices that alias its input (see
// Decode). A Decoder decodes exactly as Decode does, but into structs of
// its own for the messages a device sends per datagram (PUBLISH, PUBACK,
// REGISTER, PINGREQ ...), which its next call overwrites: a gateway's reader
// decodes those without allocating. Append allocates nothing when the
// buffer has room, and its argument does not escape, so an answer built
// with &Puback{...} stays on the caller's stack.
//
// Errors wrap the sentinel errors of errors.go, so callers use
// errors.Is(err, ErrTruncated) and friends. Protocol values are typed:
// MsgType, ReturnCode (whose rejections satisfy error), TopicIDType, QoS and
// Flags.
//
// The codec checks the wire format only (lengths, reserved values, the
// protocol id). Policy — client id length, topic name syntax, which messages
// a gateway accepts from whom — belongs to the protocol engine above it.
//
// # Client
//
// Client is a minimal MQTT-SN client over UDP for command-line tools, load
// generators and tests: Dial, Connect, Register, Publish, Subscribe, Sleep,
// Wake, Disconnect, Close. PublishMinusOne sends a QoS -1 PUBLISH without
// any connection.
//
// Goroutines: Dial starts exactly one goroutine, the client's reader. It
// reads and decodes datagrams, answers the gateway (REGACK, PUBACK, PUBREC,
// PUBCOMP, PINGRESP), delivers messages to ClientOptions.OnMessage, hands
// responses to the waiting method, and sends the keep-alive PINGREQ. Close
// stops it and returns after it has exited; nothing else is left running.
//
// Blocking and ordering: every method that exchanges messages takes a
// context, blocks until the gateway's answer arrives, and retransmits after
// RetryInterval up to MaxRetries times (MQTT-SN 1.2 §6.13), setting DUP on
// retransmitted PUBLISH and SUBSCRIBE messages. Methods may be called from
// several goroutines: exchanges identified by a MsgId (REGISTER, PUBLISH,
// SUBSCRIBE, UNSUBSCRIBE) run concurrently, the others (CONNECT, PINGREQ,
// DISCONNECT, will updates) one at a time. OnMessage runs on the reader
// goroutine, in the order messages arrive; it must not block for long and
// must not call the Client's blocking methods (the reader would wait for
// itself) — hand the message to another goroutine instead.
package mqttsn
