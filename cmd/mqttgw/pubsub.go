package main

import (
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mqttgw/mqttgw/config"
)

// The device-side client tools, pub and sub, in the manner of mosquitto_pub and
// mosquitto_sub: -h HOST and -p PORT name the gateway, --mqttsn (the default) or
// --coap choose the protocol, and the flags of both protocols are one set, so
// that --help shows them all. Each protocol's exchanges live in its own file
// (mqttsn.go, coap.go).

// deviceFlags are the flags pub and sub share.
type deviceFlags struct {
	host        string
	port        int
	mqttsn      string // --mqttsn [ADDR]; "" when only the protocol is chosen
	coap        string // --coap [URL]
	pskIdentity string
	pskKey      string
	topic       string
	qos         optInt
	clientID    string
	debug       bool

	// MQTT-SN only
	predefined int
	short      string
	keepalive  time.Duration
	retry      time.Duration
	retries    int
	persistent bool

	// CoAP only
	user, pass string
	non        bool
}

// Flags of one protocol only: given with the other, they are a usage error
// rather than silently ignored.
var (
	mqttsnOnlyFlags = []string{"predefined", "short", "k", "c", "retry", "retries",
		"will-topic", "will-message", "will-qos", "will-retain", "sleep"}
	coapOnlyFlags = []string{"u", "P", "non", "put"}
)

func (d *deviceFlags) register(fs *flag.FlagSet, tool string) {
	fs.StringVar(&d.host, "h", "127.0.0.1", "the gateway's `HOST`")
	fs.IntVar(&d.port, "p", 0, "the gateway's `PORT`; by default 1884 for MQTT-SN, 8884 for MQTT-SN over DTLS, 5683 for CoAP, 5684 for CoAP over DTLS (the listeners' defaults)")
	fs.Var(optString{&d.mqttsn}, "mqttsn", "speak MQTT-SN, the default; with `ADDR` (HOST:PORT, mqttsn://HOST:PORT, or mqttsns://HOST:PORT for DTLS) instead of -h and -p")
	fs.Var(optString{&d.coap}, "coap", "speak CoAP; with `URL` (coap://HOST[:PORT][/ps/TOPIC], or coaps://... for DTLS) instead of -h and -p, and of -t when it has a path")
	fs.StringVar(&d.pskIdentity, "psk-identity", "", "the DTLS PSK `IDENTITY`: with -h/-p it turns DTLS on (mqttsns, coaps), as mosquitto_pub's --psk turns TLS on")
	fs.StringVar(&d.pskKey, "psk-key", "", "the DTLS pre-shared key in `HEX`, as the gateway's psk_file has it (identity:hexkey, Mosquitto's format): 73656372657431 is the key \"secret1\"")
	if tool == "pub" {
		fs.StringVar(&d.topic, "t", "", "the `TOPIC` to publish to (CoAP: POST /ps/TOPIC); MQTT-SN may name a predefined id's topic together with --predefined")
		fs.Var(&d.qos, "q", "the `QOS`: MQTT-SN -1 (with --predefined or --short: no connection), 0 (the default), 1 or 2; CoAP: the query's qos, by default 1 for a Confirmable request, 0 with --non")
		fs.StringVar(&d.clientID, "i", "", "the client `ID`: MQTT-SN's (1 to 23 octets; by default mqttgw-pub-PID, or the PSK identity over DTLS); CoAP: the query's c (none by default)")
	} else {
		fs.StringVar(&d.topic, "t", "", "the topic `FILTER` to subscribe to, + and # allowed (CoAP: observes /ps/FILTER)")
		fs.Var(&d.qos, "q", "the subscription's `QOS`: 0 (the default), 1 or 2; CoAP: the query's qos")
		fs.StringVar(&d.clientID, "i", "", "the client `ID`: MQTT-SN's (1 to 23 octets; by default mqttgw-sub-PID, or the PSK identity over DTLS); CoAP: the query's c (none by default)")
	}
	fs.BoolVar(&d.debug, "d", false, "debug: print every MQTT-SN packet or CoAP message sent and received to standard error, as mosquitto_pub -d does")

	fs.IntVar(&d.predefined, "predefined", 0, "use the predefined topic `ID` instead of a topic name")
	fs.StringVar(&d.short, "short", "", "use the two-character short topic name `XY`")
	fs.DurationVar(&d.keepalive, "k", 60*time.Second, "the keepalive `DURATION` (CONNECT's Duration)")
	fs.DurationVar(&d.retry, "retry", 10*time.Second, "T_RETRY: wait `DURATION` for an answer before sending again")
	fs.IntVar(&d.retries, "retries", 3, "N_RETRY: send again up to `N` times, then give up")
	fs.BoolVar(&d.persistent, "c", false, "a persistent session (CleanSession 0): the gateway keeps the client's subscriptions and topic ids, as with mosquitto_sub -c")

	fs.StringVar(&d.user, "u", "", "the `USER` name: the query's u, checked against the gateway's password_file")
	fs.StringVar(&d.pass, "P", "", "the `PASSWORD`: the query's p")
	fs.BoolVar(&d.non, "non", false, "send Non-confirmable requests instead of Confirmable ones")
}

