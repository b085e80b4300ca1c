package natsstore

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/natstest"
	"github.com/mqttgw/mqttgw/store"
	"github.com/mqttgw/mqttgw/store/storetest"
)

func TestOptionsRefused(t *testing.T) {
	ok := Options{URLs: []string{"nats://127.0.0.1:1"}, Instance: "gw1"}
	for _, tc := range []struct {
		name string
		edit func(*Options)
	}{
		{"no_urls", func(o *Options) { o.URLs = nil }},
		{"no_instance", func(o *Options) { o.Instance = "" }},
		{"dotted_instance", func(o *Options) { o.Instance = "gw1.example.com" }},
		{"name_with_space", func(o *Options) { o.Name = "site 1" }},
		{"name_too_long", func(o *Options) { o.Name = strings.Repeat("n", 65) }},
		{"wildcard_name", func(o *Options) { o.Name = "site*" }},
		{"replicas_6", func(o *Options) { o.Replicas = 6 }},
		{"replicas_negative", func(o *Options) { o.Replicas = -1 }},
		{"cert_without_key", func(o *Options) { o.CertFile = "c.pem" }},
		{"two_credentials", func(o *Options) { o.Token, o.Username = "t", "u" }},
		{"creds_and_token", func(o *Options) { o.Token, o.CredsFile = "t", "x.creds" }},
		{"timeout_beyond_duplicate_window", func(o *Options) { o.Timeout = 5 * time.Minute }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.edit(&o)
			if s, err := Open(context.Background(), o); !errors.Is(err, ErrBadOptions) {
				if s != nil {
					s.Close()
				}
				t.Fatalf("Open = %v, want ErrBadOptions", err)
			}
		})
	}
	o, err := ok.withDefaults()
	if err != nil || o.Name != DefaultName || o.Replicas != 1 || o.MaxMessages != store.DefaultMaxMessages ||
		o.MaxBytes != store.DefaultMaxBytes || o.Timeout != DefaultTimeout || o.RequestTimeout != DefaultRequestTimeout {
		t.Fatalf("defaults: %+v, %v", o, err)
	}
}

// TestOpenNoServer: nothing listens: Open fails at once with the URL in its
// error, and leaves nothing running.
func TestOpenNoServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "nats://" + l.Addr().String()
	l.Close()
	s, err := Open(context.Background(), Options{URLs: []string{url}, Instance: "gw1"})
	if err == nil {
		s.Close()
		t.Fatal("Open without a server succeeded")
	}
	if !strings.Contains(err.Error(), url) {
		t.Fatalf("error %q does not name %s", err, url)
	}
}

// TestOpenUserTLS: a server that wants TLS and a user: the CA file and the
// right password open the store; a wrong password or no CA does not.
func TestOpenUserTLS(t *testing.T) {
	c := natstest.Start(t, natstest.Options{Nodes: 1, Username: "gw", Password: "s3cret", TLS: true})
	o := Options{URLs: c.URLs(), Instance: "gw1", Username: "gw", Password: "s3cret", CAFile: c.CAFile, Timeout: 5 * time.Second}
	s := openT(t, o)
	if _, err := s.Queue().Append(context.Background(), storetest.Message("d", 0)); err != nil {
		t.Fatal(err)
	}

	bad := o
	bad.Password = "wrong"
	if s, err := Open(context.Background(), bad); err == nil {
		s.Close()
		t.Fatal("Open with a wrong password succeeded")
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("wrong password: %v", err)
	}
	bad = o
	bad.CAFile = ""
	if s, err := Open(context.Background(), bad); err == nil {
		s.Close()
		t.Fatal("Open without the CA succeeded")
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("no CA: %v", err)
	}
}

func TestOpenToken(t *testing.T) {
	c := natstest.Start(t, natstest.Options{Nodes: 1, Token: "t0ken"})
	s := openT(t, Options{URLs: c.URLs(), Instance: "gw1", Token: "t0ken"})
	if err := s.State().Put(context.Background(), store.KindSession, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
}

// TestFleets: fleets sharing NATS see nothing of each other; the instances
// of one fleet share the state records and each has its own queue.
func TestFleets(t *testing.T) {
	c := natstest.Start(t, natstest.Options{Nodes: 1})
	ctx := context.Background()
	open := func(name, instance string) *Store {
		return openT(t, Options{URLs: c.URLs(), Name: name, Instance: instance})
	}
	a1, a2, b1 := open("a", "gw1"), open("a", "gw2"), open("b", "gw1")

	if err := a1.State().Put(ctx, store.KindSession, "dev1", []byte("a")); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := a2.State().Get(store.KindSession, "dev1"); !ok || err != nil || string(v) != "a" {
		t.Fatalf("the other instance of fleet a: Get = %q, %v, %v", v, ok, err)
	}
	if _, ok, err := b1.State().Get(store.KindSession, "dev1"); ok || err != nil {
		t.Fatalf("fleet b sees fleet a's record: %v, %v", ok, err)
	}

	for _, s := range []*Store{a1, a2, b1} {
		if seq, err := s.Queue().Append(ctx, storetest.Message(s.opts.Name+s.opts.Instance, 0)); err != nil || seq != 1 {
			t.Fatalf("%s: first append = %d, %v; want 1", s.label, seq, err)
		}
	}
	for _, s := range []*Store{a1, a2, b1} {
		got := storetest.All(t, s.Queue())
		if len(got) != 1 || got[0].Device != s.opts.Name+s.opts.Instance {
			t.Fatalf("%s: queue holds %+v", s.label, got)
		}
	}
	for _, name := range []string{QueueStream("a", "gw1"), QueueStream("a", "gw2"), QueueStream("b", "gw1"), "KV_" + StateBucket("a"), "KV_" + StateBucket("b")} {
		st, err := a1.js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		if md := st.CachedInfo().Config.Metadata; md[metaFormat] != formatVersion {
			t.Fatalf("stream %s: metadata %v", name, md)
		}
	}
	// nats.go sees the state bucket as a key-value bucket.
	kv, err := a1.js.KeyValue(ctx, StateBucket("a"))
	if err != nil {
		t.Fatal(err)
	}
	kvKey, _ := kvKey(store.KindSession, "dev1")
	if e, err := kv.Get(ctx, kvKey); err != nil || string(e.Value()) != "a" {
		t.Fatalf("nats.go KeyValue.Get(%s) = %v, %v", kvKey, e, err)
	}
}

// TestOpenRefuses: a single node cannot hold three replicas; a stream written
// by a newer format is refused, not rewritten.
func TestOpenRefuses(t *testing.T) {
	c := natstest.Start(t, natstest.Options{Nodes: 1})
	ctx := context.Background()
	o := Options{URLs: c.URLs(), Instance: "gw1", Replicas: 3, Timeout: 3 * time.Second, RequestTimeout: time.Second}
	if s, err := Open(ctx, o); err == nil {
		s.Close()
		t.Fatal("Open with 3 replicas on one node succeeded")
	}

	o.Replicas = 1
	s := openT(t, o)
	cfg := s.q.stream.CachedInfo().Config
	cfg.Metadata = map[string]string{metaFormat: "2"}
	if _, err := s.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if s2, err := Open(ctx, o); !errors.Is(err, store.ErrNewerFormat) {
		if s2 != nil {
			s2.Close()
		}
		t.Fatalf("Open of a newer format: %v, want ErrNewerFormat", err)
	}
	if st, err := s.js.Stream(ctx, cfg.Name); err != nil || st.CachedInfo().Config.Metadata[metaFormat] != "2" {
		t.Fatalf("the newer stream was changed: %v", err)
	}
}
