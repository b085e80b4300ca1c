package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// The plain-UDP load (bench --udp): N simulated devices, each its own UDP
// socket, send datagrams to a plain-UDP listener whose rule publishes them as
// received. A datagram is the bench header (send time, device, sequence) and
// the run's id, then padding:
//
//	 0                   1                   2
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 ...
//	+---------------+-------+-------+-----+--------
//	| send time ns  |device |  seq  | run | padding
//	+---------------+-------+-------+-----+--------
//
// QoS 0 is fire and forget, measured at the subscriber only. QoS 1 waits for
// the rule's ack, the hex of octets 8..16 ("{device}{seq}"), before the next
// datagram, and sends the datagram again after rawAckTimeout without one.

const (
	rawBenchHeader = benchHeader + 3 // the run id follows the bench header
	rawAckTimeout  = time.Second
	rawAckTries    = 5
)

// errNoAck means a datagram was sent rawAckTries times without an ack.
var errNoAck = errors.New("no ack")

// rawBenchRules is the config of the two plain-UDP listeners the bench loads:
// listener0 publishes at QoS 0, listener1 at QoS 1 and acknowledges; both to
// TOPIC/{run}/udp/{device}, the datagram as received. The matrix generates it;
// the README shows it.
func rawBenchRules(listener0, listener1, topic string) string {
	rule := func(name, listener string, qos int, ack string) string {
		return fmt.Sprintf(`[[rule]]
name = %q
listener = %q
match = { min_len = %d }
device = { offset = 8, length = 4, as = "hex" }
fields.seq = { offset = 12, length = 4, type = "hex" }
fields.run = { offset = 16, length = 3, type = "hex" }
[[rule.publish]]
topic = "%s/{run}/udp/{device}"
payload = "raw"
qos = %d
%s`, name, listener, rawBenchHeader, topic, qos, ack)
	}
	return rule("bench-udp-qos0", listener0, 0, "") + "\n" +
		rule("bench-udp-qos1", listener1, 1, "[rule.ack]\ntemplate = \"{device}{seq}\"\ndedup = \"{run}:{device}:{seq}\"\nwindow = \"1m\"\n")
}

// rawPublishers are plain-UDP devices, each with its own socket.
func rawPublishers(c benchConfig) publisherSet {
	conns := make([]*net.UDPConn, c.clients)
	run, _ := hex.DecodeString(c.run)
	return publisherSet{
		udpTarget: c.udpAddr,
		connect: func(ctx context.Context, i int) error {
			raddr, err := net.ResolveUDPAddr("udp", c.udpAddr)
			if err != nil {
				return err
			}
			conn, err := net.DialUDP("udp", nil, raddr)
			conns[i] = conn
			return err
		},
		publish: func(ctx context.Context, i int, p []byte) error {
			copy(p[benchHeader:], run) // p is this device's own buffer
			conn := conns[i]
			if c.qos == 0 {
				_, err := conn.Write(p)
				return err
			}
			want := hex.AppendEncode(nil, p[8:benchHeader])
			buf := make([]byte, 64)
			for range rawAckTries {
				if _, err := conn.Write(p); err != nil {
					return err
				}
				deadline := time.Now().Add(rawAckTimeout)
				if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
					deadline = d
				}
				_ = conn.SetReadDeadline(deadline)
				for {
					n, err := conn.Read(buf)
					if err != nil {
						if !errors.Is(err, os.ErrDeadlineExceeded) {
							return err
						}
						break // send again
					}
					if bytes.Equal(buf[:n], want) {
						return nil
					}
					// An ack of an earlier try or datagram: keep waiting.
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
			}
			return fmt.Errorf("%s: %w after %d tries", c.udpAddr, errNoAck, rawAckTries)
		},
		close: func() {
			for _, conn := range conns {
				if conn != nil {
					conn.Close()
				}
			}
		},
	}
}
