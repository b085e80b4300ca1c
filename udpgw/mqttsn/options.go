package mqttsn

import (
	"fmt"
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/metrics"
	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// Predefined is one predefined topic id (MQTT-SN 1.2 §3, topic id type 01): known
// to the gateway and its clients without REGISTER.
type Predefined struct {
	ID       uint16
	Topic    string
	ClientID string // "" for every client; a client's own id shadows a global one
}

// Options configure an Engine. Name, Conn, Broker and Sessions are required; zero
// values of the others take the defaults written beside them.
type Options struct {
	Name     string         // the listener's name: metrics label, session key
	Conn     *net.UDPConn   // bound socket; the Engine owns it from New on
	Broker   udpgw.Broker   // the listener's upstream (applies its mountpoint)
	Sessions *session.Table // liveness and wills, expired by the gateway's driver
	Logger   *zap.Logger    // nil: no logs
	Metrics  *metrics.Registry

	GatewayID         uint8         // GwId of GWINFO and ADVERTISE; default 1
	AdvertiseInterval time.Duration // T_ADV; 0: no ADVERTISE
	AdvertiseAddr     string        // HOST:PORT, broadcast or multicast

	RetryInterval time.Duration // T_RETRY, default 10s (MQTT-SN 1.2 §6.13)
	MaxRetries    int           // N_RETRY, default 3
	MaxClients    int           // client records, connected or keeping a session; default 100000
	MaxTopics     int           // topic ids per client, both directions; default 1000
	MaxBuffered   int           // messages waiting for one client; default 100
	MaxKeepalive  time.Duration // largest CONNECT Duration accepted; 0: any
	MaxPacket     int           // largest datagram, both ways; default 65507
	SessionExpiry time.Duration // persistent session of a gone client; default 1h

	Predefined []Predefined

	Workers      int           // goroutines running broker operations; default 64
	MaxClientOps int           // operations queued per client; default 64
	DrainTimeout time.Duration // how long Serve lets queued operations finish at the end; default 10s
	OpTimeout    time.Duration // bound of one SUBSCRIBE or UNSUBSCRIBE at the broker; default 30s

	// Now is the clock; default time.Now. Tests drive time through it.
	Now func() time.Time
}

func (o *Options) defaults() error {
	switch {
	case o.Name == "":
		return fmt.Errorf("mqttsn: options: no Name")
	case o.Conn == nil:
		return fmt.Errorf("mqttsn: %s: options: no Conn", o.Name)
	case o.Broker == nil:
		return fmt.Errorf("mqttsn: %s: options: no Broker", o.Name)
	case o.Sessions == nil:
		return fmt.Errorf("mqttsn: %s: options: no Sessions", o.Name)
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New()
	}
	if o.GatewayID == 0 {
		o.GatewayID = 1
	}
	setInt(&o.MaxRetries, 3)
	setInt(&o.MaxClients, 100000)
	setInt(&o.MaxTopics, 1000)
	setInt(&o.MaxBuffered, 100)
	setInt(&o.MaxPacket, 65507)
	setInt(&o.Workers, 64)
	setInt(&o.MaxClientOps, 64)
	setDur(&o.RetryInterval, 10*time.Second)
	setDur(&o.SessionExpiry, time.Hour)
	setDur(&o.DrainTimeout, 10*time.Second)
	setDur(&o.OpTimeout, 30*time.Second)
	if o.MaxTopics > 0xFFFE {
		o.MaxTopics = 0xFFFE
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.AdvertiseInterval > 0 && o.AdvertiseAddr == "" {
		return fmt.Errorf("mqttsn: %s: options: AdvertiseInterval without AdvertiseAddr", o.Name)
	}
	return nil
}

func setInt(v *int, def int) {
	if *v <= 0 {
		*v = def
	}
}

func setDur(v *time.Duration, def time.Duration) {
	if *v <= 0 {
		*v = def
	}
}
