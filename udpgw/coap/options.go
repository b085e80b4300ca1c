package coap

import (
	"crypto/tls"
	"net/netip"
	"time"

	"github.com/mqttgw/mqttgw/store"
)

// Options configures a Listener; what every engine shares (name, logger,
// metrics, clock, broker, device registry) comes in udpgw.Env. Zero values take
// the defaults named beside them.
type Options struct {
	// Bind is the local HOST:PORT.
	Bind string
	// DTLS, when set, makes the listener CoAP over DTLS 1.2 (RFC 7252 §9, "coaps").
	DTLS *DTLSOptions

	// AllowAnonymous lets requests without credentials in; when false they get
	// 4.01 (RFC 7252 §5.9.2.2) and nothing else.
	AllowAnonymous bool
	// CheckPassword verifies the query's u and p (or t) sent from a source
	// address (so that failures can be limited per source); its error says why
	// they are refused. nil when there is no password file, and then
	// credentials are not checked.
	CheckPassword func(from netip.Addr, user, password string) error
	// Refused, when set, is told of every request answered 4.01 Unauthorized,
	// with the user name it gave and why, so that failures are visible in the
	// gateway's log and metrics.
	Refused func(from netip.AddrPort, user, reason string)

	// NotifyCON sends Observe notifications Confirmable; otherwise Non-confirmable
	// with one Confirmable at least every 24 h (RFC 7641 §4.5).
	NotifyCON bool
	// MaxObserversPerTopic (1000), MaxObserversPerDevice (16) bound observations.
	MaxObserversPerTopic  int
	MaxObserversPerDevice int
	// ObserverQueue (16) bounds the notifications waiting per observation; when
	// full the oldest is dropped and counted.
	ObserverQueue int
	// AllowWildcards accepts MQTT filters ('+', '#' levels) as observed paths.
	AllowWildcards bool
	// MaxPayload (64 KiB) bounds a request body, block-wise transfers included
	// (RFC 7959 §2.9.3: 4.13 with Size1), and a response body.
	MaxPayload int
	// MaxDatagram (65507) bounds one datagram; larger ones are dropped and counted.
	MaxDatagram int
	// Keepalive (24 h) is the listener's default session keepalive: the gateway
	// hands it to the device registry as the listener's default, and a device's
	// class may override it; a session ends after 1.5 times its keepalive of
	// silence, and its observations with it. The engine never sets a session's
	// keepalive itself: it reads the device's for the Max-Age of its
	// notifications, and uses this default only where no device is known yet (a
	// DTLS session's ConnIdle).
	Keepalive time.Duration
	// RetryAfter (5 s) is the Max-Age of 5.03 answers when the broker is away.
	RetryAfter time.Duration
	// PublishTimeout (30 s) bounds one Broker call made for a request, and
	// the wait of a registration for its record's commit.
	PublishTimeout time.Duration

	// State, when set, keeps the listener's observations across a restart
	// (persist.go): a restarted gateway goes on notifying them, with the
	// same token, at the device's address, with rising Observe numbers.
	// Ignored in transparent mode. nil: they live in memory only.
	State store.State
	// Shared says State is a fleet's, shared with other gateway instances
	// (issue 13): at start, a record whose device has no session here is
	// another instance's, left alone, instead of an orphan to delete.
	Shared bool
	// DrainTimeout (10 s) bounds the last write of observation records when
	// Serve ends.
	DrainTimeout time.Duration

	// ConnIdle bounds how long go-coap keeps its per-peer connection (message
	// deduplication, block-wise state) without traffic. Default: EXCHANGE_LIFETIME
	// (247 s, RFC 7252 §4.8.2) for plain CoAP, where a connection is made
	// only for a block-wise transfer (fast.go); Keepalive × 1.5 for DTLS,
	// where closing it would end the DTLS session a sleepy device needs.
	ConnIdle time.Duration
	// AckTimeout (2 s) and MaxRetransmit (4) drive Confirmable notifications
	// (RFC 7252 §4.8); a notification never acknowledged ends its observation.
	AckTimeout    time.Duration
	MaxRetransmit int
	// MaxPeers (65536) bounds, each, the proven sources a plain CoAP listener
	// keeps state for (fast.go) and the go-coap connections it makes for
	// block-wise transfers; only sources that proved their address get either.
	MaxPeers int

	// ReadBuffer is the socket's receive buffer in bytes (SO_RCVBUF); 0 keeps
	// the size the socket was bound with (udpgw.ListenUDP's for plain CoAP,
	// the system's for coaps, whose socket pion binds).
	ReadBuffer int
	// Plain CoAP only (a DTLS handshake proves the address with its cookie):
	// until a source address has proven it receives — it echoed an Echo option
	// (RFC 9175) or the Message ID of a CoAP ping or Confirmable notification
	// the gateway sent it — it is sent at most Amplification (3) times the
	// bytes it sent, its datagrams are admitted at UnprovenRate (20) per second
	// (bursts of twice that), and it gets no go-coap connection: its state is a
	// small entry, at most MaxUnproven (10000) of them, the least recently
	// heard evicted first, forgotten UnprovenTTL (10 s) after its last
	// datagram. A proof lasts Keepalive × 1.5 after it was last used.
	Amplification int
	UnprovenRate  float64
	MaxUnproven   int
	UnprovenTTL   time.Duration
}

