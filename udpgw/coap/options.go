package coap

import (
	"crypto/tls"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/udpgw"
)

// Options configures a Listener. Zero values take the defaults named beside them.
type Options struct {
	// Name is the listener's name; sessions are keyed by it.
	Name string
	// Bind is the local HOST:PORT.
	Bind string
	// DTLS, when set, makes the listener CoAP over DTLS 1.2 (RFC 7252 §9, "coaps").
	DTLS *DTLSOptions

	Broker   udpgw.Broker
	Sessions *session.Table
	Logger   *zap.Logger // nil: no logs
	Metrics  Metrics     // nil: not counted

	// AllowAnonymous lets requests without credentials in; when false they get
	// 4.01 (RFC 7252 §5.9.2.2) and nothing else.
	AllowAnonymous bool
	// CheckPassword verifies the query's u and p (or t); nil when there is no
	// password file, and then credentials are not checked.
	CheckPassword func(user, password string) bool

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
	// Keepalive (24 h) is how long a device's session lives without traffic, times
	// 1.5. Observations live as long as the session.
	Keepalive time.Duration
	// RetryAfter (5 s) is the Max-Age of 5.03 answers when the broker is away.
	RetryAfter time.Duration
	// PublishTimeout (30 s) bounds one Broker call made for a request.
	PublishTimeout time.Duration

	// ConnIdle bounds how long go-coap keeps its per-peer connection (message
	// deduplication, block-wise state) without traffic. Default: EXCHANGE_LIFETIME
	// (247 s, RFC 7252 §4.8.2) for plain CoAP, where a connection is only a cache
	// that the gateway recreates to send a notification; Keepalive × 1.5 for
	// DTLS, where closing it would end the DTLS session a sleepy device needs.
	ConnIdle time.Duration
	// AckTimeout (2 s) and MaxRetransmit (4) drive Confirmable notifications
	// (RFC 7252 §4.8); a notification never acknowledged ends its observation.
	AckTimeout    time.Duration
	MaxRetransmit int
	// MaxPeers (65536) bounds the per-address connections of a plain CoAP listener.
	MaxPeers int
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

// Counter is one metric series that only goes up.
type Counter interface{ Inc() }

// Metrics creates the listener's series; the gateway passes its registry.
type Metrics interface {
	Counter(name, help string, labels ...string) Counter
	GaugeFunc(name, help string, fn func() float64, labels ...string)
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
)

func (o *Options) applyDefaults() {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Metrics == nil {
		o.Metrics = nopMetrics{}
	}
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
	setDur(&o.AckTimeout, 2*time.Second)
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

type nopMetrics struct{}

type nopCounter struct{}

func (nopCounter) Inc() {}

func (nopMetrics) Counter(string, string, ...string) Counter           { return nopCounter{} }
func (nopMetrics) GaugeFunc(string, string, func() float64, ...string) {}
