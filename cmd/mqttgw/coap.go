package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// CoAP client tools: `mqttgw pub|sub --coap ...` publish and observe as a
// device would, through the gateway's /ps/{topic} resources (flags in
// pubsub.go); `bench --coap` is in coap_bench.go.

// coapTarget is a parsed coap:// or coaps:// URL.
type coapTarget struct {
	secure bool
	host   string // HOST:PORT
	path   string
	query  []string // "k=v", in order
}

func parseCoAPURL(s string) (coapTarget, error) {
	u, err := url.Parse(s)
	if err != nil {
		return coapTarget{}, fmt.Errorf("--coap %q: %v", s, err)
	}
	t := coapTarget{path: u.Path}
	switch u.Scheme {
	case "coap":
	case "coaps":
		t.secure = true
	default:
		return coapTarget{}, fmt.Errorf("--coap %q: want coap:// or coaps://", s)
	}
	port := u.Port()
	if port == "" {
		port = "5683" // RFC 7252 §6.1
		if t.secure {
			port = "5684" // §6.2
		}
	}
	if u.Hostname() == "" {
		return coapTarget{}, fmt.Errorf("--coap %q: no host", s)
	}
	t.host = u.Hostname() + ":" + port
	if strings.Contains(u.Hostname(), ":") {
		t.host = "[" + u.Hostname() + "]:" + port
	}
	if u.RawQuery != "" {
		for _, kv := range strings.Split(u.RawQuery, "&") {
			if v, err := url.QueryUnescape(kv); err == nil {
				kv = v
			}
			t.query = append(t.query, kv)
		}
	}
	return t, nil
}

// coapQuery is the request's Uri-Query options: the URL's, then the flags'.
func (d *deviceFlags) coapQuery(t deviceTarget, retain bool) message.Options {
	q := append([]string(nil), t.query...)
	add := func(k, v string) {
		if v != "" {
			q = append(q, k+"="+v)
		}
	}
	add("c", d.clientID)
	add("u", d.user)
	add("p", d.pass)
	if d.qos.set {
		add("qos", strconv.Itoa(d.qos.v))
	}
	if retain {
		q = append(q, "retain=true")
	}
	opts := make(message.Options, 0, len(q))
	for _, kv := range q {
		opts = append(opts, message.Option{ID: message.URIQuery, Value: []byte(kv)})
	}
	return opts
}

// dialCoAPDevice connects to t, over DTLS with the PSK for coaps (RFC 7252
// §9.1.3.1); with -d through a hop that prints every message (debug.go).
// closeConn closes the connection and waits for what it started.
func (d *deviceFlags) dialCoAPDevice(ctx context.Context, t deviceTarget, stderr io.Writer) (cc *udpclient.Conn, closeConn func(), err error) {
	r := newCoAPRunner()
	opts := []udp.Option{options.WithErrors(func(error) {}), options.WithPeriodicRunner(r.run)}
	var closeHop func()
	switch {
	case d.debug:
		cc, closeHop, err = dialCoAPDebug(ctx, t, d.pskIdentity, &debugLog{w: stderr}, opts)
	case t.dtls:
		key := t.key
		cc, err = dtls.Dial(t.hostport, dtls.NewDTLSClientOptions(
			piondtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
			piondtls.WithPSKIdentityHint([]byte(d.pskIdentity)),
			piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8, piondtls.TLS_PSK_WITH_AES_128_GCM_SHA256),
		), opts...)
	default:
		cc, err = udp.Dial(t.hostport, opts...)
	}
	if err != nil {
		r.stop()
		return nil, nil, err
	}
	return cc, func() {
		cc.Close()
		<-cc.Done()
		if closeHop != nil {
			closeHop()
		}
		r.stop()
	}, nil
}

// coapRunner drives go-coap's periodic checks (exchanges that expired) once a
// second until stop, which waits for it: go-coap's own runner sleeps 4 s
// between checks, and so outlives the connection.
type coapRunner struct {
	done chan struct{}
	wg   sync.WaitGroup
}

func newCoAPRunner() *coapRunner { return &coapRunner{done: make(chan struct{})} }

func (r *coapRunner) run(f func(now time.Time) bool) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-r.done:
				return
			case now := <-tick.C:
				if !f(now) {
					return
				}
			}
		}
	}()
}

func (r *coapRunner) stop() {
	close(r.done)
	r.wg.Wait()
}

// codeError is a response code other than success, as an error.
type codeError struct {
	code   codes.Code
	maxAge int64
	diag   string
}

func (e codeError) Error() string {
	s := fmt.Sprintf("%d.%02d %v", e.code>>5, e.code&0x1f, e.code)
	if e.diag != "" {
		s += ": " + e.diag
	}
	if e.code == codes.ServiceUnavailable && e.maxAge >= 0 {
		s += fmt.Sprintf(" (retry after %d s)", e.maxAge)
	}
	return s
}

