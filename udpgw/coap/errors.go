package coap

import (
	"errors"
	"fmt"

	"github.com/mqttgw/mqttgw/udpgw"
)

var (
	// ErrNoBroker means udpgw.Env.Broker is missing.
	ErrNoBroker = errors.New("coap: a broker is required")
	// ErrNoCredentials means a coaps listener has neither a PSK lookup nor a
	// certificate, so no client could ever complete a handshake.
	ErrNoCredentials = errors.New("coap: coaps needs a PSK file or a certificate")

	// errNeedProof means a request would make a broker connection (transparent
	// mode) for a plain CoAP address that has not proven it receives.
	errNeedProof = errors.New("coap: a broker connection needs a proven address")
	// errOtherCredentials means a request's credentials are not those its
	// device's broker connection was made with (transparent mode).
	errOtherCredentials = errors.New("coap: not the credentials of the device's broker connection")
	// errSessionEnded means a device's session ended while its request was
	// getting its broker connection (transparent mode): the device retries
	// (5.03), and its next request starts a new session.
	errSessionEnded = fmt.Errorf("coap: the device's session ended: %w", udpgw.ErrUnavailable)
)
