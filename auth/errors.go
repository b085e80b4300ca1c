package auth

import "errors"

var (
	// ErrMalformed means a line of a credentials file is not in Mosquitto's format.
	ErrMalformed = errors.New("malformed line")
	// ErrDuplicate means an identity or user name appears twice in one file.
	ErrDuplicate = errors.New("duplicate entry")
	// ErrUnknownUser means a password file has no line for the user to delete.
	ErrUnknownUser = errors.New("unknown user")
	// ErrBadUsername means a user name cannot be written to a password file.
	ErrBadUsername = errors.New("invalid user name")
)
