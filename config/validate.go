package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxDatagram is the largest UDP payload over IPv4 (65535 − 8 − 20).
const MaxDatagram = 65507

func (c *Config) applyDefaults() {
	g := &c.Gateway
	if g.ID == "" {
		g.ID = "mqttgw"
	}
	if g.StatusTopic == "" {
		g.StatusTopic = "mqttgw/" + g.ID + "/status"
	}
	setDuration(&g.DrainTimeout, 10*time.Second)
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "console"
	}
	u := &c.Upstream
	if u.URL == "" {
		u.URL = "embedded"
	}
	if u.ClientID == "" {
		u.ClientID = "mqttgw-" + g.ID
	}
	setDuration(&u.Keepalive, 30*time.Second)
	setDuration(&u.ConnectTimeout, 10*time.Second)
	setDuration(&u.PublishTimeout, 10*time.Second)
	setDuration(&u.ReconnectMin, 500*time.Millisecond)
	setDuration(&u.ReconnectMax, 30*time.Second)
	if u.Embedded.Listen == "" {
		u.Embedded.Listen = "127.0.0.1:1883"
	}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		if l.MaxPacket == 0 {
			l.MaxPacket = MaxDatagram
		}
		if port := l.Kind().DefaultPort; l.Bind == "" && port != "" {
			l.Bind = "127.0.0.1:" + port
		}
		l.MQTTSN.applyDefaults()
		l.CoAP.applyDefaults()
		if l.Mode == ModeTransparent && l.Transparent.MaxConnections == 0 {
			l.Transparent.MaxConnections = DefaultMaxConnections
		}
	}
	for i := range c.Rules {
		if a := c.Rules[i].Ack; a != nil {
			a.applyDefaults(c, fmt.Sprintf("rule[%d].ack", i))
		}
	}
	for i := range c.Classes {
		c.Classes[i].applyDefaults()
	}
	for i := range c.Downlinks {
		c.Downlinks[i].applyDefaults(c, fmt.Sprintf("downlink[%d]", i))
	}
	c.Cluster.applyDefaults()
}

