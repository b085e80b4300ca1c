package mqttsn

import (
	"errors"
	"fmt"
)

var (
	// ErrServing: Serve was called twice.
	ErrServing = errors.New("already serving")

	// errTooLarge: a message to send is longer than max_packet once encoded.
	errTooLarge = errors.New("longer than max_packet")
	// errNoAddress: a message to a client with no address (no session).
	errNoAddress = errors.New("no address")
)

// unknownIdentityError is the PSK lookup's refusal of an identity (mqttsns);
// pion hands it back wrapped in the handshake's error.
type unknownIdentityError struct{ identity string }

func (e *unknownIdentityError) Error() string {
	return fmt.Sprintf("unknown PSK identity %q", e.identity)
}
