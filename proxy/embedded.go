package proxy

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"
)

// embedded is the in-process broker for `url = "embedded"`: the zero-install
// default, so `make run` needs nothing else and local clients can subscribe to it.
//
// Its clients are checked by embeddedHook: Options.EmbeddedAuth decides who may
// connect and Options.EmbeddedACL what each may publish and subscribe to (both
// nil: everyone, everything, as a broker without password and ACL files). The
// gateway's own connection is recognized by a secret made at start that only
// this process knows; it is never checked, and it alone may publish to the
// gateway's status topic.
type embedded struct {
	srv  *mqtt.Server
	addr string
	// user and secret are the credentials of the gateway's own connection.
	user, secret string
}

// embeddedOptions are what startEmbedded takes from Options.
type embeddedOptions struct {
	listen      string
	auth        func(remote netip.Addr, user, password string) bool
	acl         func(clientID, user, topic string, write bool) bool
	statusTopic string // "" = none
	clientID    string // the gateway's own client id; "" = none to guard
	user        string // the gateway's username; "" = embeddedUser
	log         *zap.Logger
}

// embeddedUser is the gateway's username on the embedded broker when
// upstream.username is not set. It is only a label: the secret is the proof.
const embeddedUser = "mqttgw"

func startEmbedded(o embeddedOptions) (*embedded, error) {
	if o.user == "" {
		o.user = embeddedUser
	}
	e := &embedded{user: o.user, secret: rand.Text()}
	srv := mqtt.New(&mqtt.Options{
		InlineClient: false,
		Logger:       slog.New(zapHandler{o.log}),
	})
	hook := &embeddedHook{o: o, secret: []byte(e.secret), log: o.log}
	if err := srv.AddHook(hook, nil); err != nil {
		return nil, fmt.Errorf("proxy: embedded broker: %w", err)
	}
	tcp := listeners.NewTCP(listeners.Config{Type: "tcp", ID: "embedded", Address: o.listen})
	if err := srv.AddListener(tcp); err != nil {
		return nil, fmt.Errorf("proxy: embedded broker: listen %s: %w", o.listen, err)
	}
	if err := srv.Serve(); err != nil {
		return nil, fmt.Errorf("proxy: embedded broker: %w", err)
	}
	e.srv, e.addr = srv, tcp.Address()
	return e, nil
}

func (e *embedded) close() { _ = e.srv.Close() }

// embeddedHook is the embedded broker's authentication and authorization, with
// Mosquitto's semantics:
//
//   - CONNECT: the username and password go to auth (an anonymous client, with no
//     username, as ""); a refused client gets CONNACK "bad username or password".
//     A client that is not the gateway may not take the gateway's client id (it
//     would cut the gateway off and fire its will), nor carry a will the ACL
//     denies or one on the gateway's status topic (Mosquitto 2 checks the will
//     topic at CONNECT too; mochi publishes wills without an ACL check).
//   - PUBLISH: a topic acl denies for writing, or the gateway's status topic, is
//     acknowledged as usual and dropped: neither delivered nor retained
//     (Mosquitto, MQTT 3.1.1). It is decided in OnPublish, after an MQTT 5 topic
//     alias is resolved; mochi's own ACL check of a publish would disconnect a
//     QoS >= 1 publisher of MQTT 3.1.1 instead.
//   - SUBSCRIBE: each filter is checked for reading ($share/GROUP/ removed
//     first); a denied one is refused in the SUBACK (0x80). Every delivered
//     message is checked for reading again with its topic.
type embeddedHook struct {
	mqtt.HookBase
	o      embeddedOptions
	secret []byte
	log    *zap.Logger
	// gateway is the gateway's current connection: it authenticated with the
	// secret. Cleared when that connection ends.
	gateway atomic.Pointer[mqtt.Client]
	limit   logLimit
}

func (h *embeddedHook) ID() string { return "mqttgw-auth" }

func (h *embeddedHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish, mqtt.OnDisconnect:
		return true
	}
	return false
}

