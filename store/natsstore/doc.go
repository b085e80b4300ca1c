// Package natsstore is the NATS JetStream backend of store.Store, for a fleet
// of gateways that share one JetStream cluster (issue 13). It keeps the
// semantics of the bbolt backend (store.Bolt) that store/storetest checks,
// over the network.
//
// # Layout
//
// Every name starts with Options.Name, the fleet's name, so that several
// fleets can share one NATS system:
//
//	stream  <Name>-queue-<Instance>   subjects <Name>.queue.<Instance>.<device>
//	        the upstream queue of one gateway, a subject per device (16 hex
//	        digits, deviceToken; the base alone for an earlier build's
//	        messages): file storage, Options.Replicas,
//	        MaxMsgs/MaxBytes from the options with DiscardNew, 2 min duplicate
//	        window; each message one store.Message record (store.AppendMessage)
//	        with a Nats-Msg-Id header
//	bucket  <Name>-state  (stream KV_<Name>-state, subjects $KV.<Name>-state.>)
//	        every state record of the fleet, one key per record:
//	        <kind>.<base64url(key)>, or <kind>.=<base64url(sha256(key))> for
//	        keys above 768 octets, whose value then carries the key (keys.go)
//	        and the fleet's own keys (owner.go): live.<base64url(instance)>
//	        (per-message TTL Options.OwnerLease, renewed while the instance
//	        runs) and owner.<base64url(key)> (the instance serving a device;
//	        Take, ApplyOwned's fences, WatchOwners)
//
// One queue per gateway, not one for the fleet: each gateway replays only
// what it took, and a dead gateway's queue is one stream that another can
// drain whole once the dead one's lease is gone (issue 13). One bucket for
// all kinds, not one per kind: State.Apply must be atomic across kinds, and
// JetStream's atomic batches stay within one stream.
//
// # Mapping of the store's operations
//
//   - Queue.Append publishes the record with a fresh message id and returns
//     once JetStream acknowledged it (a quorum of replicas stored it); the
//     stream sequence is the Seq, so Seq order is the order in which the
//     stream leader took the appends. A full stream refuses the message (it
//     never discards old ones): store.ErrFull. JetStream counts each
//     message's record plus a fixed overhead against MaxBytes.
//   - Queue.Ack deletes the messages by sequence; Range asks the leader for
//     the next message at or after a sequence, then for the 32 numbers after
//     it at once (queue.go); Len comes from counters kept beside the
//     stream's info.
//   - State.Put and Delete publish one message (a delete is a "KV-Operation:
//     DEL" marker that replaces the value and expires after 15 minutes);
//     Apply with several ops is one JetStream atomic batch (nats-server 2.12),
//     at most MaxApplyOps; Get reads the key's last message from the leader;
//     Range lists the kind's keys from the leader (the stream's info), reads
//     them 32 at a time, and sorts them.
//
// Every read goes to the stream's leader, never to a replica or a consumer
// (which JetStream may place on a lagging replica): a read sees every write
// acknowledged before it, as with Bolt. So the streams do not allow direct
// gets.
//
// # Durability
//
// A write returns nil once JetStream acknowledged it: stored by a quorum of
// the replicas (all of them with 1 or 2 replicas), which survives the loss of
// the others. JetStream writes to its files at once but fsyncs them only every
// sync_interval (2 minutes by default): a power cut of a quorum of nodes at
// once needs the servers' "sync_interval: always". With Replicas 1, the loss
// of the one node's disk loses the data.
//
// # Failures, retries and blocking
//
// Every request is bounded by Options.RequestTimeout and sent again while it
// times out, finds no leader (an election after a node died takes a few
// seconds) or meets a reconnect, until Options.Timeout: so a caller blocks at
// most Timeout. A retried Append carries the same message id, so JetStream
// stores it once and answers with the first sequence; a retried Apply is the
// same puts and deletes again. A write still unanswered after Timeout fails
// with ErrUnconfirmed: it may or may not be stored (the only inexact answer,
// which a local file cannot give). ctx is checked before a write is first
// sent, as with Bolt, and not after. Range and Get read from the stream
// leader, so they see every write acknowledged before them.
//
// # Goroutines and locks
//
// Open makes one NATS connection, whose goroutines (nats.go's reader, flusher
// and callback dispatcher) run until Close; with Options.OwnerLease one more
// renews the live key until Close, and each WatchOwners runs an ordered
// consumer (nats.go's goroutines) until its stop or Close. Ack, Queue.Range and State.Range
// run their requests in up to 32 goroutines that end before they return.
// Close refuses new operations,
// waits for those under way, closes the connection, and waits for nats.go's
// closed callback. Locks: Store.mu (closing), queue.refreshMu (one stream info
// request at a time: held across it, awaited only by other refreshes), and
// queue.lenMu (the queue's counters) are leaves, never held across a request
// or a call of a callback.
//
// # Servers
//
// nats-server 2.12 or newer with JetStream: atomic batch publishing (2.12)
// and per-message TTL (2.11) are used; Open refuses an older server with
// ErrServerTooOld, since 2.9 and 2.10 silently ignore both settings.
package natsstore