// optInt is an int flag that knows whether it was given: -q's default depends
// on the protocol, so the help states it in words.
type optInt struct {
	v   int
	set bool
}

func (o *optInt) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.Itoa(o.v)
}

func (o *optInt) Set(s string) error {
	v, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("not a number")
	}
	o.v, o.set = v, true
	return nil
}

// or is the value, or def when the flag was not given.
func (o optInt) or(def int) int {
	if o.set {
		return o.v
	}
	return def
}

// deviceTarget is where the tool sends, after -h/-p, --mqttsn, --coap and the
// PSK flags are put together.
type deviceTarget struct {
	coap     bool
	dtls     bool
	hostport string
	key      []byte // the PSK, decoded (DTLS)
	path     string // CoAP: the resource, /ps/TOPIC unless the URL named another
	query    []string
}

// resolve works out the protocol and the gateway's address: --coap chooses
// CoAP, anything else MQTT-SN; an address given to --mqttsn or --coap replaces
// -h and -p; with -h/-p the PSK flags choose DTLS.
func (d *deviceFlags) resolve(fs *flag.FlagSet) (deviceTarget, error) {
	set := visited(fs)
	t := deviceTarget{coap: set["coap"]}
	if set["mqttsn"] && t.coap {
		return t, errors.New("give --mqttsn or --coap, not both")
	}
	for _, n := range mqttsnOnlyFlags {
		if t.coap && set[n] {
			return t, fmt.Errorf("%s is an MQTT-SN flag, and --coap speaks CoAP", dashed(n))
		}
	}
	for _, n := range coapOnlyFlags {
		if !t.coap && set[n] {
			return t, fmt.Errorf("%s is a CoAP flag: add --coap (the default protocol is MQTT-SN)", dashed(n))
		}
	}
	addr, flagName := d.mqttsn, "--mqttsn"
	if t.coap {
		addr, flagName = d.coap, "--coap"
	}
	psk := d.pskIdentity != "" || d.pskKey != ""
	switch {
	case addr != "" && (set["h"] || set["p"]):
		return t, fmt.Errorf("give the gateway's address once: -h and -p, or %s with an address", flagName)
	case addr == "":
		t.dtls = psk
		port := d.port
		if port == 0 {
			port = defaultPort(t.coap, t.dtls)
		}
		if port < 1 || port > 65535 {
			return t, fmt.Errorf("-p %d: want 1..65535", d.port)
		}
		t.hostport = net.JoinHostPort(d.host, strconv.Itoa(port))
		if t.coap {
			if d.topic == "" {
				return t, errors.New("give -t TOPIC (CoAP sends to /ps/TOPIC)")
			}
			t.path = "/ps/" + d.topic
		}
	case t.coap:
		u, err := parseCoAPURL(addr)
		if err != nil {
			return t, err
		}
		t.hostport, t.dtls, t.query = u.host, u.secure, u.query
		switch {
		case u.path != "" && u.path != "/" && d.topic != "":
			return t, fmt.Errorf("give the topic once: in the URL's path (%s) or with -t", u.path)
		case u.path != "" && u.path != "/":
			t.path = u.path
		case d.topic == "":
			return t, errors.New("give -t TOPIC, or the topic in the URL: coap://HOST/ps/TOPIC")
		default:
			t.path = "/ps/" + d.topic
		}
		if psk && !t.dtls {
			return t, errors.New("--psk-identity and --psk-key are for DTLS: a coaps:// URL, or -h/-p instead of the URL")
		}
	default:
		var err error
		if t.hostport, t.dtls, err = parseMQTTSNAddr(addr); err != nil {
			return t, err
		}
		if psk && !t.dtls {
			return t, errors.New("--psk-identity and --psk-key are for DTLS: --mqttsn mqttsns://HOST:PORT, or -h/-p instead of --mqttsn HOST:PORT")
		}
	}
	if !t.dtls {
		return t, nil
	}
	if d.pskIdentity == "" || d.pskKey == "" {
		return t, errors.New("DTLS needs --psk-identity and --psk-key")
	}
	key, err := hex.DecodeString(d.pskKey)
	if err != nil || len(key) == 0 {
		return t, fmt.Errorf("--psk-key: want the key in hex, as in the psk_file (identity:hexkey): %q is not", d.pskKey)
	}
	t.key = key
	return t, nil
}

