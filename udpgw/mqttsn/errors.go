package mqttsn

import (
	"errors"
	"fmt"
)

var (
	// ErrServing: Serve was called twice.
	ErrServing = errors.New("already serving")
)

// unknownIdentityError is the PSK lookup's refusal of an identity (mqttsns);
// pion hands it back wrapped in the handshake's error.
type unknownIdentityError struct{ identity string }

func (e *unknownIdentityError) Error() string {
	return fmt.Sprintf("unknown PSK identity %q", e.identity)
}
