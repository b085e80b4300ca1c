package auth

import "errors"

var (
	// ErrMalformed means a line of a credentials file is not in Mosquitto's format.
	ErrMalformed = errors.New("malformed line")
	// ErrDuplicate means an identity or user name appears twice in one file.
	ErrDuplicate = errors.New("duplicate entry")
)