// defaultPort is the port of the listener type the tool speaks to, as the
// config defaults it.
func defaultPort(coap, dtls bool) int {
	typ := config.ListenerMQTTSN
	switch {
	case coap && dtls:
		typ = config.ListenerCoAPS
	case coap:
		typ = config.ListenerCoAP
	case dtls:
		typ = config.ListenerMQTTSNS
	}
	k, _ := config.KindOf(typ)
	p, _ := strconv.Atoi(k.DefaultPort)
	return p
}

// parseMQTTSNAddr reads --mqttsn's address: HOST:PORT, mqttsn://HOST:PORT or
// mqttsns://HOST:PORT (DTLS).
func parseMQTTSNAddr(addr string) (hostport string, dtls bool, err error) {
	hostport = addr
	switch {
	case strings.HasPrefix(addr, "mqttsns://"):
		hostport, dtls = strings.TrimPrefix(addr, "mqttsns://"), true
	case strings.HasPrefix(addr, "mqttsn://"):
		hostport = strings.TrimPrefix(addr, "mqttsn://")
	case strings.Contains(addr, "://"):
		return "", false, fmt.Errorf("--mqttsn %q: want HOST:PORT, mqttsn://HOST:PORT or mqttsns://HOST:PORT", addr)
	}
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		return "", false, fmt.Errorf("--mqttsn %q: want HOST:PORT, mqttsn://HOST:PORT or mqttsns://HOST:PORT", addr)
	}
	return hostport, dtls, nil
}

// pubOptions are pub's flags.
type pubOptions struct {
	dev                    deviceFlags
	msg, file              string
	null, lines, retain    bool
	willTopic, willMessage string
	willQoS                int
	willRetain             bool
	sleep                  time.Duration
	put                    bool
	timeout                time.Duration
}

func pubFlags() (*flag.FlagSet, *pubOptions) {
	var o pubOptions
	fs := flag.NewFlagSet("pub", flag.ContinueOnError)
	o.dev.register(fs, "pub")
	fs.StringVar(&o.msg, "m", "", "the message: `MSG` as the payload")
	fs.StringVar(&o.file, "f", "", "the message: the contents of `FILE` (CoAP sends a large one block-wise)")
	fs.BoolVar(&o.null, "n", false, "the message: an empty payload")
	fs.BoolVar(&o.lines, "l", false, "the messages: each line of standard input, one message each")
	fs.BoolVar(&o.retain, "r", false, "retain the message (CoAP: the query's retain=true)")
	fs.DurationVar(&o.timeout, "timeout", 60*time.Second, "give up after `DURATION`")
	fs.StringVar(&o.willTopic, "will-topic", "", "the will's `TOPIC`, sent in the CONNECT exchange")
	fs.StringVar(&o.willMessage, "will-message", "", "the will's payload, `MSG`")
	fs.IntVar(&o.willQoS, "will-qos", 0, "the will's `QOS`: 0, 1 or 2")
	fs.BoolVar(&o.willRetain, "will-retain", false, "retain the will")
	fs.DurationVar(&o.sleep, "sleep", 0, "after publishing, sleep for `DURATION` (DISCONNECT with a Duration) instead of disconnecting")
	fs.BoolVar(&o.put, "put", false, "PUT instead of POST")
	return fs, &o
}