// DTLSOptions configures a "coaps" listener.
type DTLSOptions struct {
	// PSK returns the key of a PSK identity (RFC 4279); nil or false refuses it.
	PSK func(identity string) ([]byte, bool)
	// Certificates, when set, also offers certificate cipher suites.
	Certificates []tls.Certificate
	// HandshakeTimeout (10 s) bounds one handshake.
	HandshakeTimeout time.Duration
}

const (
	// exchangeLifetime is EXCHANGE_LIFETIME with the default transmission
	// parameters (RFC 7252 §4.8.2).
	exchangeLifetime = 247 * time.Second
	// conNotifyEvery is how often a Non-confirmable observation gets a
	// Confirmable notification to check the client is still there (RFC 7641 §4.5).
	conNotifyEvery = 24 * time.Hour
	// blockSize is the block size the gateway uses (SZX 6, RFC 7959 §2.2).
	blockSize = 1024
	// blockTransferTimeout bounds the pause between two blocks of one transfer.
	blockTransferTimeout = time.Minute
	// maxInflight bounds the requests of one peer that are queued or being
	// handled; beyond it requests are dropped (a Confirmable one is retransmitted
	// by the client), so that the reader never waits for a handler.
	maxInflight = 8
	// inflightStale forgets an in-flight entry go-coap dropped on its own.
	inflightStale = 2 * time.Minute
	// mtu bounds the datagrams go-coap's session reader accepts (DTLS).
	mtu = 1472
	// maxUnprovenInflight bounds the requests of unproven sources being
	// handled at once (each on a goroutine of its own, since a publish may
	// wait for the broker); beyond it they are dropped as busy.
	maxUnprovenInflight = 256
)

func (o *Options) applyDefaults() {
	setInt(&o.MaxObserversPerTopic, 1000)
	setInt(&o.MaxObserversPerDevice, 16)
	setInt(&o.ObserverQueue, 16)
	setInt(&o.MaxPayload, 64<<10)
	setInt(&o.MaxDatagram, 65507)
	setInt(&o.MaxRetransmit, 4)
	setInt(&o.MaxPeers, 65536)
	setDur(&o.Keepalive, 24*time.Hour)
	setDur(&o.RetryAfter, 5*time.Second)
	setDur(&o.PublishTimeout, 30*time.Second)
	setDur(&o.DrainTimeout, 10*time.Second)
	setDur(&o.AckTimeout, 2*time.Second)
	setInt(&o.Amplification, 3)
	setInt(&o.MaxUnproven, 10000)
	setDur(&o.UnprovenTTL, 10*time.Second)
	if o.UnprovenRate <= 0 {
		o.UnprovenRate = 20
	}
	if o.DTLS != nil {
		setDur(&o.ConnIdle, o.Keepalive*3/2)
		setDur(&o.DTLS.HandshakeTimeout, 10*time.Second)
	} else {
		setDur(&o.ConnIdle, exchangeLifetime)
	}
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
