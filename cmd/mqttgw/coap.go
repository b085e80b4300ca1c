package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
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

// CoAP client tools: `mqttgw pub|sub --coap URL ...` publish and observe as a
// device would, through the gateway's /ps/{topic} resources; `bench --coap` is in
// coap_bench.go.

// coapFlags are the flags pub and sub share.
type coapFlags struct {
	url                  string
	clientID, user, pass string
	pskIdentity, pskKey  string
	qos                  int
	non                  bool
	timeout              time.Duration
}

func (f *coapFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.url, "coap", "", "coap://HOST:PORT/ps/TOPIC or coaps://... (DTLS with --psk-identity, --psk-key)")
	fs.StringVar(&f.clientID, "i", "", "client id (the query's c)")
	fs.StringVar(&f.user, "u", "", "user name (the query's u)")
	fs.StringVar(&f.pass, "P", "", "password (the query's p)")
	fs.StringVar(&f.pskIdentity, "psk-identity", "", "DTLS PSK identity (coaps)")
	fs.StringVar(&f.pskKey, "psk-key", "", "DTLS PSK key, as text (like coap-client -k)")
	fs.IntVar(&f.qos, "q", -1, "QoS (the query's qos); default: 1 for Confirmable, 0 for --non")
	fs.BoolVar(&f.non, "non", false, "send the request Non-confirmable")
}

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

// options are the request's Uri-Query options: the URL's, then the flags'.
func (f *coapFlags) options(t coapTarget, retain bool) message.Options {
	q := append([]string(nil), t.query...)
	add := func(k, v string) {
		if v != "" {
			q = append(q, k+"="+v)
		}
	}
	add("c", f.clientID)
	add("u", f.user)
	add("p", f.pass)
	if f.qos >= 0 {
		add("qos", strconv.Itoa(f.qos))
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

// dialCoAP connects to t; for coaps with a PSK (RFC 7252 §9.1.3.1).
func dialCoAP(t coapTarget, pskIdentity, pskKey string) (*udpclient.Conn, error) {
	quiet := options.WithErrors(func(error) {})
	if !t.secure {
		return udp.Dial(t.host, quiet)
	}
	if pskIdentity == "" {
		return nil, errors.New("coaps needs --psk-identity and --psk-key")
	}
	key := []byte(pskKey)
	return dtls.Dial(t.host, dtls.NewDTLSClientOptions(
		piondtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		piondtls.WithPSKIdentityHint([]byte(pskIdentity)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8, piondtls.TLS_PSK_WITH_AES_128_GCM_SHA256),
	), quiet)
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

func cmdPubCoAP(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mqttgw pub --coap coap://HOST:PORT/ps/TOPIC (-m MSG | -f FILE) [--non] [-q 0|1|2] [-r] [--put] [-i ID] [-u USER -P PASS] [--psk-identity ID --psk-key KEY]\n\n"+
			"Publishes one message as a CoAP device: POST (or PUT) /ps/TOPIC. Exit 0 on 2.04,\n"+
			"1 with the response code otherwise (5.03: the broker is away; retry after Max-Age).")
		fs.PrintDefaults()
	}
	var f coapFlags
	f.register(fs)
	msg := fs.String("m", "", "payload")
	file := fs.String("f", "", "payload from a file (block-wise when large)")
	retain := fs.Bool("r", false, "retain (the query's retain=true)")
	put := fs.Bool("put", false, "PUT instead of POST")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "bound on the whole exchange")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	t, err := parseCoAPURL(f.url)
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw pub: %v\n", err)
		return 2
	}
	payload := []byte(*msg)
	if *file != "" {
		if payload, err = os.ReadFile(*file); err != nil {
			fmt.Fprintf(stderr, "mqttgw pub: %v\n", err)
			return 2
		}
	}
	cc, err := dialCoAP(t, f.pskIdentity, f.pskKey)
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw pub: %s: %v\n", t.host, err)
		return 1
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	if err := coapPublish(ctx, cc, t.path, *put, f.non, payload, f.options(t, *retain)); err != nil {
		fmt.Fprintf(stderr, "mqttgw pub: %s%s: %v\n", t.host, t.path, err)
		return 1
	}
	return 0
}

func cmdSubCoAP(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mqttgw sub --coap coap://HOST:PORT/ps/TOPIC [-C COUNT] [-W SECONDS] [--non] [-q 0|1|2] [-i ID] [-u USER -P PASS] [--psk-identity ID --psk-key KEY]\n\n"+
			"Observes /ps/TOPIC (RFC 7641) and prints each notification's payload on its own line.\n"+
			"Ends after COUNT notifications or SECONDS (exit 1 if COUNT was not reached), or on\n"+
			"SIGINT, deregistering first.")
		fs.PrintDefaults()
	}
	var f coapFlags
	f.register(fs)
	count := fs.Int("C", 0, "exit after this many notifications (0: no limit)")
	wait := fs.Int("W", 0, "exit after this many seconds (0: no limit)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	t, err := parseCoAPURL(f.url)
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw sub: %v\n", err)
		return 2
	}
	cc, err := dialCoAP(t, f.pskIdentity, f.pskKey)
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw sub: %s: %v\n", t.host, err)
		return 1
	}
	defer cc.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *wait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(*wait)*time.Second)
		defer cancel()
	}
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
	}, f.options(t, false)...)
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw sub: %s%s: %v\n", t.host, t.path, err)
		return 1
	}
	n := 0
	code := 0
loop:
	for *count == 0 || n < *count {
		select {
		case b := <-got:
			fmt.Fprintf(stdout, "%s\n", b)
			n++
		case err := <-regErr:
			fmt.Fprintf(stderr, "mqttgw sub: %s%s: %v\n", t.host, t.path, err)
			code = 1
			break loop
		case <-ctx.Done():
			if *count > 0 && n < *count {
				code = 1
			}
			break loop
		}
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ccancel()
	_ = obs.Cancel(cctx, f.options(t, false)...) // RFC 7641 §3.6: deregister with Observe=1
	return code
}
