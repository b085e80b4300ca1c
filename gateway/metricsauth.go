package gateway

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/mqttgw/mqttgw/auth"
	"github.com/mqttgw/mqttgw/config"
)

// metricsAuth wraps the metrics listener's handler in HTTP basic auth (RFC 7617)
// when [metrics] username and password are set; the password is checked like a
// password file's (constant time, PBKDF2), so the config holds only a hash.
func metricsAuth(m config.Metrics, next http.Handler) (http.Handler, error) {
	if m.Username == "" {
		return next, nil
	}
	pw, err := auth.ParsePasswords("metrics.password", strings.NewReader(m.Username+":"+m.Password+"\n"))
	if err != nil {
		return nil, fmt.Errorf("gateway: metrics.password: %w", err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || !pw.Check(user, pass) {
			w.Header().Set("WWW-Authenticate", `Basic realm="mqttgw", charset="UTF-8"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	}), nil
}
