package coap

import "errors"

var (
	// ErrNoBroker means udpgw.Env.Broker is missing.
	ErrNoBroker = errors.New("coap: a broker is required")
	// ErrNoCredentials means a coaps listener has neither a PSK lookup nor a
	// certificate, so no client could ever complete a handshake.
	ErrNoCredentials = errors.New("coap: coaps needs a PSK file or a certificate")
)
