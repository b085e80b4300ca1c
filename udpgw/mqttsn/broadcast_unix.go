//go:build unix

package mqttsn

import (
	"net"
	"syscall"
)

// allowBroadcast sets SO_BROADCAST, without which a datagram to a broadcast
// address fails with EACCES; ADVERTISE may go to one (MQTT-SN 1.2 §6.1).
func allowBroadcast(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1)
	}); err != nil {
		return err
	}
	return serr
}
