package gateway

import (
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/auth"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// acl applies [auth] acl_file to every device publish and subscribe/observe,
// whatever the protocol, with Mosquitto's semantics (package auth). Topics are
// checked as the broker sees them: topic rules and mountpoint applied. A device
// is known by its session: the client id (the session's device id) is %c, the
// username it proved is %u; a device without a session (an MQTT-SN QoS -1
// publisher that never connected) is anonymous.
//
// Without an acl_file in force everything is allowed (no acl_file: today's
// behaviour); the file in force is the gateway's authFiles, which Reload replaces.
type acl struct {
	g   *Gateway
	log logLimit
}

func (a *acl) allowed(listener, device, topic string, access auth.Access) bool {
	file := a.g.authFiles.Load().acl
	if file == nil {
		return true
	}
	user := ""
	if s := a.g.sessions.Lookup(session.Key{Listener: listener, Device: device}); s != nil {
		user = s.User()
	}
	if file.Allowed(device, user, topic, access) {
		return true
	}
	what := "write"
	if access == auth.Read {
		what = "read"
	}
	a.g.metrics.Counter("mqttgw_acl_denied_total", "Device publishes (write) and subscriptions (read) the ACL denied.", "listener", listener, "access", what).Inc()
	// One device hammering a denied topic must not flood the log.
	if logIt, skipped := a.log.allow(time.Now()); logIt {
		a.g.log.Info("denied by acl_file", zapListener(listener), zap.String("device", device), zap.String("user", user),
			zap.String("topic", topic), zap.String("access", what), zap.Int("suppressed_before", skipped))
	}
	return false
}

// forbidden is the error engines turn into their protocol's refusal (MQTT-SN
// return code 0x03, CoAP 4.03).
func forbidden(topic string) error {
	return fmt.Errorf("%w: %q", udpgw.ErrForbidden, topic)
}
