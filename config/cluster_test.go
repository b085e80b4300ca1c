package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestClusterProblems: every mistake in [cluster] and what it changes
// elsewhere is reported with its line and key.
func TestClusterProblems(t *testing.T) {
	const ok = "[gateway]\nid = \"gw1\"\n"
	tests := []struct {
		name, toml string
		want       string
	}{
		{"no urls", ok + "[cluster]\nname = \"site1\"\n", `t.toml:3: cluster.nats: missing: want the NATS servers' URLs, such as ["nats://10.0.0.1:4222"]`},
		{"bad scheme", ok + "[cluster]\nnats = [\"nats://127.0.0.1:4222\", \"http://x:1\"]\n", `t.toml:4: cluster.nats: [1] "http://x:1": unsupported scheme "http": want nats, tls, ws or wss`},
		{"no host", ok + "[cluster]\nnats = [\"nats://:4222\"]\n", `t.toml:4: cluster.nats: [0] "nats://:4222" has no host`},
		{"bad name", ok + "[cluster]\nnats = [\"nats://a:1\"]\nname = \"a.b\"\n", `t.toml:5: cluster.name: "a.b": letters, digits, '-' and '_' only, at most 64: it prefixes stream and bucket names`},
		{"replicas", ok + "[cluster]\nnats = [\"nats://a:1\"]\nreplicas = 7\n", `t.toml:5: cluster.replicas: 7 is out of range 1..5 (JetStream's replicas; 3 on a three-node cluster)`},
		{"lease too short", ok + "[cluster]\nnats = [\"nats://a:1\"]\nowner_lease = \"100ms\"\n", `t.toml:5: cluster.owner_lease: 100ms: want 1s to 1h (the TTL of the instance's live key)`},
		{"two credentials", ok + "[cluster]\nnats = [\"nats://a:1\"]\ntoken = \"s\"\nusername = \"u\"\npassword = \"p\"\n", `t.toml:3: cluster: credentials: set one of creds_file, username/password, token`},
		{"password alone", ok + "[cluster]\nnats = [\"nats://a:1\"]\npassword = \"p\"\n", `t.toml:3: cluster.username: missing: cluster.password is set`},
		{"creds file missing", ok + "[cluster]\nnats = [\"nats://a:1\"]\ncreds_file = \"/nonexistent/x.creds\"\n", `t.toml:5: cluster.creds_file: cannot read "/nonexistent/x.creds": no such file or directory`},
		{"cert without key", ok + "[cluster]\nnats = [\"tls://a:1\"]\n[cluster.tls]\ncert_file = \"/etc/hostname\"\n", `t.toml:5: cluster.tls: cert_file and key_file go together: set both or neither`},
		{"default id", "[cluster]\nnats = [\"nats://a:1\"]\n", `t.toml:1: cluster: needs gateway.id: every instance of a fleet its own (it names the instance's queue and ownership leases)`},
		{"id not a stream name", "[gateway]\nid = \"gw 1\"\n[cluster]\nnats = [\"nats://a:1\"]\n", `t.toml:2: gateway.id: "gw 1": with [cluster], letters, digits, '-' and '_' only, at most 64: it names the instance's queue stream`},
		{"store dir too", ok + "[store]\ndir = \"/tmp/x\"\n[cluster]\nnats = [\"nats://a:1\"]\n", `t.toml:4: store.dir: with [cluster] the store is JetStream's: remove dir (max_messages and max_bytes still limit the queue)`},
		{"commit interval", ok + "[store]\ncommit_interval = \"5ms\"\n[cluster]\nnats = [\"nats://a:1\"]\n", `t.toml:4: warning: store.commit_interval: ignored with [cluster]: JetStream acknowledges each write once a quorum of replicas has it`},
		{"unknown key", ok + "[cluster]\nnats = [\"nats://a:1\"]\nreplica = 3\n", `t.toml:5: cluster.replica: unknown key "replica" (did you mean "replicas"?)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ps := Parse("t.toml", []byte(tt.toml))
			var got []string
			for _, p := range ps {
				got = append(got, p.Error())
				if p.Error() == tt.want {
					return
				}
			}
			t.Errorf("want\n  %s\ngot\n  %s", tt.want, strings.Join(got, "\n  "))
		})
	}
}

// TestClusterValid: a complete [cluster] passes, defaults are filled, and
// the queue's limits of [store] apply without dir.
func TestClusterValid(t *testing.T) {
	dir := t.TempDir()
	creds := filepath.Join(dir, "gw.creds")
	if err := os.WriteFile(creds, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	text := "[gateway]\nid = \"gw-1\"\n[store]\nmax_messages = 1000\n[cluster]\nnats = [\"nats://10.0.0.1:4222\", \"tls://10.0.0.2:4222\"]\ncreds_file = \"gw.creds\"\n"
	c, ps := Parse(filepath.Join(dir, "c.toml"), []byte(text))
	if len(ps.Errors()) > 0 {
		t.Fatalf("problems: %v", ps)
	}
	if !c.Clustered() || c.Cluster.Name != DefaultClusterName || c.Cluster.Replicas != 1 || c.Cluster.OwnerLease.D() != DefaultOwnerLease {
		t.Errorf("cluster = %+v, clustered %v", c.Cluster, c.Clustered())
	}
	c, ps = Parse("t.toml", []byte("[gateway]\nid = \"gw1\"\n"))
	if len(ps.Errors()) > 0 || c.Clustered() {
		t.Errorf("no [cluster]: clustered %v, problems %v", c.Clustered(), ps)
	}
}
