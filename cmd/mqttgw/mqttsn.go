package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"flag"
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

// MQTT-SN client tools: `mqttgw pub|sub|bench --mqttsn HOST:PORT ...`, built on
// the mqttsn package's client, in the manner of mosquitto_pub and mosquitto_sub.
// pub and sub also speak MQTT-SN over DTLS 1.2 to an mqttsns listener
// (--mqttsn mqttsns://HOST:PORT --psk-identity ID --psk-key HEX).
// Exit codes: 0 success, 1 the gateway refused or did not answer, 2 bad usage.

// snFlags are the flags pub and sub share.
type snFlags struct {
	addr        string
	pskIdentity string
	pskKey      string
	topic       string
	qos         int
	clientID    string
	predefined  int
	short       string
	keepalive   time.Duration
	retry       time.Duration
	retries     int
	persistent  bool
}

func (f *snFlags) register(fs *flag.FlagSet, defaultID string) {
	fs.StringVar(&f.addr, "mqttsn", "127.0.0.1:1884", "the gateway's MQTT-SN HOST:PORT (or mqttsn://HOST:PORT), or mqttsns://HOST:PORT for MQTT-SN over DTLS 1.2 (with --psk-identity, --psk-key)")
	fs.StringVar(&f.pskIdentity, "psk-identity", "", "DTLS PSK identity (mqttsns://); the gateway takes it as the client id, so it is -i's default")
	fs.StringVar(&f.pskKey, "psk-key", "", "DTLS pre-shared key in hex, as in the gateway's psk_file (identity:hexkey, Mosquitto's format), e.g. 73656372657431 for the key \"secret1\"")
	fs.StringVar(&f.topic, "t", "", "topic name (pub) or filter (sub)")
	fs.IntVar(&f.qos, "q", 0, "QoS: -1 (pub only, with --predefined or --short), 0, 1 or 2")
	fs.StringVar(&f.clientID, "i", defaultID, "client id (1 to 23 octets)")
	fs.IntVar(&f.predefined, "predefined", 0, "use this predefined topic id instead of a topic name")
	fs.StringVar(&f.short, "short", "", "use this two-character short topic name")
	fs.DurationVar(&f.keepalive, "k", 60*time.Second, "keepalive (the CONNECT Duration)")
	fs.DurationVar(&f.retry, "retry", 10*time.Second, "T_RETRY: wait for an answer before retransmitting")
	fs.IntVar(&f.retries, "retries", 3, "N_RETRY: retransmissions before giving up")
	fs.BoolVar(&f.persistent, "c", false, "persistent session: CleanSession=0, the gateway keeps subscriptions and topic ids (like mosquitto_sub -c)")
}

// topicRef says how the tool names its topic: by name, predefined id or short name.
func (f *snFlags) topicRef() (idType mqttsn.TopicIDType, id uint16, err error) {
	set := 0
	if f.topic != "" {
		set++
	}
	if f.predefined != 0 {
		set++
	}
	if f.short != "" {
		set++
	}
	if set != 1 && !(set == 2 && f.topic != "" && f.predefined != 0) {
		return 0, 0, errors.New("give one of -t TOPIC, --predefined ID or --short XY (-t may name a predefined id)")
	}
	switch {
	case f.predefined != 0:
		if f.predefined < 1 || f.predefined > 0xFFFE {
			return 0, 0, fmt.Errorf("--predefined %d: want 1..65534", f.predefined)
		}
		return mqttsn.TopicPredefined, uint16(f.predefined), nil
	case f.short != "":
		id, err := mqttsn.ShortTopicID(f.short)
		return mqttsn.TopicShort, id, err
	}
	return mqttsn.TopicNormal, 0, nil
}

func (f *snFlags) options() mqttsn.ClientOptions {
	o := mqttsn.ClientOptions{
		ClientID:      f.clientID,
		Keepalive:     f.keepalive,
		CleanSession:  !f.persistent,
		RetryInterval: f.retry,
		MaxRetries:    f.retries,
	}
	if f.topic != "" && f.predefined != 0 {
		o.PredefinedTopics = map[string]uint16{f.topic: uint16(f.predefined)}
	}
	return o
}

