package config

import (
	"net/url"
	"os"
	"regexp"
	"time"
)

// Cluster configures a fleet of gateways sharing one NATS JetStream cluster
// ([cluster], issue 13): with it the durable store (the upstream queue, the
// persistent sessions) lives in JetStream instead of a local file, so that
// any instance can continue a device another one served.
type Cluster struct {
	// NATS lists the servers' URLs (nats://, tls://, ws://, wss://); the
	// client connects to one and fails over to the others.
	NATS []string `toml:"nats"`
	// Name prefixes every stream and bucket, so that fleets can share one
	// NATS system. Default "mqttgw".
	Name string `toml:"name"`
	// Replicas is the JetStream replication of the streams and buckets, 1
	// to 5. Default 1; a three-node NATS cluster wants 3.
	Replicas int `toml:"replicas"`
	// OwnerLease is the TTL of each instance's live key, which it renews
	// every third of it: how soon the fleet knows a dead instance is dead
	// (a device moves at once, alive or not). Default 10s.
	OwnerLease Duration `toml:"owner_lease"`
	// Credentials: at most one of CredsFile, Username/Password, Token.
	CredsFile string     `toml:"creds_file"`
	Username  string     `toml:"username"`
	Password  string     `toml:"password"`
	Token     string     `toml:"token"`
	TLS       ClusterTLS `toml:"tls"`
}

// ClusterTLS is the client side of TLS to the NATS servers.
type ClusterTLS struct {
	CAFile   string `toml:"ca_file"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
}

// Defaults of [cluster].
const (
	DefaultClusterName = "mqttgw"
	DefaultOwnerLease  = 10 * time.Second
)

// Clustered reports whether the file has a [cluster] section: the gateway
// then keeps its store in JetStream.
func (c *Config) Clustered() bool { return c.isSet("cluster") || len(c.Cluster.NATS) > 0 }

func (cl *Cluster) applyDefaults() {
	if cl.Name == "" {
		cl.Name = DefaultClusterName
	}
	if cl.Replicas == 0 {
		cl.Replicas = 1
	}
	setDuration(&cl.OwnerLease, DefaultOwnerLease)
}

// streamNameRE is what a fleet or instance name may hold: the characters
// valid in JetStream stream names, bucket names and subject tokens alike
// (store/natsstore keeps the same rule).
var streamNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// validateCluster checks [cluster] and what it changes elsewhere: the
// instance's id names its queue stream, and [store] dir has no use.
func (c *Config) validateCluster(add, warn func(key, format string, args ...any)) {
	if !c.Clustered() {
		return
	}
	cl := c.Cluster
	if len(cl.NATS) == 0 {
		add("cluster.nats", "missing: want the NATS servers' URLs, such as [\"nats://10.0.0.1:4222\"]")
	}
	for i, s := range cl.NATS {
		u, err := url.Parse(s)
		switch {
		case err != nil:
			add("cluster.nats", "[%d] %q is not a URL: want nats://HOST:PORT (or tls://, ws://, wss://)", i, s)
		case u.Scheme != "nats" && u.Scheme != "tls" && u.Scheme != "ws" && u.Scheme != "wss":
			add("cluster.nats", "[%d] %q: unsupported scheme %q: want nats, tls, ws or wss", i, s, u.Scheme)
		case u.Hostname() == "":
			add("cluster.nats", "[%d] %q has no host", i, s)
		}
	}
	if !streamNameRE.MatchString(cl.Name) {
		add("cluster.name", "%q: letters, digits, '-' and '_' only, at most 64: it prefixes stream and bucket names", cl.Name)
	}
	if cl.Replicas < 1 || cl.Replicas > 5 {
		add("cluster.replicas", "%d is out of range 1..5 (JetStream's replicas; 3 on a three-node cluster)", cl.Replicas)
	}
	if d := cl.OwnerLease.D(); d < time.Second || d > time.Hour {
		add("cluster.owner_lease", "%v: want 1s to 1h (the TTL of the instance's live key)", d)
	}
	creds := 0
	for _, set := range []bool{cl.CredsFile != "", cl.Username != "" || cl.Password != "", cl.Token != ""} {
		if set {
			creds++
		}
	}
	if creds > 1 {
		add("cluster", "credentials: set one of creds_file, username/password, token")
	}
	if cl.Password != "" && cl.Username == "" {
		add("cluster.username", "missing: cluster.password is set")
	}
	for _, f := range []struct{ key, path string }{
		{"cluster.creds_file", cl.CredsFile},
		{"cluster.tls.ca_file", cl.TLS.CAFile},
		{"cluster.tls.cert_file", cl.TLS.CertFile},
		{"cluster.tls.key_file", cl.TLS.KeyFile},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(c.Path(f.path)); err != nil {
			add(f.key, "cannot read %q: %v", f.path, unwrapPathError(err))
		}
	}
	if (cl.TLS.CertFile == "") != (cl.TLS.KeyFile == "") {
		add("cluster.tls", "cert_file and key_file go together: set both or neither")
	}
	// Each instance's upstream queue is the stream <name>-queue-<id>: two
	// instances left at the default id would share it.
	switch {
	case !c.isSet("gateway.id"):
		// Reported at [cluster]: the missing key has no line.
		add("cluster", "needs gateway.id: every instance of a fleet its own (it names the instance's queue and ownership leases)")
	case !streamNameRE.MatchString(c.Gateway.ID):
		add("gateway.id", "%q: with [cluster], letters, digits, '-' and '_' only, at most 64: it names the instance's queue stream", c.Gateway.ID)
	}
	if c.Store.Dir != "" {
		add("store.dir", "with [cluster] the store is JetStream's: remove dir (max_messages and max_bytes still limit the queue)")
	}
	if c.Store.CommitInterval != 0 {
		warn("store.commit_interval", "ignored with [cluster]: JetStream acknowledges each write once a quorum of replicas has it")
	}
}
