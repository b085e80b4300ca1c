package proxy

import "errors"

var (
	// ErrUnavailable means the broker is not connected: a device asking for an
	// acknowledgement should get its protocol's congestion answer and retry.
	ErrUnavailable = errors.New("broker unavailable")
	// ErrTimeout means the broker did not acknowledge a publish within publish_timeout.
	ErrTimeout = errors.New("broker did not acknowledge in time")
	// ErrClosed means the proxy is shutting down and takes no new messages.
	ErrClosed = errors.New("proxy closed")
)