// payloads are pub's messages from -m, -f or -n (-l reads them later, from
// standard input); a file that cannot be read is not a usage error.
func (o *pubOptions) payloads(fs *flag.FlagSet) (payloads [][]byte, usage, err error) {
	set := visited(fs)
	n := 0
	for _, given := range []bool{set["m"], set["f"], o.null, o.lines} {
		if given {
			n++
		}
	}
	switch {
	case n != 1:
		return nil, errors.New("give exactly one of -m MSG, -f FILE, -n or -l"), nil
	case set["m"]:
		return [][]byte{[]byte(o.msg)}, nil, nil
	case set["f"]:
		b, err := os.ReadFile(o.file)
		return [][]byte{b}, nil, err
	case o.null:
		return [][]byte{nil}, nil, nil
	}
	return nil, nil, nil
}

var pubSynopsis = []string{
	"pub [-h HOST] [-p PORT] [--mqttsn [ADDR] | --coap [URL]]",
	"    -t TOPIC (-m MSG | -f FILE | -n | -l) [-q QOS] [-r] [-i ID] [-d] ...",
}

const pubAbout = `Publishes as a device would, like mosquitto_pub: over MQTT-SN (the default)
or CoAP (--coap), to the gateway at -h HOST and -p PORT. --mqttsn ADDR and
--coap URL name the gateway in one argument instead; alone, they only choose the
protocol. DTLS: an mqttsns:// or coaps:// address, or -h/-p with --psk-identity
and --psk-key.

MQTT-SN: CONNECT (with the will exchange), REGISTER, PUBLISH at QoS 0, 1 or 2,
then DISCONNECT (or sleep). QoS -1 sends one PUBLISH with a predefined topic id
or a short topic name, without a connection. CoAP: POST /ps/TOPIC (or PUT), and
the gateway answers 2.04 once the broker has the message, 5.03 while the broker
is away (retry after Max-Age).

Exit status: 0 published; 1 the gateway refused, did not answer, or nothing
listens at its address (MQTT-SN says so at once, from the ICMP port
unreachable); 2 bad usage.`

var pubGroups = []flagGroup{
	{"Where the gateway is:", []string{"h", "p", "mqttsn", "coap", "psk-identity", "psk-key"}},
	{"What to publish:", []string{"t", "m", "f", "n", "l", "q", "r", "i", "d", "timeout"}},
	{"MQTT-SN only:", mqttsnOnlyFlags},
	{"CoAP only (--coap):", coapOnlyFlags},
}

var pubExamples = []string{
	"mqttgw pub -t sensors/t1 -m 21.5 -q 1            # MQTT-SN, to 127.0.0.1:1884",
	"mqttgw pub -h 10.0.0.2 -q -1 --predefined 1 -m alarm   # QoS -1: no connection",
	"mqttgw pub --coap -t sensors/t1 -m 21.5 -r       # CoAP, to 127.0.0.1:5683",
	"mqttgw pub --coap coap://127.0.0.1:5683/ps/sensors/t1 -m 21.5 --non",
	"mqttgw pub --coap --psk-identity node7 --psk-key 73656372657431 -t x -m 1   # coaps, port 5684",
	"mqttgw pub --mqttsn mqttsns://127.0.0.1:8884 --psk-identity node7 --psk-key 73656372657431 -t x -m 1",
	"mqttgw pub -d -t sensors/t1 -m 21.5              # print every packet",
}

func cmdPub(c *command, args []string, stdout, stderr io.Writer) int {
	fs, o := pubFlags()
	if code, done := parseDevice(c, fs, args, stdout, stderr); done {
		return code
	}
	t, err := o.dev.resolve(fs)
	if err != nil {
		return c.usageError(stderr, "%v", err)
	}
	payloads, usageErr, err := o.payloads(fs)
	switch {
	case usageErr != nil:
		return c.usageError(stderr, "%v", usageErr)
	case err != nil:
		fmt.Fprintf(stderr, "mqttgw pub: %v\n", err)
		return 1
	}
	if t.coap {
		return pubCoAP(c, o, t, payloads, stderr)
	}
	return pubMQTTSN(c, o, t, payloads, stderr)
}

