// Package gateway owns and wires everything: it binds the listeners, compiles the
// rules table, connects the proxy and routes each uplink through mapping to the
// broker.
//
// Every device, whatever its protocol, has one record in the session registry
// (package session), which the listeners share: the gateway gives each new
// session its class (keepalive, will, birth), publishes the will of each session
// its driver finds lost, and sends downlinks and acks to plain-UDP devices.
//
// Goroutines: Run starts one reader per listener, the one driver of every timed
// thing (session expiry, engines' retransmissions, dedup windows), the metrics
// server when configured, the proxy's own, and one per acknowledged datagram at
// the broker; it returns after all have exited. On the end of Run's context the
// listeners stop first, then the proxy drains in-flight QoS >= 1 publishes for at
// most gateway.drain_timeout. No device wills are published at shutdown: the
// devices did not go silent.
//
// With [store] dir, New opens the durable store (package store; its one
// committer goroutine), or with [cluster] the fleet's NATS JetStream store
// (store/natsstore; its connection's goroutines), and hands its queue to the
// proxy; Run closes it after the proxy's Close, so the messages the broker
// has not taken stay there for the next start.
//
// With [store] dir, CoAP and plain-UDP sessions are restored by New and kept
// by one writer goroutine that Run starts and stops after the listeners
// (sessionstore.go). With [cluster] they are kept in the fleet's bucket and
// not restored: a device's first datagram at this instance takes it on a
// loader goroutine (at most 64), a watch of the owner keys lets go of those
// another instance took, and the writer adopts dead instances' expired
// sessions (fleetsessions.go). Run also drains the queues of dead instances,
// on one goroutine (drain.go).
package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/auth"
	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/mapping"
	"github.com/mqttgw/mqttgw/metrics"
	"github.com/mqttgw/mqttgw/proxy"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/store"
	"github.com/mqttgw/mqttgw/store/natsstore"
	"github.com/mqttgw/mqttgw/udpgw"
	"github.com/mqttgw/mqttgw/udpgw/raw"
)

// Gateway is one running mqttgw.
type Gateway struct {
	cfg      *config.Config
	log      *zap.Logger
	metrics  *metrics.Registry
	table    atomic.Pointer[mapping.Table] // replaced by Reload; read with rules()
	proxy    *proxy.Proxy
	store    store.Store // nil without [store] dir; closed by Run after the proxy
	fences   *fences     // with [cluster]: devices that moved here wait for their previous instance's queue
	hub      *hub
	sessions *session.Registry
	acl      *acl
	auth     *authGuard // password checks with per-source failure limits
	// authFiles are the [auth] files in force, replaced by Reload.
	authFiles atomic.Pointer[authFiles]
	reloadMu  sync.Mutex // one Reload at a time
	acks      *acker
	downs     *downlinks
	// Set during New only, read-only after.
	brokers map[string]*listenerBroker
	// transparent are the brokers of listeners in transparent mode.
	transparent []*transparentBroker
	raws        map[string]*raw.Listener
	tickers     []udpgw.Ticker
	listeners   []udpgw.Listener
	metricsLn   net.Listener

	expiredDownlinks *metrics.Counter // queued downlinks dropped unsent after their ttl
	status           statusState      // sampled by the driver for the status page
	metricsHandler   http.Handler     // the metrics listener's, built by New

	// sessionKeeper keeps CoAP and plain-UDP sessions in the store (nil
	// without one); made by keeper(), its writer runs during Run.
	sessionKeeper *sessionKeeper
}

