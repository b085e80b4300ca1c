package gateway

import (
	"context"
	"fmt"
	"reflect"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/auth"
	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/mapping"
)

// authFiles are the [auth] files in force. They are replaced as a whole by
// Reload and read at each use (g.authFiles.Load()), so that a reload takes
// effect for the next datagram without dropping a session. A nil field means
// the file is not configured.
type authFiles struct {
	passwords *auth.Passwords
	psk       *auth.PSKs
	acl       *auth.ACL
}

// loadAuthFiles reads every configured [auth] file; the first that fails to load
// is the error (auth's errors name FILE:LINE).
func loadAuthFiles(cfg *config.Config) (*authFiles, error) {
	a := cfg.Auth
	f := &authFiles{}
	var err error
	if a.PasswordFile != "" {
		if f.passwords, err = auth.LoadPasswordFile(cfg.Path(a.PasswordFile)); err != nil {
			return nil, fmt.Errorf("gateway: auth.password_file: %w", err)
		}
	}
	if a.PSKFile != "" {
		if f.psk, err = auth.LoadPSKFile(cfg.Path(a.PSKFile)); err != nil {
			return nil, fmt.Errorf("gateway: auth.psk_file: %w", err)
		}
	}
	if a.ACLFile != "" {
		if f.acl, err = auth.LoadACLFile(cfg.Path(a.ACLFile)); err != nil {
			return nil, fmt.Errorf("gateway: auth.acl_file: %w", err)
		}
	}
	return f, nil
}

// checkPassword is the password_file check of the files in force; false when
// there is none.
func (g *Gateway) checkPassword(user, password string) bool {
	p := g.authFiles.Load().passwords
	return p != nil && p.Check(user, password)
}

// knownUser reports whether user is in the password file in force.
func (g *Gateway) knownUser(user string) bool {
	p := g.authFiles.Load().passwords
	return p != nil && p.Has(user)
}

// pskKey is the DTLS PSK lookup of the psk_file in force.
func (g *Gateway) pskKey(identity string) ([]byte, bool) {
	p := g.authFiles.Load().psk
	if p == nil {
		return nil, false
	}
	return p.Key(identity)
}

// Reload applies cfg, read again from the same file (SIGHUP): the rules table,
// classes, downlinks and the password, PSK and ACL files, atomically. When any of
// them fails to load, nothing changes and the error says why. Settings that
// need a restart (listeners, upstream, metrics, which [auth] files exist,
// allow_anonymous) keep their running values; each such change is logged.
// Live sessions keep going: a session created after the reload gets the new
// class, a live one keeps its class until it ends.
func (g *Gateway) Reload(ctx context.Context, cfg *config.Config) error {
	table, ps := mapping.CompileConfig(cfg)
	if errs := cfg.Locate(ps).Errors(); len(errs) > 0 {
		return fmt.Errorf("gateway: reload: %w", errs)
	}
	files, err := loadAuthFiles(cfg)
	if err != nil {
		return fmt.Errorf("gateway: reload: %w", err)
	}
	if needs := restartNeeded(g.cfg, cfg); len(needs) > 0 {
		g.log.Warn("reload: these settings changed but need a restart to take effect", zap.Strings("settings", needs))
	}
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	old := g.table.Load()
	g.table.Store(table)
	g.authFiles.Store(files)
	if err := g.downs.resubscribe(ctx, old, table); err != nil {
		// The new table is in force; a downlink whose subscription failed is
		// retried by the proxy's reconnect, like one made before the broker came.
		g.log.Warn("reload: downlink subscription", zap.Error(err))
	}
	g.log.Info("reloaded rules, classes, downlinks and auth files", zap.String("config", cfg.File))
	return nil
}

// restartNeeded names the settings that differ between the running config and
// the reloaded one but are applied only at start.
func restartNeeded(running, next *config.Config) []string {
	var out []string
	if !reflect.DeepEqual(running.Listeners, next.Listeners) {
		out = append(out, "listener")
	}
	if !reflect.DeepEqual(running.Upstream, next.Upstream) {
		out = append(out, "upstream")
	}
	if !reflect.DeepEqual(running.Metrics, next.Metrics) {
		out = append(out, "metrics")
	}
	if !reflect.DeepEqual(running.Gateway, next.Gateway) {
		out = append(out, "gateway")
	}
	if !reflect.DeepEqual(running.Store, next.Store) {
		out = append(out, "store")
	}
	if !reflect.DeepEqual(running.MQTTSN, next.MQTTSN) {
		out = append(out, "mqttsn")
	}
	ra, na := running.Auth, next.Auth
	if (ra.PasswordFile == "") != (na.PasswordFile == "") {
		out = append(out, "auth.password_file (added or removed)")
	}
	if (ra.PSKFile == "") != (na.PSKFile == "") {
		out = append(out, "auth.psk_file (added or removed)")
	}
	if ra.Anonymous() != na.Anonymous() {
		out = append(out, "auth.allow_anonymous")
	}
	return out
}
