package faultrelay

import "errors"

// ErrBadFaults is returned by New for a probability outside [0, 1] or a
// negative duration.
var ErrBadFaults = errors.New("bad faults")

// ErrNoTarget is returned by New when Options.Target is empty.
var ErrNoTarget = errors.New("no target")
