package mapping

import "errors"

// ErrNoMatch means no rule of the datagram's listener accepts it; Map returns it unwrapped.
var ErrNoMatch = errors.New("mapping: no rule matches")

// ErrDecode means the matching rule could not extract a value; Map wraps it with the rule and reason.
var ErrDecode = errors.New("decode")

// ErrUnsafeTopic means a value would break a topic's levels; Map wraps it with the rule, placeholder and value.
var ErrUnsafeTopic = errors.New("unsafe topic value")