func setDuration(d *Duration, def time.Duration) {
	if *d == 0 {
		*d = Duration(def)
	}
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func (c *Config) validate() Problems {
	var ps Problems
	add := func(key, format string, args ...any) { ps = append(ps, Problemf(key, format, args...)) }
	warn := func(key, format string, args ...any) {
		p := Problemf(key, format, args...)
		p.Warning = true
		ps = append(ps, p)
	}

	if strings.ContainsAny(c.Gateway.ID, "/+#\x00") {
		add("gateway.id", "%q must not contain '/', '+', '#' or NUL: it is used in topics and client ids", c.Gateway.ID)
	}
	if err := CheckTopic(c.Gateway.StatusTopic); err != nil {
		add("gateway.status_topic", "%v", err)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "unknown level %q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "console", "json":
	default:
		add("log.format", "unknown format %q: want console or json", c.Log.Format)
	}

	u := c.Upstream
	tlsSet := u.TLS != (TLS{})
	if u.URL == "embedded" {
		if err := checkHostPort(u.Embedded.Listen); err != nil {
			add("upstream.embedded.listen", "%v", err)
		}
		if tlsSet {
			warn("upstream.tls", "ignored: upstream.url is \"embedded\"")
		}
	} else {
		pu, err := url.Parse(u.URL)
		switch {
		case err != nil:
			add("upstream.url", "%q is not a URL: want tcp://HOST:PORT, ssl://HOST:PORT, ws://, wss:// or \"embedded\"", u.URL)
		case pu.Scheme != "tcp" && pu.Scheme != "mqtt" && pu.Scheme != "ssl" && pu.Scheme != "tls" && pu.Scheme != "mqtts" && pu.Scheme != "ws" && pu.Scheme != "wss":
			add("upstream.url", "unsupported scheme %q: want tcp (or mqtt), ssl (or mqtts, tls), ws, wss or \"embedded\"", pu.Scheme)
		case pu.Hostname() == "":
			add("upstream.url", "%q has no host", u.URL)
		case pu.Port() == "" && pu.Scheme != "ws" && pu.Scheme != "wss":
			add("upstream.url", "%q has no port (Mosquitto listens on 1883, or 8883 for TLS)", u.URL)
		case tlsSet && (pu.Scheme == "tcp" || pu.Scheme == "mqtt" || pu.Scheme == "ws"):
			warn("upstream.tls", "ignored: upstream.url %q is not TLS (use ssl:// or wss://)", u.URL)
		}
		for _, f := range []struct{ key, path string }{
			{"upstream.tls.ca_file", u.TLS.CAFile},
			{"upstream.tls.cert_file", u.TLS.CertFile},
			{"upstream.tls.key_file", u.TLS.KeyFile},
		} {
			if f.path == "" {
				continue
			}
			if _, err := os.Stat(c.Path(f.path)); err != nil {
				add(f.key, "cannot read %q: %v", f.path, unwrapPathError(err))
			}
		}
		if (u.TLS.CertFile == "") != (u.TLS.KeyFile == "") {
			add("upstream.tls", "cert_file and key_file go together: set both or neither")
		}
	}
	if u.Keepalive.D() < time.Second && u.Keepalive != 0 {
		add("upstream.keepalive", "must be at least 1s (MQTT counts keepalive in seconds)")
	}
	if u.Keepalive.D() > 65535*time.Second {
		add("upstream.keepalive", "must be at most 65535s (MQTT 3.1.1 §3.1.2.10)")
	}
	if u.QueueMessages < 0 {
		add("upstream.queue_messages", "%d: want a positive number of messages (0: the default, 10000)", u.QueueMessages)
	}
	if u.MaxInflightQoS2 < 0 || u.MaxInflightQoS2 > 65535 {
		add("upstream.max_inflight_qos2", "%d: want 1 to 65535, at most the broker's max_inflight_messages (0: the default, 20)", u.MaxInflightQoS2)
	}
	if u.QueueBytes < 0 || u.QueueBytes > 0 && u.QueueBytes < MaxDatagram {
		add("upstream.queue_bytes", "%d: want at least %d bytes, one largest datagram (0: the default, 64 MiB)", u.QueueBytes, MaxDatagram)
	}
	if u.ReconnectMin > u.ReconnectMax {
		add("upstream.reconnect_min", "%v is larger than reconnect_max %v", u.ReconnectMin.D(), u.ReconnectMax.D())
	}
	if c.Metrics.Listen != "" {
		if err := checkHostPort(c.Metrics.Listen); err != nil {
			add("metrics.listen", "%v", err)
		}
	}
	c.Metrics.validate(add)
	c.Store.validate(c.Clustered(), add)
	c.validateCluster(add, warn)

	c.MQTTSN.validate(add)
	for _, f := range []struct{ key, path string }{
		{"auth.psk_file", c.Auth.PSKFile},
		{"auth.password_file", c.Auth.PasswordFile},
		{"auth.acl_file", c.Auth.ACLFile},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(c.Path(f.path)); err != nil {
			add(f.key, "cannot read %q: %v", f.path, unwrapPathError(err))
		}
	}
	if len(c.Listeners) == 0 {
		warn("listener", "no [[listener]] configured: the gateway will accept no devices")
	}
	names := map[string]int{}
	binds := map[string]int{}
	for i, l := range c.Listeners {
		key := fmt.Sprintf("listener[%d]", i)
		switch {
		case l.Name == "":
			add(key+".name", "missing: every listener needs a name that rules refer to")
		case !nameRE.MatchString(l.Name):
			add(key+".name", "%q may only contain letters, digits, '_' and '-'", l.Name)
		default:
			if j, dup := names[l.Name]; dup {
				add(key+".name", "duplicate listener name %q (also listener[%d], line %d)", l.Name, j, c.Pos(fmt.Sprintf("listener[%d].name", j)))
			} else {
				names[l.Name] = i
			}
		}
		if _, ok := KindOf(l.Type); !ok {
			if l.Type == "" {
				add(key+".type", "missing: want one of %s", strings.Join(listenerTypes(), ", "))
			} else {
				add(key+".type", "unknown listener type %q: want one of %s", l.Type, strings.Join(listenerTypes(), ", "))
			}
		}
		if l.Bind == "" {
			add(key+".bind", "missing: want HOST:PORT such as \"127.0.0.1:1885\" or \":1885\"")
		} else if err := checkHostPort(l.Bind); err != nil {
			add(key+".bind", "%v", err)
		} else if j, dup := binds[l.Bind]; dup && !strings.HasSuffix(l.Bind, ":0") { // port 0: the kernel picks distinct ports
			add(key+".bind", "%q is already bound by listener[%d]", l.Bind, j)
		} else {
			binds[l.Bind] = i
		}
		if l.ReadBuffer < 0 || l.ReadBuffer > 1<<30 {
			add(key+".read_buffer", "%d is out of range 0..%d (bytes; 0: 4 MiB)", l.ReadBuffer, 1<<30)
		}
		if l.MaxPacket < 1 || l.MaxPacket > MaxDatagram {
			add(key+".max_packet", "%d is out of range 1..%d", l.MaxPacket, MaxDatagram)
		}
		if l.Mountpoint != "" && strings.ContainsAny(l.Mountpoint, "+#\x00") {
			add(key+".mountpoint", "%q must not contain '+', '#' or NUL", l.Mountpoint)
		}
		l.validateMode(i, add, warn)
		opts := l.Kind().Options
		switch opts {
		case "mqttsn":
			l.MQTTSN.validate(key+".mqttsn", add)
			if l.MQTTSN.RequireKnownClient && c.Auth.PasswordFile == "" {
				add(key+".mqttsn.require_known_client", "needs auth.password_file: the client ids it knows are that file's users")
			}
			if l.Kind().DTLS {
				if c.Auth.PSKFile == "" {
					add(key+".type", "%q needs auth.psk_file: its devices prove their client id with a DTLS pre-shared key (the PSK identity is the client id)", l.Type)
				}
				// ADVERTISE is a broadcast (MQTT-SN 1.2 §6.1), which no DTLS
				// session carries: refused rather than silently dropped.
				if c.isSet(key + ".mqttsn.advertise_interval") {
					add(key+".mqttsn.advertise_interval", "%q cannot send ADVERTISE: it is a broadcast, and DTLS has no session to carry it (clients of an mqttsns listener are given its address)", l.Type)
				}
			} else {
				for _, k := range []string{"handshake_timeout", "max_handshakes"} {
					if c.isSet(key + ".mqttsn." + k) {
						warn(key+".mqttsn."+k, "ignored: the listener's type is %q, not %q (DTLS)", l.Type, ListenerMQTTSNS)
					}
				}
			}
		case "coap":
			l.CoAP.validate(key+".coap", add)
		}
		if opts != "mqttsn" && c.isSet(key+".mqttsn") {
			warn(key+".mqttsn", "ignored: the listener's type is %q, not \"mqttsn\" or \"mqttsns\"", l.Type)
		}
		if opts != "coap" && c.isSet(key+".coap") {
			warn(key+".coap", "ignored: the listener's type is %q, not \"coap\" or \"coaps\"", l.Type)
		}
		if l.DeadLetterTopic != "" {
			if err := CheckTopic(l.DeadLetterTopic); err != nil {
				add(key+".dead_letter_topic", "%v", err)
			}
		}
	}
	// Rules, classes and downlinks are compiled by mapping, which reports their
	// names, listeners and templates; here only their plain values.
	for i := range c.Rules {
		if a := c.Rules[i].Ack; a != nil {
			a.validate(c, fmt.Sprintf("rule[%d].ack", i), add, warn)
		}
	}
	for i := range c.Classes {
		c.Classes[i].validate(fmt.Sprintf("class[%d]", i), add)
	}
	for i := range c.Downlinks {
		c.Downlinks[i].validate(c, fmt.Sprintf("downlink[%d]", i), add, warn)
	}
	return ps
}

// isSet reports whether the file wrote key (or something below it).
func (c *Config) isSet(key string) bool {
	_, ok := c.positions[key]
	return ok
}

// Path resolves a file name from the config relative to the config file's folder.
func (c *Config) Path(p string) string {
	if p == "" || strings.HasPrefix(p, "/") || c.File == "" {
		return p
	}
	if i := strings.LastIndexByte(c.File, '/'); i >= 0 {
		return c.File[:i+1] + p
	}
	return p
}

func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 0 to 65535", s, port)
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		return fmt.Errorf("%q: bind to an IP address (or leave the host empty for all)", s)
	}
	return nil
}

// CheckTopic reports why name cannot be an MQTT topic name to publish to
// (MQTT 3.1.1 §4.7): empty, wildcards, NUL, not UTF-8, or longer than 65535 bytes.
func CheckTopic(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("topic is empty")
	case strings.ContainsAny(name, "+#"):
		return fmt.Errorf("topic %q contains a wildcard ('+' or '#'): publish topics cannot", name)
	case strings.ContainsRune(name, 0):
		return fmt.Errorf("topic %q contains NUL", name)
	case !utf8.ValidString(name):
		return fmt.Errorf("topic %q is not UTF-8", name)
	case len(name) > 65535:
		return fmt.Errorf("topic is longer than 65535 bytes")
	}
	return nil
}