// New compiles the config, opens the durable store when configured and binds every
// listener socket, so that a port in use or a store that cannot be used (held by
// another gateway, damaged, not mqttgw's, from a newer mqttgw) is an error here
// rather than later. Nothing is read or connected until Run, which must be
// called to release the store.
func New(cfg *config.Config, log *zap.Logger) (_ *Gateway, err error) {
	if log == nil {
		log = zap.NewNop()
	}
	table, ps := mapping.CompileConfig(cfg)
	if errs := cfg.Locate(ps).Errors(); len(errs) > 0 {
		return nil, errs
	}
	files, err := loadAuthFiles(cfg)
	if err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, log: log, metrics: metrics.New(), hub: newHub(),
		brokers: map[string]*listenerBroker{}, raws: map[string]*raw.Listener{}}
	g.table.Store(table)
	g.authFiles.Store(files)
	g.sessions = session.New(session.Options{Created: g.sessionCreated, Restored: g.sessionRestored})
	g.expiredDownlinks = g.metrics.Counter("mqttgw_downlinks_expired_total", "Queued downlinks dropped unsent after their ttl.")
	g.acks = newAcker(g)
	g.downs = newDownlinks(g)
	g.acl = &acl{g: g}
	g.auth = newAuthGuard(g)
	tlsConf, err := tlsConfig(cfg)
	if err != nil {
		return nil, err
	}
	var queue store.Queue
	if cfg.Store.Dir != "" || cfg.Clustered() {
		st, openErr := openStore(cfg, log)
		if openErr != nil {
			return nil, openErr
		}
		g.store, queue = st, st.Queue()
		if fst := g.fleetStore(); fst != nil {
			g.fences = newFences(g, fst)
		}
		defer func() { // New failed after the store was opened: release it
			if err != nil {
				_ = st.Close()
			}
		}()
	}
	u := cfg.Upstream
	g.proxy, err = proxy.New(proxy.Options{
		URL:             u.URL,
		ClientID:        u.ClientID,
		Username:        u.Username,
		Password:        u.Password,
		Keepalive:       u.Keepalive.D(),
		ConnectTimeout:  u.ConnectTimeout.D(),
		PublishTimeout:  u.PublishTimeout.D(),
		QueueSize:       u.QueueMessages,
		QueueBytes:      u.QueueBytes,
		MaxInflightQoS2: u.MaxInflightQoS2,
		ReconnectMin:    u.ReconnectMin.D(),
		ReconnectMax:    u.ReconnectMax.D(),
		TLS:             tlsConf,
		StatusTopic:     cfg.Gateway.StatusTopic,
		EmbeddedListen:  u.Embedded.Listen,
		EmbeddedAuth:    g.embeddedAuth(),
		Logger:          log.Named("proxy"),
		Metrics:         g.metrics,
		Store:           queue,
		OnMessage:       func(m proxy.Message) { g.hub.dispatch(m) },
		// The acl_file in force at each check (Reload may add, change or
		// remove it); none allows all, as for devices.
		EmbeddedACL: func(clientID, user, topic string, write bool) bool {
			a := g.authFiles.Load().acl
			if a == nil {
				return true
			}
			access := auth.Read
			if write {
				access = auth.Write
			}
			return a.Allowed(clientID, user, topic, access)
		},
	})
	if err != nil {
		return nil, err
	}
	g.hub.proxy = g.proxy
	if err := g.downs.subscribe(context.Background()); err != nil {
		return nil, err
	}
	for _, lc := range cfg.Listeners {
		l, err := g.newListener(lc)
		if err != nil {
			g.closeListeners()
			return nil, err
		}
		g.listeners = append(g.listeners, l)
	}
	g.sessionGauges()
	if cfg.Metrics.Listen != "" {
		if g.metricsHandler, err = metricsAuth(cfg.Metrics, g.metricsMux()); err != nil {
			g.closeListeners()
			return nil, err
		}
		g.metricsLn, err = net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			g.closeListeners()
			return nil, fmt.Errorf("gateway: metrics: %w", err)
		}
	}
	return g, nil
}

