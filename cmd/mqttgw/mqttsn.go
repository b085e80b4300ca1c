package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	piondtls "github.com/pion/dtls/v3"

	"github.com/mqttgw/mqttgw/mqttsn"
)

// MQTT-SN client tools: `mqttgw pub|sub` without --coap, built on the mqttsn
// package's client, in the manner of mosquitto_pub and mosquitto_sub (flags
// in pubsub.go); over DTLS 1.2 to an mqttsns listener with a PSK.
// Exit codes: 0 success, 1 the gateway refused or did not answer, 2 bad usage.

// topicRef says how the tool names its topic: by name, predefined id or short name.
func (d *deviceFlags) topicRef() (idType mqttsn.TopicIDType, id uint16, err error) {
	set := 0
	if d.topic != "" {
		set++
	}
	if d.predefined != 0 {
		set++
	}
	if d.short != "" {
		set++
	}
	if set != 1 && !(set == 2 && d.topic != "" && d.predefined != 0) {
		return 0, 0, errors.New("give one of -t TOPIC, --predefined ID or --short XY (-t may name a predefined id)")
	}
	switch {
	case d.predefined != 0:
		if d.predefined < 1 || d.predefined > 0xFFFE {
			return 0, 0, fmt.Errorf("--predefined %d: want 1..65534", d.predefined)
		}
		return mqttsn.TopicPredefined, uint16(d.predefined), nil
	case d.short != "":
		id, err := mqttsn.ShortTopicID(d.short)
		return mqttsn.TopicShort, id, err
	}
	return mqttsn.TopicNormal, 0, nil
}

// snOptions are the client's options; the client id defaults to the PSK
// identity over DTLS, where the gateway requires the two to be the same.
func (d *deviceFlags) snOptions(tool string) mqttsn.ClientOptions {
	id := d.clientID
	if id == "" {
		id = d.pskIdentity
	}
	if id == "" {
		id = defaultClientID("mqttgw-" + tool)
	}
	o := mqttsn.ClientOptions{
		ClientID:      id,
		Keepalive:     d.keepalive,
		CleanSession:  !d.persistent,
		RetryInterval: d.retry,
		MaxRetries:    d.retries,
	}
	if d.topic != "" && d.predefined != 0 {
		o.PredefinedTopics = map[string]uint16{d.topic: uint16(d.predefined)}
	}
	return o
}

// dialMQTTSN makes the client: over UDP, or over a DTLS 1.2 connection whose
// handshake is done first, within the time the client gives an exchange
// (T_RETRY × (N_RETRY+1)); with -d, every datagram is printed.
func (d *deviceFlags) dialMQTTSN(ctx context.Context, t deviceTarget, o mqttsn.ClientOptions, stderr io.Writer) (*mqttsn.Client, error) {
	if !t.dtls && !d.debug {
		return mqttsn.Dial(ctx, t.hostport, o)
	}
	var conn net.Conn
	var err error
	if t.dtls {
		conn, err = dialDTLS(ctx, "mqttsns", t.hostport, d.pskIdentity, t.key, d.retry*time.Duration(d.retries+1))
	} else {
		var nd net.Dialer
		if conn, err = nd.DialContext(ctx, "udp", t.hostport); err != nil {
			err = fmt.Errorf("mqttsn: dial %s: %w", t.hostport, err)
		}
	}
	if err != nil {
		return nil, err
	}
	if d.debug {
		log := &debugLog{w: stderr}
		if t.dtls {
			log.printf("DTLS 1.2 handshake with %s done, PSK identity %q", t.hostport, d.pskIdentity)
		}
		conn = &snDebugConn{Conn: conn, log: log}
	}
	return mqttsn.DialConn(conn, o), nil
}

// dialDTLS makes a DTLS 1.2 connection with a pre-shared key (RFC 4279) and
// runs its handshake within bound. It sends the gateway's connection id (RFC
// 9146) when the gateway gives one, so that a NAT rebinding keeps the session.
func dialDTLS(ctx context.Context, scheme, hostport, identity string, key []byte, bound time.Duration) (*piondtls.Conn, error) {
	ra, err := net.ResolveUDPAddr("udp", hostport)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", scheme, hostport, err)
	}
	conn, err := piondtls.DialWithOptions("udp", ra,
		piondtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		piondtls.WithPSKIdentityHint([]byte(identity)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8, piondtls.TLS_PSK_WITH_AES_128_GCM_SHA256),
		piondtls.WithConnectionIDGenerator(piondtls.OnlySendCIDGenerator()),
	)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", scheme, hostport, err)
	}
	hctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s: %s: DTLS handshake as %q failed (a wrong --psk-key or an identity the gateway does not know shows as no answer): %w", scheme, hostport, identity, err)
	}
	return conn, nil
}

func defaultClientID(prefix string) string {
	id := fmt.Sprintf("%s-%d", prefix, os.Getpid())
	if len(id) > mqttsn.ClientIDMaxLen {
		id = id[:mqttsn.ClientIDMaxLen]
	}
	return id
}

// signalContext ends on SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
}

