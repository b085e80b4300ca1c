package main

import (
	"fmt"
	"net"
	"os"
)

// sdNotify sends state ("READY=1", "RELOADING=1", "STOPPING=1") to the service
// manager when it asked for notifications (systemd's Type=notify sets
// NOTIFY_SOCKET, see sd_notify(3)); without NOTIFY_SOCKET it does nothing. The
// protocol is one datagram on a Unix socket, so no library is needed.
func sdNotify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' { // an abstract socket (sd_notify(3))
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}
