//go:build !linux

package udpgw

import "net/netip"

// Elsewhere than Linux, one datagram a system call.

// maxReadBatch: one datagram a read, so one buffer.
const maxReadBatch = 1

type readSys struct{}

func (readSys) init(*BatchReader) {}

func (r *BatchReader) read() ([]Datagram, error) {
	n, from, err := r.conn.ReadFromUDPAddrPort(r.bufs[0])
	if err != nil {
		return nil, err
	}
	r.out = append(r.out[:0], Datagram{B: r.bufs[0][:n], Addr: netip.AddrPortFrom(from.Addr().Unmap(), from.Port())})
	return r.out, nil
}

type writeSys struct{}

func (writeSys) init(any) {}

func (w *BatchWriter) write(ds []Datagram) (failed int, to netip.AddrPort, first error) {
	for _, d := range ds {
		if _, err := w.conn.WriteToUDPAddrPort(d.B, d.Addr); err != nil {
			if failed == 0 {
				first, to = err, d.Addr
			}
			failed++
		}
	}
	return failed, to, first
}