// remoteAddr is the address of a client's "IP:port", for per-source limits;
// the zero Addr when it is not one (a unix socket, a websocket proxy's name).
func remoteAddr(remote string) netip.Addr {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

// isGatewayLogin reports whether a CONNECT carries the gateway's credentials.
func (h *embeddedHook) isGatewayLogin(pk packets.Packet) bool {
	return string(pk.Connect.Username) == h.o.user && subtle.ConstantTimeCompare(pk.Connect.Password, h.secret) == 1
}

func (h *embeddedHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if h.isGatewayLogin(pk) {
		h.gateway.Store(cl)
		return true
	}
	user := ""
	if pk.Connect.UsernameFlag {
		user = string(pk.Connect.Username)
	}
	reason := ""
	switch {
	case h.o.clientID != "" && cl.ID == h.o.clientID:
		reason = "the client id is the gateway's own"
	case h.o.auth != nil && !h.o.auth(remoteAddr(cl.Net.Remote), user, string(pk.Connect.Password)):
		reason = "bad username or password"
		if user == "" {
			reason = "anonymous clients are not allowed"
		}
	case pk.Connect.WillFlag && h.o.statusTopic != "" && pk.Connect.WillTopic == h.o.statusTopic:
		reason = "its will is on the gateway's status topic, which only the gateway writes"
	case pk.Connect.WillFlag && h.o.acl != nil && !h.o.acl(cl.ID, user, pk.Connect.WillTopic, true):
		reason = "the acl denies its will topic"
	default:
		return true
	}
	if ok, skipped := h.limit.allow(time.Now()); ok {
		h.log.Info("refused a client", zap.String("client", cl.ID), zap.String("user", user),
			zap.String("remote", cl.Net.Remote), zap.String("reason", reason), zap.Int("suppressed_before", skipped))
	}
	return false
}

func (h *embeddedHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.gateway.CompareAndSwap(cl, nil)
}

// OnACLCheck decides subscriptions and deliveries (write is false). Publishes
// (write true) are decided by OnPublish: see embeddedHook.
func (h *embeddedHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if write || h.o.acl == nil || h.gateway.Load() == cl {
		return true
	}
	if ok := h.o.acl(cl.ID, string(cl.Properties.Username), unshare(topic), false); ok {
		return true
	}
	h.log.Debug("denied by acl", zap.String("client", cl.ID), zap.String("user", string(cl.Properties.Username)),
		zap.String("topic", topic), zap.String("access", "read"))
	return false
}

func (h *embeddedHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if h.gateway.Load() == cl {
		return pk, nil
	}
	user := string(cl.Properties.Username)
	if h.o.statusTopic != "" && pk.TopicName == h.o.statusTopic {
		if ok, skipped := h.limit.allow(time.Now()); ok {
			h.log.Info("dropped a publish to the gateway's status topic, which only the gateway writes",
				zap.String("client", cl.ID), zap.String("user", user), zap.String("remote", cl.Net.Remote),
				zap.String("topic", pk.TopicName), zap.Int("suppressed_before", skipped))
		}
		return pk, packets.CodeSuccessIgnore
	}
	if h.o.acl != nil && !h.o.acl(cl.ID, user, pk.TopicName, true) {
		h.log.Debug("denied by acl", zap.String("client", cl.ID), zap.String("user", user),
			zap.String("topic", pk.TopicName), zap.String("access", "write"))
		return pk, packets.CodeSuccessIgnore
	}
	return pk, nil
}

// unshare removes the "$share/GROUP/" of a shared subscription (MQTT 5 §4.8.2),
// so that the ACL sees the filter itself, as Mosquitto does.
func unshare(filter string) string {
	rest, ok := strings.CutPrefix(filter, "$share/")
	if !ok {
		return filter
	}
	if _, f, ok := strings.Cut(rest, "/"); ok {
		return f
	}
	return filter
}

// logLimit lets one log line a second through, counting the ones it holds back,
// so that a client retrying a refused login cannot flood the log.
type logLimit struct {
	mu      sync.Mutex // guards the fields below
	next    time.Time
	skipped int
}

func (l *logLimit) allow(now time.Time) (ok bool, skipped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Before(l.next) {
		l.skipped++
		return false, 0
	}
	skipped, l.skipped, l.next = l.skipped, 0, now.Add(time.Second)
	return true, skipped
}

// zapHandler passes the embedded broker's warnings and errors to the gateway's
// logger; its info chatter stays out of the gateway's log.
//
// mochi's TCP listener logs the error that ended each client connection as a
// warning with an empty message (listeners/tcp.go: `l.log.Warn("", "error",
// err)`), and a client that hangs up without DISCONNECT, or is refused, ends
// with one. Such a record is logged at debug as "client connection ended":
// a client going away is no warning about the gateway.
type zapHandler struct{ log *zap.Logger }

func (h zapHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

// connectionEnded is the message of the listener's records.
const connectionEnded = "client connection ended"

func (h zapHandler) Handle(_ context.Context, r slog.Record) error {
	fields := make([]zap.Field, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool {
		fields = append(fields, zapField(a))
		return true
	})
	switch {
	case r.Message == "":
		h.log.Debug(connectionEnded, fields...)
	case r.Level >= slog.LevelError:
		h.log.Error(r.Message, fields...)
	default:
		h.log.Warn(r.Message, fields...)
	}
	return nil
}

// zapField converts one slog attribute; an error keeps zap's error encoding.
func zapField(a slog.Attr) zap.Field {
	v := a.Value.Resolve().Any()
	if err, ok := v.(error); ok {
		return zap.NamedError(a.Key, err)
	}
	return zap.Any(a.Key, v)
}

func (h zapHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	fields := make([]zap.Field, len(attrs))
	for i, a := range attrs {
		fields[i] = zapField(a)
	}
	return zapHandler{h.log.With(fields...)}
}

func (h zapHandler) WithGroup(name string) slog.Handler { return zapHandler{h.log.Named(name)} }
