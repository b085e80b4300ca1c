//go:build !linux

package udpgw

import (
	"errors"
	"fmt"
	"syscall"
)

var errNoDrops = errors.New("udpgw: kernel drop counts are read on Linux only")

func setReadBuffer(c syscall.Conn, n int) (int, error) {
	if n <= 0 {
		return 0, nil
	}
	s, ok := c.(interface{ SetReadBuffer(int) error }) // *net.UDPConn
	if !ok {
		return 0, errors.New("udpgw: read_buffer is applied to this socket on Linux only")
	}
	if err := s.SetReadBuffer(n); err != nil {
		return 0, fmt.Errorf("udpgw: SO_RCVBUF %d: %w", n, err)
	}
	return n, nil
}

func readBuffer(syscall.RawConn) (int, error) {
	return 0, errors.New("udpgw: the receive buffer size is read on Linux only")
}

type dropCounter struct{}

func newDropCounter(syscall.RawConn) (*dropCounter, error) { return nil, errNoDrops }

func (*dropCounter) read() (uint64, bool) { return 0, false }
