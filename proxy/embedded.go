package proxy

import (
	"context"
	"fmt"
	"log/slog"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"go.uber.org/zap"
)

// embedded is the in-process broker for `url = "embedded"`: the zero-install
// default, so `make run` needs nothing else and local clients can subscribe to it.
// It allows every client: it listens on loopback by default, and whoever exposes it
// wider should run a real broker with authentication instead.
type embedded struct {
	srv  *mqtt.Server
	addr string
}

func startEmbedded(listen string, log *zap.Logger) (*embedded, error) {
	srv := mqtt.New(&mqtt.Options{
		InlineClient: false,
		Logger:       slog.New(zapHandler{log}),
	})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, fmt.Errorf("proxy: embedded broker: %w", err)
	}
	tcp := listeners.NewTCP(listeners.Config{Type: "tcp", ID: "embedded", Address: listen})
	if err := srv.AddListener(tcp); err != nil {
		return nil, fmt.Errorf("proxy: embedded broker: listen %s: %w", listen, err)
	}
	if err := srv.Serve(); err != nil {
		return nil, fmt.Errorf("proxy: embedded broker: %w", err)
	}
	return &embedded{srv: srv, addr: tcp.Address()}, nil
}

func (e *embedded) close() { _ = e.srv.Close() }

// zapHandler passes the embedded broker's warnings and errors to the gateway's
// logger; its info chatter stays out of the gateway's log.
type zapHandler struct{ log *zap.Logger }

func (h zapHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h zapHandler) Handle(_ context.Context, r slog.Record) error {
	fields := make([]zap.Field, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool {
		fields = append(fields, zap.Any(a.Key, a.Value.Any()))
		return true
	})
	if r.Level >= slog.LevelError {
		h.log.Error(r.Message, fields...)
	} else {
		h.log.Warn(r.Message, fields...)
	}
	return nil
}

func (h zapHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	fields := make([]zap.Field, len(attrs))
	for i, a := range attrs {
		fields[i] = zap.Any(a.Key, a.Value.Any())
	}
	return zapHandler{h.log.With(fields...)}
}

func (h zapHandler) WithGroup(name string) slog.Handler { return zapHandler{h.log.Named(name)} }