// target is where --mqttsn points: a HOST:PORT, and whether over DTLS.
type snTarget struct {
	hostport string
	dtls     bool
	key      []byte // the PSK, decoded
}

// target checks --mqttsn and the PSK flags.
func (f *snFlags) target() (snTarget, error) {
	t := snTarget{hostport: f.addr}
	switch {
	case strings.HasPrefix(f.addr, "mqttsns://"):
		t.hostport, t.dtls = strings.TrimPrefix(f.addr, "mqttsns://"), true
	case strings.HasPrefix(f.addr, "mqttsn://"):
		t.hostport = strings.TrimPrefix(f.addr, "mqttsn://")
	case strings.Contains(f.addr, "://"):
		return t, fmt.Errorf("--mqttsn %q: want HOST:PORT, mqttsn://HOST:PORT or mqttsns://HOST:PORT", f.addr)
	}
	if _, _, err := net.SplitHostPort(t.hostport); err != nil {
		return t, fmt.Errorf("--mqttsn %q: want HOST:PORT, mqttsn://HOST:PORT or mqttsns://HOST:PORT", f.addr)
	}
	if !t.dtls {
		if f.pskIdentity != "" || f.pskKey != "" {
			return t, errors.New("--psk-identity and --psk-key need an mqttsns://HOST:PORT gateway")
		}
		return t, nil
	}
	if f.pskIdentity == "" || f.pskKey == "" {
		return t, errors.New("mqttsns:// needs --psk-identity and --psk-key")
	}
	key, err := hex.DecodeString(f.pskKey)
	if err != nil || len(key) == 0 {
		return t, fmt.Errorf("--psk-key: want the key in hex, as in the psk_file (identity:hexkey): %q is not", f.pskKey)
	}
	t.key = key
	return t, nil
}

// clientIDDefault makes the PSK identity -i's default over DTLS, where the
// gateway requires the client id to be the identity.
func (f *snFlags) clientIDDefault(fs *flag.FlagSet) {
	if f.pskIdentity == "" {
		return
	}
	set := false
	fs.Visit(func(fl *flag.Flag) { set = set || fl.Name == "i" })
	if !set {
		f.clientID = f.pskIdentity
	}
}

// dial makes the client: over UDP, or over a DTLS 1.2 connection whose
// handshake is done first, within the time the client gives an exchange
// (T_RETRY × (N_RETRY+1)).
func (f *snFlags) dial(ctx context.Context, t snTarget, o mqttsn.ClientOptions) (*mqttsn.Client, error) {
	if !t.dtls {
		return mqttsn.Dial(ctx, t.hostport, o)
	}
	conn, err := dialDTLS(ctx, t.hostport, f.pskIdentity, t.key, f.retry*time.Duration(f.retries+1))
	if err != nil {
		return nil, err
	}
	return mqttsn.DialConn(conn, o), nil
}