func responseError(r *pool.Message) error {
	if r.Code() < 64 || r.Code() >= 96 { // not 2.xx
		e := codeError{code: r.Code(), maxAge: -1}
		if v, err := r.GetOptionUint32(message.MaxAge); err == nil {
			e.maxAge = int64(v)
		}
		if b, _ := r.ReadBody(); len(b) > 0 && len(b) < 200 {
			e.diag = string(b)
		}
		return e
	}
	return nil
}

// coapPublish sends one POST (or PUT) to conn and waits for its response.
func coapPublish(ctx context.Context, cc *udpclient.Conn, path string, put, non bool, payload []byte, opts message.Options) error {
	var req *pool.Message
	var err error
	if put {
		req, err = cc.NewPutRequest(ctx, path, message.TextPlain, bytes.NewReader(payload), opts...)
	} else {
		req, err = cc.NewPostRequest(ctx, path, message.TextPlain, bytes.NewReader(payload), opts...)
	}
	if err != nil {
		return err
	}
	defer cc.ReleaseMessage(req)
	if non {
		req.SetType(message.NonConfirmable)
	}
	resp, err := cc.Do(req)
	if err != nil {
		return err
	}
	defer cc.ReleaseMessage(resp)
	return responseError(resp)
}

// pubCoAP is pub over CoAP.
func pubCoAP(c *command, o *pubOptions, t deviceTarget, payloads [][]byte, stderr io.Writer) int {
	d := &o.dev
	if q := d.qos.or(0); q < 0 || q > 2 {
		return c.usageError(stderr, "-q %d: want 0, 1 or 2 (QoS -1 is MQTT-SN's)", q)
	}
	ctx, cancel := signalContext()
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, o.timeout)
	defer cancelT()
	cc, closeConn, err := d.dialCoAPDevice(ctx, t, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw pub: %s: %v\n", t.hostport, err)
		return 1
	}
	defer closeConn()
	opts := d.coapQuery(t, o.retain)
	send := func(p []byte) error {
		if err := coapPublish(ctx, cc, t.path, o.put, d.non, p, opts); err != nil {
			return fmt.Errorf("%s%s: %w", t.hostport, t.path, err)
		}
		return nil
	}
	return pubEach(stderr, payloads, o.lines, send)
}

// subCoAP is sub over CoAP: an observation of t.path.
func subCoAP(c *command, o *subOptions, t deviceTarget, stdout, stderr io.Writer) int {
	d := &o.dev
	if q := d.qos.or(0); q < 0 || q > 2 {
		return c.usageError(stderr, "-q %d: want 0, 1 or 2", q)
	}
	ctx, stop := signalContext()
	defer stop()
	if o.wait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(o.wait)*time.Second)
		defer cancel()
	}
	cc, closeConn, err := d.dialCoAPDevice(ctx, t, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw sub: %s: %v\n", t.hostport, err)
		return 1
	}
	defer closeConn()

	got := make(chan []byte, 64)
	var registered atomic.Bool
	regErr := make(chan error, 1)
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	obs, err := cc.Observe(rctx, t.path, func(m *pool.Message) {
		if registered.CompareAndSwap(false, true) {
			// The registration response: an error ends the observation; an
			// empty 2.05 (the gateway's, before any message) is not printed.
			if err := responseError(m); err != nil {
				regErr <- err
				return
			}
			if _, err := m.Observe(); err != nil {
				regErr <- errors.New("the server did not register the observation (a limit?)")
			}
			if b, _ := m.ReadBody(); len(b) == 0 {
				return
			}
		}
		b, _ := m.ReadBody()
		select {
		case got <- b:
		default: // the printer is behind; a notification is state, the next one supersedes it
		}
	}, d.coapQuery(t, false)...)
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw sub: %s%s: %v\n", t.hostport, t.path, err)
		return 1
	}
	topic := strings.TrimPrefix(t.path, "/ps/")
	n := 0
	code := 0
loop:
	for o.count == 0 || n < o.count {
		select {
		case b := <-got:
			if o.verbose {
				fmt.Fprintf(stdout, "%s %s\n", topic, b)
			} else {
				fmt.Fprintf(stdout, "%s\n", b)
			}
			n++
		case err := <-regErr:
			fmt.Fprintf(stderr, "mqttgw sub: %s%s: %v\n", t.hostport, t.path, err)
			code = 1
			break loop
		case <-ctx.Done():
			if o.wait > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) && o.count > 0 {
				code = 27 // like mosquitto_sub -W
			}
			break loop
		}
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ccancel()
	_ = obs.Cancel(cctx, d.coapQuery(t, false)...) // RFC 7641 §3.6: deregister with Observe=1
	return code
}
