//go:build !unix

package mqttsn

import "net"

// allowBroadcast is a no-op where SO_BROADCAST is not set this way.
func allowBroadcast(*net.UDPConn) error { return nil }