// pubMQTTSN is pub over MQTT-SN.
func pubMQTTSN(c *command, o *pubOptions, t deviceTarget, payloads [][]byte, stderr io.Writer) int {
	d := &o.dev
	idType, id, err := d.topicRef()
	if err != nil {
		return c.usageError(stderr, "%v", err)
	}
	if q := d.qos.or(0); q < -1 || q > 2 {
		return c.usageError(stderr, "-q %d: want -1, 0, 1 or 2", q)
	}
	qos := mqttsn.QoS(d.qos.or(0))
	switch {
	case qos == mqttsn.QoSMinusOne && idType == mqttsn.TopicNormal:
		return c.usageError(stderr, "QoS -1 needs --predefined ID or --short XY (MQTT-SN 1.2 §6.8: no REGISTER without a connection)")
	case o.willMessage != "" && o.willTopic == "":
		return c.usageError(stderr, "--will-message needs --will-topic")
	case o.willQoS < 0 || o.willQoS > 2:
		return c.usageError(stderr, "--will-qos: want 0, 1 or 2")
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "mqttgw pub: %v\n", err)
		return 1
	}

	ctx, cancel := signalContext()
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, o.timeout)
	defer cancelT()

	opts := d.snOptions("pub")
	if qos == mqttsn.QoSMinusOne && o.willTopic == "" && o.sleep == 0 {
		// Connectionless: one datagram per message, nothing to wait for
		// (over DTLS, once the handshake is done).
		cl, err := d.dialMQTTSN(ctx, t, opts, stderr)
		if err != nil {
			return fail(err)
		}
		defer cl.Close()
		send := func(p []byte) error { return cl.PublishID(ctx, idType, id, qos, o.retain, p) }
		return pubEach(stderr, payloads, o.lines, send)
	}

	if o.willTopic != "" {
		opts.Will = &mqttsn.Will{Topic: o.willTopic, Payload: []byte(o.willMessage), QoS: mqttsn.QoS(o.willQoS), Retain: o.willRetain}
	}
	cl, err := d.dialMQTTSN(ctx, t, opts, stderr)
	if err != nil {
		return fail(err)
	}
	defer cl.Close()
	if err := cl.Connect(ctx); err != nil {
		return fail(err)
	}
	send := func(p []byte) error {
		if idType == mqttsn.TopicNormal {
			return cl.Publish(ctx, d.topic, qos, o.retain, p)
		}
		return cl.PublishID(ctx, idType, id, qos, o.retain, p)
	}
	rc := pubEach(stderr, payloads, o.lines, send)
	if o.sleep > 0 {
		if err := cl.Sleep(ctx, o.sleep); err != nil {
			return fail(err)
		}
		return rc
	}
	if err := cl.Disconnect(ctx); err != nil {
		return fail(err)
	}
	return rc
}

// pubEach publishes the payloads, or each line of standard input.
func pubEach(stderr io.Writer, payloads [][]byte, lines bool, send func([]byte) error) int {
	if !lines {
		for _, p := range payloads {
			if err := send(p); err != nil {
				fmt.Fprintf(stderr, "mqttgw pub: %v\n", err)
				return 1
			}
		}
		return 0
	}
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 64<<10), mqttsn.MaxLength)
	for sc.Scan() {
		if err := send([]byte(sc.Text())); err != nil {
			fmt.Fprintf(stderr, "mqttgw pub: %v\n", err)
			return 1
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(stderr, "mqttgw pub: stdin: %v\n", err)
		return 1
	}
	return 0
}

// subMQTTSN is sub over MQTT-SN.
func subMQTTSN(c *command, o *subOptions, t deviceTarget, stdout, stderr io.Writer) int {
	d := &o.dev
	idType, id, err := d.topicRef()
	if err != nil {
		return c.usageError(stderr, "%v", err)
	}
	if q := d.qos.or(0); q < 0 || q > 2 {
		return c.usageError(stderr, "-q %d: want 0, 1 or 2", q)
	}
	count, wait, verbose := &o.count, &o.wait, &o.verbose

	ctx, cancel := signalContext()
	defer cancel()
	if *wait > 0 {
		var c2 context.CancelFunc
		ctx, c2 = context.WithTimeout(ctx, time.Duration(*wait)*time.Second)
		defer c2()
	}
	type line struct{ topic, payload string }
	msgs := make(chan line, 1024)
	opts := d.snOptions("sub")
	opts.OnMessage = func(topic string, topicID uint16, t mqttsn.TopicIDType, m *mqttsn.Publish) {
		if topic == "" {
			topic = t.String() + ":" + strconv.Itoa(int(topicID))
		}
		select {
		case msgs <- line{topic, string(m.Data)}:
		case <-ctx.Done():
		}
	}
	cl, err := d.dialMQTTSN(ctx, t, opts, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw sub: %v\n", err)
		return 1
	}
	defer cl.Close()
	if err := cl.Connect(ctx); err != nil {
		fmt.Fprintf(stderr, "mqttgw sub: %v\n", err)
		return 1
	}
	qos := mqttsn.QoS(d.qos.or(0))
	if idType == mqttsn.TopicNormal {
		_, _, err = cl.Subscribe(ctx, d.topic, qos)
	} else {
		_, err = cl.SubscribeID(ctx, idType, id, qos)
	}
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw sub: %v\n", err)
		return 1
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	n := 0
	rc := 0
loop:
	for *count == 0 || n < *count {
		select {
		case l := <-msgs:
			if *verbose {
				w.WriteString(l.topic)
				w.WriteByte(' ')
			}
			w.WriteString(strings.TrimSuffix(l.payload, "\n"))
			w.WriteByte('\n')
			if len(msgs) == 0 {
				w.Flush()
			}
			n++
		case <-ctx.Done():
			if *wait > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) && *count > 0 {
				rc = 27 // like mosquitto_sub -W
			}
			break loop
		}
	}
	w.Flush()
	dctx, dcancel := context.WithTimeout(context.Background(), 2*d.retry)
	defer dcancel()
	_ = cl.Disconnect(dctx)
	return rc
}
