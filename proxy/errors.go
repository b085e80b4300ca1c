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
	// ErrRefused means the broker refused a device's connection (a CONNACK
	// refusal: see ConnackCode); retrying with the same identity will not help.
	ErrRefused = errors.New("broker refused the connection")
	// ErrForbidden means the broker refused a subscription (SUBACK 0x80), e.g.
	// because its ACL denies the filter.
	ErrForbidden = errors.New("broker refused the subscription")
)