// subOptions are sub's flags.
type subOptions struct {
	dev     deviceFlags
	count   int
	wait    int
	verbose bool
}

func subFlags() (*flag.FlagSet, *subOptions) {
	var o subOptions
	fs := flag.NewFlagSet("sub", flag.ContinueOnError)
	o.dev.register(fs, "sub")
	fs.IntVar(&o.count, "C", 0, "exit after `COUNT` messages (0: no limit)")
	fs.IntVar(&o.wait, "W", 0, "exit after `SECONDS` (0: no limit); with -C, exit status 27 when fewer messages came, as mosquitto_sub")
	fs.BoolVar(&o.verbose, "v", false, "print each message's topic before its payload")
	return fs, &o
}

var subSynopsis = []string{
	"sub [-h HOST] [-p PORT] [--mqttsn [ADDR] | --coap [URL]]",
	"    -t FILTER [-q QOS] [-C COUNT] [-W SECONDS] [-v] [-i ID] [-d] ...",
}

const subAbout = `Subscribes as a device would, like mosquitto_sub, and prints each message's
payload on its own line (-v: after its topic): over MQTT-SN (the default) or
CoAP (--coap), to the gateway at -h HOST and -p PORT, or at the address given to
--mqttsn or --coap, as for pub. MQTT-SN: CONNECT, SUBSCRIBE, then every PUBLISH;
retained messages come first. CoAP: GET /ps/FILTER with Observe (RFC 7641): the
last value first, then every message as a notification; sub deregisters on
exit.

Ends after -C COUNT messages, -W SECONDS, or SIGINT. Exit status: 0; 27 when -W
ended it before -C COUNT messages came; 1 the gateway refused or did not answer;
2 bad usage.`

var subGroups = []flagGroup{
	{"Where the gateway is:", []string{"h", "p", "mqttsn", "coap", "psk-identity", "psk-key"}},
	{"What to subscribe to:", []string{"t", "q", "i", "C", "W", "v", "d"}},
	{"MQTT-SN only:", mqttsnOnlyFlags},
	{"CoAP only (--coap):", coapOnlyFlags},
}

var subExamples = []string{
	"mqttgw sub -t 'sensors/#' -v                     # MQTT-SN, from 127.0.0.1:1884",
	"mqttgw sub -t sensors/t1 -C 1 -W 10              # one message, or exit 27 after 10 s",
	"mqttgw sub --coap -t sensors/t1 -C 3             # observe over CoAP",
	"mqttgw sub -c -i node7 -q 1 -t cmd/node7         # a persistent session",
}

func cmdSub(c *command, args []string, stdout, stderr io.Writer) int {
	fs, o := subFlags()
	if code, done := parseDevice(c, fs, args, stdout, stderr); done {
		return code
	}
	t, err := o.dev.resolve(fs)
	if err != nil {
		return c.usageError(stderr, "%v", err)
	}
	if o.count < 0 || o.wait < 0 {
		return c.usageError(stderr, "-C and -W must not be negative")
	}
	if t.coap {
		return subCoAP(c, o, t, stdout, stderr)
	}
	return subMQTTSN(c, o, t, stdout, stderr)
}

// parseDevice parses pub's or sub's flags: --mqttsn and --coap may come
// without a value, and -h is the host, as in mosquitto_pub, so -h alone is a
// mistake worth a hint.
func parseDevice(c *command, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, done bool) {
	if len(args) > 0 && args[len(args)-1] == "-h" {
		return c.usageError(stderr, "-h names the gateway's host, as in mosquitto_%s (-h HOST); for help, --help", c.name), true
	}
	if code, done := c.parse(fs, withOptionalValues(fs, args), stdout, stderr); done {
		return code, true
	}
	if fs.NArg() > 0 {
		return c.usageError(stderr, "unexpected argument %q", fs.Arg(0)), true
	}
	return 0, false
}
