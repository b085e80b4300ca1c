package gateway

import (
	"errors"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/auth"
)

// logLimit lets one log line a second through, counting the ones it held back,
// so that a device (or an attacker) repeating a refused request cannot flood
// the log while every refusal is still counted in a metric.
type logLimit struct {
	mu      sync.Mutex
	next    time.Time
	skipped int
}

// allow reports whether a line may be logged at now and how many were held
// back since the last one.
func (l *logLimit) allow(now time.Time) (ok bool, skipped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Before(l.next) {
		l.skipped++
		return false, 0
	}
	skipped, l.next, l.skipped = l.skipped, now.Add(time.Second), 0
	return true, skipped
}

// Password failures allowed per source before its checks are refused without
// hashing: a burst of 5, then one every 10 s. The hash (PBKDF2) costs
// milliseconds, so unlimited guessing would also be a way to burn the CPU.
const (
	authFailBurst   = 5
	authFailPer     = 10 * time.Second
	authFailSources = 65536
)

// authGuard checks device passwords with a per-source failure budget and makes
// every refused authentication visible: counted by listener and reason, and
// logged at info, at most once a second.
type authGuard struct {
	g       *Gateway
	limiter *auth.FailureLimiter
	log     logLimit
}

func newAuthGuard(g *Gateway) *authGuard {
	return &authGuard{g: g, limiter: auth.NewFailureLimiter(authFailBurst, authFailPer, authFailSources)}
}

// Why a password check failed; the text is the reason label and log field.
var (
	errBadPassword  = errors.New("bad user name or password")
	errTooManyFails = errors.New("too many failed authentications from this address")
)

// checkPassword checks a device's password from a source, refusing a source
// that used up its failures without hashing.
func (a *authGuard) checkPassword(from netip.Addr, user, password string) error {
	now := time.Now()
	if !a.limiter.Allow(from, now) {
		return errTooManyFails
	}
	if a.g.checkPassword(user, password) {
		return nil
	}
	a.limiter.Fail(from, now)
	return errBadPassword
}

// refused counts and logs one refused authentication.
func (a *authGuard) refused(listener string, from netip.AddrPort, user, reason string) {
	a.g.metrics.Counter("mqttgw_auth_failures_total", "Device authentications refused, by listener and reason.", "listener", listener, "reason", reason).Inc()
	if ok, skipped := a.log.allow(time.Now()); ok {
		a.g.log.Info("device authentication refused", zapListener(listener), zap.Stringer("from", from), zap.String("user", user),
			zap.String("reason", reason), zap.Int("suppressed_before", skipped))
	}
}
