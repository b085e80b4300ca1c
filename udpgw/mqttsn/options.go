package mqttsn

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/mqttgw/mqttgw/store"
)

// Predefined is one predefined topic id (MQTT-SN 1.2 §3, topic id type 01): known
// to the gateway and its clients without REGISTER.
type Predefined struct {
	ID       uint16
	Topic    string
	ClientID string // "" for every client; a client's own id shadows a global one
}

// Options are the MQTT-SN engine's own settings; what every engine shares
// (name, logger, metrics, clock, broker, device registry) comes in udpgw.Env.
// Bind is required; zero values of the others take the defaults written beside
// them.
type Options struct {
	Bind string // HOST:PORT of the engine's socket, bound by New

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

	// AllowedSources, when set, are the only networks datagrams are taken from;
	// the rest are dropped (counted as source_not_allowed) before decoding.
	AllowedSources []netip.Prefix
	// KnownClient, when set, must accept a CONNECT's client id; otherwise the
	// CONNECT is refused with "not supported" (require_known_client).
	KnownClient func(clientID string) bool

	// ReadBuffer is the socket's receive buffer in bytes (SO_RCVBUF, through
	// udpgw.TuneSocket; over DTLS udpgw.ListenControl); 0 keeps the size
	// the socket was bound with.
	ReadBuffer int

	// Plain UDP only (a DTLS handshake proves the address with its cookie),
	// unproven.go: until a source address has proven it receives — it
	// echoed a value only the gateway chose and sent there — it is sent at
	// most Amplification (3) times the bytes it sent, and its datagrams are
	// admitted at UnprovenRate (20) per second, bursts of twice that. A
	// client that connected from such an address and never proved it is
	// "unproven": at most MaxUnproven (10000) of them, the least recently
	// heard evicted first (also when MaxClients is reached), each ended after
	// UnprovenTTL (10 s) of silence, or twice that after its CONNECT, unless
	// it sleeps. MaxUnprovenBytes (64 MiB) bounds the payloads buffered for
	// those clients all together (a retained message waiting for the proof):
	// beyond it the least recently heard are evicted.
	Amplification    int
	UnprovenRate     float64
	MaxUnproven      int
	UnprovenTTL      time.Duration
	MaxUnprovenBytes int

	Predefined []Predefined

	// DTLS, when set, makes the engine serve MQTT-SN over DTLS 1.2 (the
	// mqttsns listener) instead of plain UDP; see DTLSOptions.
	DTLS *DTLSOptions

	// State, when set, keeps the persistent sessions (CleanSession false)
	// in the durable store, so that they survive a crash and a restart
	// (persist.go); nil: in memory only. Ignored in transparent mode, where
	// each device's own broker connection holds its session.
	State store.State
	// Owners says State is shared by a fleet of gateways (the NATS
	// JetStream store, [cluster]) and makes one instance serve each client
	// at a time: a CONNECT for a client not held here takes its ownership
	// and reads its record first, record writes are fenced by the
	// ownership, a client another instance took is let go, and nothing is
	// restored at start (fleet.go). nil: one gateway alone.
	Owners Owners
	// AdoptEvery, with Owners: how often the engine looks for instances
	// that died, whose persistent clients it adopts (adopt.go). Default 5s;
	// the gateway sets half the owner lease.
	AdoptEvery time.Duration

	Workers      int           // goroutines running broker operations; default 64
	MaxClientOps int           // operations queued per client; default 64
	DrainTimeout time.Duration // how long Serve lets queued operations finish at the end; default 10s
	OpTimeout    time.Duration // bound of one SUBSCRIBE or UNSUBSCRIBE at the broker; default 30s
}

// defaults fills the zero values; name is the listener's, for errors.
func (o *Options) defaults(name string) error {
	switch {
	case o.Bind == "":
		return fmt.Errorf("mqttsn: %s: options: no Bind", name)
	case o.AdvertiseInterval > 0 && o.AdvertiseAddr == "":
		return fmt.Errorf("mqttsn: %s: options: AdvertiseInterval without AdvertiseAddr", name)
	case o.DTLS != nil && o.AdvertiseInterval > 0:
		// ADVERTISE is a broadcast (MQTT-SN 1.2 §6.1): DTLS has no session to carry it.
		return fmt.Errorf("mqttsn: %s: options: AdvertiseInterval with DTLS: ADVERTISE cannot be sent over DTLS", name)
	case o.DTLS != nil && o.DTLS.PSK == nil:
		return fmt.Errorf("mqttsn: %s: options: DTLS without PSK", name)
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
	setDur(&o.AdoptEvery, 5*time.Second)
	setInt(&o.Amplification, 3)
	setInt(&o.MaxUnproven, 10000)
	setInt(&o.MaxUnprovenBytes, 64<<20)
	setDur(&o.UnprovenTTL, 10*time.Second)
	if o.UnprovenRate <= 0 {
		o.UnprovenRate = 20
	}
	if o.MaxTopics > 0xFFFE {
		o.MaxTopics = 0xFFFE
	}
	if o.DTLS != nil {
		d := *o.DTLS // the caller's stays as it was
		d.defaults()
		o.DTLS = &d
		o.MaxPacket = min(o.MaxPacket, dtlsMaxPayload)
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