// openStore opens [store] dir (relative to the config file's directory), or
// with [cluster] the fleet's JetStream store, this instance's queue named by
// gateway.id.
func openStore(cfg *config.Config, log *zap.Logger) (store.Store, error) {
	s := cfg.Store
	if cfg.Clustered() {
		cl := cfg.Cluster
		ctx, cancel := context.WithTimeout(context.Background(), natsstore.DefaultTimeout)
		defer cancel()
		st, err := natsstore.Open(ctx, natsstore.Options{
			URLs: cl.NATS, Name: cl.Name, Instance: cfg.Gateway.ID, Replicas: cl.Replicas,
			CredsFile: cfg.Path(cl.CredsFile), Username: cl.Username, Password: cl.Password, Token: cl.Token,
			CAFile: cfg.Path(cl.TLS.CAFile), CertFile: cfg.Path(cl.TLS.CertFile), KeyFile: cfg.Path(cl.TLS.KeyFile),
			MaxMessages: s.MaxMessages, MaxBytes: s.MaxBytes,
			OwnerLease: cl.OwnerLease.D(), // the live key others' drains and /devices read (cluster.go)
		})
		if err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
		log.Info("durable store open in NATS JetStream", zap.String("fleet", cl.Name), zap.String("instance", cfg.Gateway.ID),
			zap.String("queue", natsstore.QueueStream(cl.Name, cfg.Gateway.ID)), zap.String("state", natsstore.StateBucket(cl.Name)))
		return st, nil
	}
	st, err := store.Open(cfg.Path(s.Dir), store.Options{
		CommitInterval: s.CommitInterval.D(),
		MaxMessages:    s.MaxMessages,
		MaxBytes:       s.MaxBytes,
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	log.Info("durable store open", zap.String("file", st.Path()))
	return st, nil
}

// closeStore closes the durable store, if any, after the proxy.
func (g *Gateway) closeStore() {
	if g.store == nil {
		return
	}
	if err := g.store.Close(); err != nil {
		g.log.Error("closing the durable store", zap.Error(err))
	}
}

// embeddedAuth is the embedded broker's CONNECT check: with auth.password_file,
// a username must have its password in the file in force (read at each
// CONNECT, so SIGHUP applies), with the same per-source failure limit as
// devices, and a client without one is taken only when auth.allow_anonymous;
// without the file, nil: every client, as before.
func (g *Gateway) embeddedAuth() func(remote netip.Addr, user, password string) bool {
	if g.cfg.Auth.PasswordFile == "" {
		return nil
	}
	anonymous := g.cfg.Auth.Anonymous()
	return func(remote netip.Addr, user, password string) bool {
		if user == "" {
			return anonymous
		}
		return g.auth.checkPassword(remote, user, password) == nil
	}
}

func tlsConfig(cfg *config.Config) (*tls.Config, error) {
	t := cfg.Upstream.TLS
	if t == (config.TLS{}) {
		return nil, nil
	}
	c := &tls.Config{ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(cfg.Path(t.CAFile))
		if err != nil {
			return nil, fmt.Errorf("gateway: upstream.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("gateway: upstream.tls.ca_file %q: no PEM certificate in it", t.CAFile)
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.Path(t.CertFile), cfg.Path(t.KeyFile))
		if err != nil {
			return nil, fmt.Errorf("gateway: upstream.tls client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// rules is the rules table in force (classes and downlinks included).
func (g *Gateway) rules() *mapping.Table { return g.table.Load() }

// ListenerAddr returns the bound address of the named listener, or nil.
func (g *Gateway) ListenerAddr(name string) net.Addr {
	for _, l := range g.listeners {
		if l.Name() == name {
			return l.Addr()
		}
	}
	return nil
}

// MetricsAddr is the metrics server's address, or nil when off.
func (g *Gateway) MetricsAddr() net.Addr {
	if g.metricsLn == nil {
		return nil
	}
	return g.metricsLn.Addr()
}

// Metrics exposes the registry, for tests and the CLI.
func (g *Gateway) Metrics() *metrics.Registry { return g.metrics }

// Proxy exposes the upstream connection, for tests.
func (g *Gateway) Proxy() *proxy.Proxy { return g.proxy }

// Run serves until ctx ends, then drains and returns nil; an error means the
// gateway could not start or a listener failed.
func (g *Gateway) Run(ctx context.Context) error {
	if err := g.proxy.Start(); err != nil {
		g.closeListeners()
		if g.metricsLn != nil {
			g.metricsLn.Close()
		}
		g.closeStore()
		return err
	}
	g.sessionKeeper.start()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(g.listeners)+1)
	for _, l := range g.listeners {
		wg.Add(1)
		g.log.Info("listening", zap.String("listener", l.Name()), zap.Stringer("addr", l.Addr()))
		go func() {
			defer wg.Done()
			if err := l.Serve(ctx); err != nil {
				errs <- err
				cancel()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		g.drive(ctx)
	}()
	if st := g.fleetStore(); st != nil {
		wg.Go(func() { g.drainer(ctx, st) }) // dead instances' queues (drain.go)
	}
	var srv *http.Server
	if g.metricsLn != nil {
		srv = g.metricsServer()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(g.metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("gateway: metrics: %w", err)
			}
		}()
	}
	<-ctx.Done()
	g.log.Info("shutting down: draining in-flight messages", zap.Duration("drain_timeout", g.cfg.Gateway.DrainTimeout.D()))
	g.fences.close() // no publish waits for another instance's queue at shutdown
	g.closeListeners()
	if srv != nil {
		sctx, scancel := context.WithTimeout(context.Background(), time.Second)
		_ = srv.Shutdown(sctx)
		scancel()
	}
	wg.Wait()
	g.acks.wait()
	g.sessionKeeper.close() // the listeners' last changes, before the store closes
	for _, tb := range g.transparent {
		tb.closeAll() // before the proxy: the devices' connections are its clients
	}
	dctx, dcancel := context.WithTimeout(context.Background(), g.cfg.Gateway.DrainTimeout.D())
	defer dcancel()
	_ = g.proxy.Close(dctx)
	g.closeStore()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// expireEvery is how often the driver looks for lost sessions: a will goes out
// at most this long after 1.5 keepalives of silence.
const expireEvery = 500 * time.Millisecond

// drive is the gateway's one periodic driver (ARCHITECTURE.md rule 7): every
// timed thing is a function of now called from here — session expiry with its
// wills, the engines' own timers, the ack dedup windows.
func (g *Gateway) drive(ctx context.Context) {
	every := expireEvery
	for _, t := range g.tickers {
		every = min(every, t.TickEvery())
	}
	next := make([]time.Time, len(g.tickers))
	tk := time.NewTicker(every)
	defer tk.Stop()
	var nextExpire time.Time
	for {
		now := time.Now()
		for i, t := range g.tickers {
			if !now.Before(next[i]) {
				t.Tick(now)
				next[i] = now.Add(t.TickEvery())
			}
		}
		if !now.Before(nextExpire) {
			nextExpire = now.Add(expireEvery)
			g.expire(now)
		}
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
	}
}

// expire is the driver's session step at now.
func (g *Gateway) expire(now time.Time) {
	g.sampleStatus(now)
	if n := g.sessions.Expire(now, g.sessionLost); n > 0 {
		g.expiredDownlinks.Add(uint64(n))
	}
	g.acks.expire(now)
}

func (g *Gateway) closeListeners() {
	for _, l := range g.listeners {
		_ = l.Close()
	}
}

// metricsServer serves the metrics listener: /metrics, /healthz, the status
// page, /devices, pprof when enabled; behind basic auth when configured.
func (g *Gateway) metricsServer() *http.Server {
	return &http.Server{Handler: g.metricsHandler, ReadHeaderTimeout: 5 * time.Second}
}

func (g *Gateway) metricsMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", g.metrics.Handler())
	mux.HandleFunc("GET /devices", g.serveDevices)
	mux.HandleFunc("GET /{$}", g.serveStatusPage)
	mux.HandleFunc("GET /status.json", g.serveStatusJSON)
	mux.Handle("GET /static/", statusAssets())
	if g.cfg.Metrics.PProf {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		st := g.proxy.State()
		if !st.Connected {
			msg := "broker not connected"
			if st.Problem != "" {
				msg += ": " + st.Problem
			}
			http.Error(w, msg, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}