// dialDTLS makes a DTLS 1.2 connection with a pre-shared key (RFC 4279) and
// runs its handshake within bound. It sends the gateway's connection id (RFC
// 9146) when the gateway gives one, so that a NAT rebinding keeps the session.
func dialDTLS(ctx context.Context, hostport, identity string, key []byte, bound time.Duration) (*piondtls.Conn, error) {
	ra, err := net.ResolveUDPAddr("udp", hostport)
	if err != nil {
		return nil, fmt.Errorf("mqttsns: %s: %w", hostport, err)
	}
	conn, err := piondtls.DialWithOptions("udp", ra,
		piondtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		piondtls.WithPSKIdentityHint([]byte(identity)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8, piondtls.TLS_PSK_WITH_AES_128_GCM_SHA256),
		piondtls.WithConnectionIDGenerator(piondtls.OnlySendCIDGenerator()),
	)
	if err != nil {
		return nil, fmt.Errorf("mqttsns: %s: %w", hostport, err)
	}
	hctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("mqttsns: %s: DTLS handshake as %q failed (a wrong --psk-key or an identity the gateway does not know shows as no answer): %w", hostport, identity, err)
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

func cmdPubMQTTSN(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mqttgw pub --mqttsn HOST:PORT (-t TOPIC | --predefined ID | --short XY) (-m MSG | -f FILE | -n | -l) [-q -1|0|1|2] [-r] [-i CLIENTID]\n"+
			"                  [--will-topic T --will-message M [--will-qos Q] [--will-retain]] [--sleep DURATION]\n"+
			"       mqttgw pub --mqttsn mqttsns://HOST:PORT --psk-identity ID --psk-key HEX ...   (MQTT-SN over DTLS 1.2)")
		fs.PrintDefaults()
	}
	var f snFlags
	f.register(fs, defaultClientID("mqttgw-pub"))
	msg := fs.String("m", "", "message payload")
	file := fs.String("f", "", "send the contents of a file as the payload")
	null := fs.Bool("n", false, "send an empty payload")
	lines := fs.Bool("l", false, "send each line of standard input as a message")
	retain := fs.Bool("r", false, "retain the message")
	willTopic := fs.String("will-topic", "", "will topic")
	willMsg := fs.String("will-message", "", "will payload")
	willQoS := fs.Int("will-qos", 0, "will QoS (0, 1 or 2)")
	willRetain := fs.Bool("will-retain", false, "retain the will")
	sleep := fs.Duration("sleep", 0, "after publishing, go to sleep for this long (DISCONNECT with Duration) instead of disconnecting")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mqttgw pub: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	target, err := f.target()
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw pub: %v\n", err)
		return 2
	}
	f.clientIDDefault(fs)
	idType, id, err := f.topicRef()
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw pub: %v\n", err)
		return 2
	}
	sources := 0
	for _, b := range []bool{*msg != "", *file != "", *null, *lines} {
		if b {
			sources++
		}
	}
	if sources != 1 {
		fmt.Fprintln(stderr, "mqttgw pub: give exactly one of -m MSG, -f FILE, -n or -l")
		return 2
	}
	if f.qos < -1 || f.qos > 2 {
		fmt.Fprintf(stderr, "mqttgw pub: -q %d: want -1, 0, 1 or 2\n", f.qos)
		return 2
	}
	qos := mqttsn.QoS(f.qos)
	if qos == mqttsn.QoSMinusOne && idType == mqttsn.TopicNormal {
		fmt.Fprintln(stderr, "mqttgw pub: QoS -1 needs --predefined ID or --short XY (MQTT-SN 1.2 §6.8: no REGISTER without a connection)")
		return 2
	}
	if *willMsg != "" && *willTopic == "" {
		fmt.Fprintln(stderr, "mqttgw pub: --will-message needs --will-topic")
		return 2
	}
	if *willQoS < 0 || *willQoS > 2 {
		fmt.Fprintln(stderr, "mqttgw pub: --will-qos: want 0, 1 or 2")
		return 2
	}
	var payloads [][]byte
	switch {
	case *msg != "":
		payloads = [][]byte{[]byte(*msg)}
	case *null:
		payloads = [][]byte{nil}
	case *file != "":
		b, err := os.ReadFile(*file)
		if err != nil {
			fmt.Fprintf(stderr, "mqttgw pub: %v\n", err)
			return 1
		}
		payloads = [][]byte{b}
	}

	ctx, cancel := signalContext()
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, *timeout)
	defer cancelT()

	if qos == mqttsn.QoSMinusOne && *willTopic == "" && *sleep == 0 {
		// Connectionless: one datagram per message, nothing to wait for
		// (over DTLS, once the handshake is done).
		if !target.dtls {
			send := func(p []byte) error { return mqttsn.PublishMinusOne(ctx, target.hostport, idType, id, *retain, p) }
			return pubEach(stderr, payloads, *lines, send)
		}
		c, err := f.dial(ctx, target, f.options())
		if err != nil {
			fmt.Fprintf(stderr, "mqttgw pub: %v\n", err)
			return 1
		}
		defer c.Close()
		send := func(p []byte) error { return c.PublishID(ctx, idType, id, qos, *retain, p) }
		return pubEach(stderr, payloads, *lines, send)
	}

	o := f.options()
	if *willTopic != "" {
		o.Will = &mqttsn.Will{Topic: *willTopic, Payload: []byte(*willMsg), QoS: mqttsn.QoS(*willQoS), Retain: *willRetain}
	}
	c, err := f.dial(ctx, target, o)
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw pub: %v\n", err)
		return 1
	}
	defer c.Close()
	if err := c.Connect(ctx); err != nil {
		fmt.Fprintf(stderr, "mqttgw pub: %v\n", err)
		return 1
	}
	send := func(p []byte) error {
		if idType == mqttsn.TopicNormal {
			return c.Publish(ctx, f.topic, qos, *retain, p)
		}
		return c.PublishID(ctx, idType, id, qos, *retain, p)
	}
	rc := pubEach(stderr, payloads, *lines, send)
	if *sleep > 0 {
		if err := c.Sleep(ctx, *sleep); err != nil {
			fmt.Fprintf(stderr, "mqttgw pub: %v\n", err)
			return 1
		}
		return rc
	}
	if err := c.Disconnect(ctx); err != nil {
		fmt.Fprintf(stderr, "mqttgw pub: %v\n", err)
		return 1
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

func cmdSubMQTTSN(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mqttgw sub --mqttsn HOST:PORT (-t FILTER | --predefined ID | --short XY) [-q 0|1|2] [-i CLIENTID] [-C COUNT] [-W SECONDS] [-v]\n"+
			"       mqttgw sub --mqttsn mqttsns://HOST:PORT --psk-identity ID --psk-key HEX ...   (MQTT-SN over DTLS 1.2)")
		fs.PrintDefaults()
	}
	var f snFlags
	f.register(fs, defaultClientID("mqttgw-sub"))
	count := fs.Int("C", 0, "exit after this many messages (0: never)")
	wait := fs.Int("W", 0, "exit after this many seconds (0: never); exit status 27 if -C was not reached")
	verbose := fs.Bool("v", false, "print the topic before each payload")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mqttgw sub: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	target, err := f.target()
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw sub: %v\n", err)
		return 2
	}
	f.clientIDDefault(fs)
	idType, id, err := f.topicRef()
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw sub: %v\n", err)
		return 2
	}
	if f.qos < 0 || f.qos > 2 {
		fmt.Fprintf(stderr, "mqttgw sub: -q %d: want 0, 1 or 2\n", f.qos)
		return 2
	}
	if *count < 0 || *wait < 0 {
		fmt.Fprintln(stderr, "mqttgw sub: -C and -W must not be negative")
		return 2
	}

	ctx, cancel := signalContext()
	defer cancel()
	if *wait > 0 {
		var c2 context.CancelFunc
		ctx, c2 = context.WithTimeout(ctx, time.Duration(*wait)*time.Second)
		defer c2()
	}
	type line struct{ topic, payload string }
	msgs := make(chan line, 1024)
	o := f.options()
	o.OnMessage = func(topic string, topicID uint16, t mqttsn.TopicIDType, m *mqttsn.Publish) {
		if topic == "" {
			topic = t.String() + ":" + strconv.Itoa(int(topicID))
		}
		select {
		case msgs <- line{topic, string(m.Data)}:
		case <-ctx.Done():
		}
	}
	c, err := f.dial(ctx, target, o)
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw sub: %v\n", err)
		return 1
	}
	defer c.Close()
	if err := c.Connect(ctx); err != nil {
		fmt.Fprintf(stderr, "mqttgw sub: %v\n", err)
		return 1
	}
	if idType == mqttsn.TopicNormal {
		_, _, err = c.Subscribe(ctx, f.topic, mqttsn.QoS(f.qos))
	} else {
		_, err = c.SubscribeID(ctx, idType, id, mqttsn.QoS(f.qos))
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
	dctx, dcancel := context.WithTimeout(context.Background(), 2*f.retry)
	defer dcancel()
	_ = c.Disconnect(dctx)
	return rc
}
