package natsstore

import (
	"fmt"
	"regexp"
	"time"

	"github.com/mqttgw/mqttgw/store"
	"github.com/nats-io/nats.go"
)

// Defaults for the zero Options.
const (
	// DefaultName is the fleet name when Options.Name is empty.
	DefaultName = "mqttgw"
	// DefaultReplicas: one copy, what a single nats-server can hold. A fleet
	// sets 3 (a three-node cluster that survives the loss of one node).
	DefaultReplicas = 1
	// DefaultTimeout: how long one operation keeps retrying through a
	// JetStream leader election or a reconnect (a few seconds each).
	DefaultTimeout = 30 * time.Second
	// DefaultRequestTimeout: how long one request waits for its answer before
	// it is sent again.
	DefaultRequestTimeout = 5 * time.Second
	// DefaultDuplicateWindow: how long JetStream remembers an Append's
	// message id, so that a retried Append is stored once. It must exceed
	// Timeout.
	DefaultDuplicateWindow = 2 * time.Minute
)

// Options configure the store. URLs and Instance are required; the zero value
// of every other field is its default.
type Options struct {
	// URLs of the NATS servers ("nats://10.0.0.1:4222", "tls://..."); the
	// client connects to one and fails over to the others.
	URLs []string
	// Name is the fleet's name, the prefix of every stream and bucket this
	// store makes, so that several fleets can share one NATS system. Letters,
	// digits, '-' and '_', at most 64. Default DefaultName.
	Name string
	// Instance names this gateway within the fleet: its upstream queue is
	// the stream "<Name>-queue-<Instance>". Two live gateways must never
	// share one. Letters, digits, '-' and '_', at most 64. Required.
	Instance string
	// Replicas is the JetStream replication of the streams and buckets, 1 to
	// 5. Default DefaultReplicas; a fleet on a three-node cluster sets 3.
	// Changing it on an existing fleet rescales its streams.
	Replicas int

	// Credentials: at most one of CredsFile (a NATS .creds file: user JWT
	// and NKey seed), Username and Password, or Token.
	CredsFile          string
	Username, Password string
	Token              string
	// TLS: CAFile verifies the servers (a tls:// URL or a server that
	// requires TLS turns TLS on; CAFile alone does too); CertFile and KeyFile
	// are the client's certificate, for servers that verify clients.
	CAFile, CertFile, KeyFile string

	// MaxMessages and MaxBytes limit the queue, as for store.Options: an
	// Append beyond either fails with store.ErrFull; zero is the store
	// package's default, negative no limit. JetStream enforces them (the
	// stream discards new messages, never old ones), and it counts each
	// message's bytes as the record plus a fixed overhead: its subject
	// (<Name>.queue.<Instance>), its 49-octet message id header and 34
	// octets of framing, so the same MaxBytes holds fewer messages here than
	// in Bolt (about 100 octets each fewer). Queue.Len reports the records'
	// bytes alone, as Bolt does.
	MaxMessages int
	MaxBytes    int64

	// OwnerLease, when set, makes the store announce this instance as
	// alive: the key live.<Instance> of the state bucket, with a per-message
	// TTL of OwnerLease, written by Open and renewed every OwnerLease/3
	// until Close (owner.go; the TTL is rounded up to whole seconds). Another instance finds it dead (Alive) at
	// most OwnerLease after its last renewal. 0: no announcement; at least
	// a second otherwise (JetStream's smallest TTL).
	OwnerLease time.Duration

	// Timeout bounds how long one operation keeps retrying: requests that
	// time out, find no stream leader or arrive during a reconnect are sent
	// again (writes with the same message id or, for Apply, as a new batch
	// of the same ops) until then. Default DefaultTimeout.
	Timeout time.Duration
	// RequestTimeout bounds one attempt. Default DefaultRequestTimeout.
	RequestTimeout time.Duration
}

// nameRE is what Name and Instance may hold: the characters valid in stream
// names, bucket names and subject tokens alike.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func (o Options) withDefaults() (Options, error) {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.Replicas == 0 {
		o.Replicas = DefaultReplicas
	}
	if o.MaxMessages == 0 {
		o.MaxMessages = store.DefaultMaxMessages
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = store.DefaultMaxBytes
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.RequestTimeout > o.Timeout {
		o.RequestTimeout = o.Timeout
	}
	switch {
	case len(o.URLs) == 0:
		return o, fmt.Errorf("no URLs: %w", ErrBadOptions)
	case !nameRE.MatchString(o.Name):
		return o, fmt.Errorf("name %q: letters, digits, '-' and '_' only, at most 64: %w", o.Name, ErrBadOptions)
	case !nameRE.MatchString(o.Instance):
		return o, fmt.Errorf("instance %q: required; letters, digits, '-' and '_' only, at most 64: %w", o.Instance, ErrBadOptions)
	case o.Replicas < 1 || o.Replicas > 5:
		return o, fmt.Errorf("replicas %d: 1 to 5: %w", o.Replicas, ErrBadOptions)
	case o.Timeout >= DefaultDuplicateWindow:
		return o, fmt.Errorf("timeout %v: must be below the duplicate window %v: %w", o.Timeout, DefaultDuplicateWindow, ErrBadOptions)
	case o.OwnerLease < 0 || o.OwnerLease > 0 && o.OwnerLease < time.Second:
		return o, fmt.Errorf("owner lease %v: at least 1s (JetStream's message TTLs): %w", o.OwnerLease, ErrBadOptions)
	case (o.CertFile == "") != (o.KeyFile == ""):
		return o, fmt.Errorf("cert_file and key_file go together: %w", ErrBadOptions)
	}
	creds := 0
	for _, set := range []bool{o.CredsFile != "", o.Username != "" || o.Password != "", o.Token != ""} {
		if set {
			creds++
		}
	}
	if creds > 1 {
		return o, fmt.Errorf("credentials: one of creds_file, username/password, token: %w", ErrBadOptions)
	}
	return o, nil
}

// connectOptions are the nats.go options for o: credentials, TLS, and
// reconnecting for ever (an operation's own Timeout bounds each wait).
func (o Options) connectOptions(closed func(*nats.Conn)) []nats.Option {
	opts := []nats.Option{
		nats.Name("mqttgw " + o.Name + "/" + o.Instance),
		nats.Timeout(o.RequestTimeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		// A dead server is noticed by its closed socket at once; a silent
		// one (a partition) after two missed pings.
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(2),
		nats.ClosedHandler(closed),
		// nats.go's default handler prints asynchronous errors on stderr;
		// the operations report their own errors.
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
	}
	switch {
	case o.CredsFile != "":
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	case o.Username != "" || o.Password != "":
		opts = append(opts, nats.UserInfo(o.Username, o.Password))
	case o.Token != "":
		opts = append(opts, nats.Token(o.Token))
	}
	if o.CAFile != "" {
		opts = append(opts, nats.RootCAs(o.CAFile))
	}
	if o.CertFile != "" {
		opts = append(opts, nats.ClientCert(o.CertFile, o.KeyFile))
	}
	return opts
}
