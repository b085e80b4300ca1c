package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/url"
	"runtime"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/net/proxy"

	"github.com/mqttgw/mqttgw/metrics"
)

// Broker writes in batches (issue 11). paho writes every packet with its own
// Write on the connection: one system call per PUBLISH and per PUBACK, the
// largest share of the gateway's CPU under load. batchConn sits under paho
// (its custom-connection hook): a Write only copies the packet into a buffer,
// and one flusher goroutine writes whatever has accumulated with one system
// call. While that call runs, the packets paho writes meanwhile gather for the
// next, so under load many packets share one write, and when the connection
// is idle a packet goes out at once, only a goroutine hand-off later. Nothing
// waits for a timer.
//
// A write error is returned by the Writes after it (paho then sees the
// connection fail, as it would have a little earlier); Close first flushes
// what paho wrote (its DISCONNECT above all: without it the broker would
// publish the gateway's will), for maxFlushOnClose at most.

const (
	// maxPending bounds the bytes waiting for the flusher: beyond it Write
	// blocks paho's writer, as a full socket buffer would.
	maxPending = 256 << 10
	// maxFlushOnClose bounds how long Close waits for the pending bytes.
	maxFlushOnClose = 2 * time.Second
	// batchEnough is a batch worth a write without first yielding to paho's
	// writer for more: about a TCP segment.
	batchEnough = 1400
)

type batchConn struct {
	net.Conn
	written, batches *metrics.Counter
	// writeTimeout bounds each of the flusher's writes. paho's own write
	// deadlines (set before each packet, cleared after) are ignored: its
	// Write returns at once here, and only the flusher may touch the
	// connection's write deadline (a websocket connection's is not safe
	// for concurrent use).
	writeTimeout time.Duration

	mu       sync.Mutex
	cond     *sync.Cond // pending shrank, or the connection failed or closed
	buf      []byte     // written by paho, not yet handed to the socket
	spare    []byte     // the buffer the flusher last wrote, for reuse
	err      error      // the first write error
	closing  bool
	kick     chan struct{} // capacity 1: buf has bytes
	flushed  chan struct{} // closed when the flusher has returned
	closeOne sync.Once
}

func newBatchConn(c net.Conn, writeTimeout time.Duration, written, batches *metrics.Counter) *batchConn {
	b := &batchConn{Conn: c, writeTimeout: writeTimeout, written: written, batches: batches, kick: make(chan struct{}, 1), flushed: make(chan struct{})}
	b.cond = sync.NewCond(&b.mu)
	go b.flusher()
	return b
}

// Write queues p for the flusher; it blocks only while maxPending bytes wait.
func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	for len(b.buf) >= maxPending && b.err == nil && !b.closing {
		b.cond.Wait()
	}
	switch {
	case b.err != nil:
		err := b.err
		b.mu.Unlock()
		return 0, err
	case b.closing:
		b.mu.Unlock()
		return 0, net.ErrClosed
	}
	b.buf = append(b.buf, p...)
	b.mu.Unlock()
	b.written.Inc()
	select {
	case b.kick <- struct{}{}:
	default:
	}
	return len(p), nil
}

// flusher writes what accumulated, one system call per round, until Close
// (after the last bytes) or a write error.
func (b *batchConn) flusher() {
	defer close(b.flushed)
	for {
		b.mu.Lock()
		for len(b.buf) == 0 && !b.closing {
			b.mu.Unlock()
			<-b.kick
			b.mu.Lock()
		}
		if len(b.buf) == 0 { // closing, nothing left
			b.mu.Unlock()
			return
		}
		if len(b.buf) < batchEnough && !b.closing {
			// Let paho's writer add the packets it has at hand first: a
			// goroutine switch costs less than a system call.
			b.mu.Unlock()
			runtime.Gosched()
			b.mu.Lock()
		}
		out := b.buf
		b.buf = b.spare[:0]
		b.mu.Unlock()

		var err error
		if b.writeTimeout > 0 {
			err = b.Conn.SetWriteDeadline(time.Now().Add(b.writeTimeout))
		}
		if err == nil {
			_, err = b.Conn.Write(out)
		}
		b.batches.Inc()

		b.mu.Lock()
		if cap(out) <= maxPending*2 {
			b.spare = out[:0]
		}
		if err != nil && b.err == nil {
			b.err = err
		}
		b.cond.Broadcast()
		failed := b.err != nil
		b.mu.Unlock()
		if failed {
			return
		}
	}
}

// SetWriteDeadline is ignored: the flusher bounds its own writes.
func (b *batchConn) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline sets the read deadline only (paho bounds its CONNECT exchange
// with it); the flusher bounds the writes.
func (b *batchConn) SetDeadline(t time.Time) error { return b.Conn.SetReadDeadline(t) }

// Close flushes what paho wrote (for maxFlushOnClose at most), then closes
// the connection.
func (b *batchConn) Close() error {
	b.closeOne.Do(func() {
		b.mu.Lock()
		b.closing = true
		b.cond.Broadcast()
		b.mu.Unlock()
		select {
		case b.kick <- struct{}{}:
		default:
		}
		t := time.NewTimer(maxFlushOnClose)
		select {
		case <-b.flushed:
		case <-t.C:
		}
		t.Stop()
	})
	err := b.Conn.Close()
	<-b.flushed // a write blocked past the timer returns now
	return err
}

// batchWrites puts batchConn under the broker connection; the benchmarks
// turn it off to compare, in one run.
var batchWrites = true

// dialBatched is paho's connection for the gateway's broker: dialled as paho
// dials it (openConnection in paho's netconn.go: tcp through a proxy from
// the environment, TLS, websockets), under a batchConn.
func dialBatched(written, batches *metrics.Counter) paho.OpenConnectionFunc {
	return func(uri *url.URL, o paho.ClientOptions) (net.Conn, error) {
		c, err := dialLikePaho(uri, o)
		if err != nil {
			return nil, err
		}
		return newBatchConn(c, o.WriteTimeout, written, batches), nil
	}
}

func dialLikePaho(uri *url.URL, o paho.ClientOptions) (net.Conn, error) {
	dialer := o.Dialer
	if dialer == nil {
		dialer = &net.Dialer{Timeout: o.ConnectTimeout}
	}
	switch uri.Scheme {
	case "ws", "wss":
		u := *uri
		u.User = nil // as paho: gorilla's websocket takes no user in the URL
		var tc *tls.Config
		if uri.Scheme == "wss" {
			tc = o.TLSConfig
		}
		return paho.NewWebsocket(u.String(), tc, o.ConnectTimeout, o.HTTPHeaders, o.WebsocketOptions)
	case "ssl", "tls", "mqtts", "mqtt+ssl", "tcps":
		c, err := proxy.FromEnvironmentUsing(dialer).Dial("tcp", uri.Host)
		if err != nil {
			return nil, err
		}
		// As tls.DialWithDialer: the server name from the address unless
		// the config has one, and the handshake within the connect timeout.
		cfg := &tls.Config{}
		if o.TLSConfig != nil {
			cfg = o.TLSConfig.Clone()
		}
		if cfg.ServerName == "" {
			if host, _, err := net.SplitHostPort(uri.Host); err == nil {
				cfg.ServerName = host
			}
		}
		tc := tls.Client(c, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), max(o.ConnectTimeout, time.Second))
		defer cancel()
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, err
		}
		return tc, nil
	}
	return proxy.FromEnvironmentUsing(dialer).Dial("tcp", uri.Host)
}
