package coap

import "errors"

var (
	// ErrNoBroker means Options.Broker or Options.Sessions is missing.
	ErrNoBroker = errors.New("coap: a broker and a session table are required")
	// ErrNoCredentials means a coaps listener has neither a PSK lookup nor a
	// certificate, so no client could ever complete a handshake.
	ErrNoCredentials = errors.New("coap: coaps needs a PSK file or a certificate")
)
