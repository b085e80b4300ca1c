package mqttsn

import "errors"

var (
	// ErrServing: Serve was called twice.
	ErrServing = errors.New("already serving")
)
