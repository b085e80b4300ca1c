package udpgw

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

func setReadBuffer(c syscall.Conn, n int) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	if n <= 0 {
		return readBuffer(rc)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
	}); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, fmt.Errorf("udpgw: SO_RCVBUF %d: %w", n, serr)
	}
	got, err := readBuffer(rc)
	if err != nil || got >= 2*n {
		return got, err
	}
	// Capped at net.core.rmem_max: SO_RCVBUFFORCE goes beyond it for a process
	// with CAP_NET_ADMIN, and fails (harmlessly) for others.
	_ = rc.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, n)
	})
	return readBuffer(rc)
}

func readBuffer(rc syscall.RawConn) (int, error) {
	var (
		v    int
		gerr error
	)
	if err := rc.Control(func(fd uintptr) {
		v, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	}); err != nil {
		return 0, err
	}
	return v, gerr
}

// dropCounter finds one socket's line in /proc/net/udp or /proc/net/udp6 by
// its inode (the fd's st_ino, fixed when the socket is made) and reads its
// drops column.
type dropCounter struct {
	inode []byte // decimal, as /proc prints it
}

func newDropCounter(rc syscall.RawConn) (*dropCounter, error) {
	var (
		st   syscall.Stat_t
		serr error
	)
	if err := rc.Control(func(fd uintptr) { serr = syscall.Fstat(int(fd), &st) }); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, serr
	}
	return &dropCounter{inode: strconv.AppendUint(nil, st.Ino, 10)}, nil
}

func (d *dropCounter) read() (uint64, bool) {
	for _, f := range [...]string{"/proc/net/udp", "/proc/net/udp6"} {
		if v, ok, err := d.readFile(f); err == nil && ok {
			return v, true
		}
	}
	return 0, false
}

// readFile scans one table. Its lines are (net/ipv4/udp.c, udp4_format_sock):
//
//	sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
//	0: 0100007F:D431 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 123456 2 0000000000000000 0
//
// so the inode is the 10th field and drops the 13th.
func (d *dropCounter) readFile(name string) (uint64, bool, error) {
	f, err := os.Open(name)
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		fields := bytes.Fields(sc.Bytes())
		if len(fields) < 13 || !bytes.Equal(fields[9], d.inode) {
			continue
		}
		v, err := strconv.ParseUint(string(fields[12]), 10, 64)
		if err != nil {
			return 0, false, errors.New("udpgw: " + name + ": bad drops column")
		}
		return v, true, nil
	}
	return 0, false, sc.Err()
}
