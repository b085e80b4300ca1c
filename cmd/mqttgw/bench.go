package main

// The load tool, bench: its flags for both protocols (one set, as for pub and
// sub, so that --help shows them all), and the helpers both share. Each
// protocol's phases are in its own file (mqttsn_bench.go, coap_bench.go).

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Flags of one protocol's load only.
var (
	benchMQTTSNFlags = []string{"clients", "messages", "qos", "connect-parallel", "skip-direct"}
	benchCoAPFlags   = []string{"devices", "requests", "con", "non", "observers", "notifications", "device-user", "device-pass"}
)

// benchFlags are bench's flags: the MQTT-SN load fills sn, the CoAP load co;
// the flags both take are set in sn and copied to co by cmdBench.
func benchFlags() (*flag.FlagSet, *benchConfig, *coapBenchConfig) {
	var sn benchConfig
	var co coapBenchConfig
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&sn.snAddr, "mqttsn", "127.0.0.1:1884", "the gateway's MQTT-SN listener, `HOST:PORT`; MQTT-SN is the default protocol")
	fs.Var(optString{&co.coapURL}, "coap", "load the gateway's CoAP listener instead, at `URL`: coap://HOST:PORT, by default coap://127.0.0.1:5683 (plain CoAP only)")
	fs.StringVar(&sn.mqttURL, "mqtt", "tcp://127.0.0.1:1883", "the broker, `URL`, for the measuring subscriber and the direct baseline")
	fs.StringVar(&sn.user, "u", "", "the broker `USER` name")
	fs.StringVar(&sn.pass, "P", "", "the broker `PASSWORD`")
	fs.IntVar(&sn.size, "size", 32, "the payload size in octets, `N` (at least 16)")
	fs.DurationVar(&sn.limit, "duration-limit", 60*time.Second, "the bound on each phase, `DURATION`")
	fs.StringVar(&sn.topic, "topic", "mqttgw-bench", "the topic `PREFIX`")
	fs.StringVar(&sn.mountpoint, "mountpoint", "", "the listener's mountpoint, `PREFIX`, as the broker sees the topics")
	fs.IntVar(&sn.gatewayPID, "gateway-pid", 0, "the gateway's process `ID` (Linux), for memory and CPU figures")
	fs.IntVar(&sn.brokerPID, "broker-pid", 0, "the broker's process `ID` (Linux), for memory and CPU figures")

	fs.IntVar(&sn.clients, "clients", 100, "simulated devices, `N` (and MQTT clients in the baseline)")
	fs.IntVar(&sn.messages, "messages", 10, "messages each client publishes, `N`")
	fs.IntVar(&sn.qos, "qos", 1, "the `QOS` of the publishes and the subscription")
	fs.IntVar(&sn.connectParallel, "connect-parallel", 50, "clients connecting at once, `N`")
	fs.BoolVar(&sn.skipDirect, "skip-direct", false, "skip the direct-to-broker baseline")

	fs.IntVar(&co.devices, "devices", 100, "simulated devices, `N` (and MQTT clients in the baseline)")
	fs.IntVar(&co.requests, "requests", 10000, "publishes per mode, `N`, in all")
	fs.BoolVar(&co.con, "con", false, "measure Confirmable publishes only (default: both)")
	fs.BoolVar(&co.non, "non", false, "measure Non-confirmable publishes only (default: both)")
	fs.IntVar(&co.observers, "observers", 100, "observers in the observe phase, `N` (0: skip it)")
	fs.IntVar(&co.notifications, "notifications", 100, "messages published to the observed topic, `N`")
	fs.StringVar(&co.deviceUser, "device-user", "", "every simulated device's `USER` name (the query's u), for a listener that checks passwords")
	fs.StringVar(&co.devicePass, "device-pass", "", "every simulated device's `PASSWORD` (the query's p)")
	return fs, &sn, &co
}

var benchSynopsis = []string{
	"bench [--mqttsn HOST:PORT] [--mqtt URL] [-u USER -P PASS]",
	"    [--clients N] [--messages M] [--qos 0|1|2] ...",
	"bench --coap [URL] [--mqtt URL] [-u USER -P PASS]",
	"    [--devices D] [--requests N] [--con|--non] [--observers K] ...",
}

const benchAbout = `Measures what the gateway adds to the broker: throughput and latency from a
device's send to its arrival at an MQTT subscriber, memory and CPU, beside the
same load sent straight to the broker by MQTT clients. Loopback addresses only;
every phase is bounded in count and time.

MQTT-SN (the default): N clients each publish M messages, each after the
previous one's acknowledgement. The broker's max_queued_messages must exceed
N x M for the subscriber to miss nothing.
CoAP (--coap): D devices send N publishes in all, Confirmable and
Non-confirmable; then K devices observe one topic that gets M messages, beside
K MQTT subscribers.

Exit status: 0 every message arrived; 1 some did not, or a phase failed; 2 bad
usage.`

var benchGroups = []flagGroup{
	{"Both protocols:", []string{"mqttsn", "coap", "mqtt", "u", "P", "size", "duration-limit", "topic", "mountpoint", "gateway-pid", "broker-pid"}},
	{"MQTT-SN only:", benchMQTTSNFlags},
	{"CoAP only (--coap):", benchCoAPFlags},
}

var benchExamples = []string{
	"mqttgw bench --clients 10 --messages 10                  # the example gateway, MQTT-SN",
	"mqttgw bench --clients 1000 --messages 100 --gateway-pid $(pidof mqttgw)",
	"mqttgw bench --coap coap://127.0.0.1:5683 --devices 10 --requests 100 --observers 10",
}

func cmdBench(c *command, args []string, stdout, stderr io.Writer) int {
	fs, sn, co := benchFlags()
	if code, done := c.parse(fs, withOptionalValues(fs, args), stdout, stderr); done {
		return code
	}
	if fs.NArg() > 0 {
		return c.usageError(stderr, "unexpected argument %q", fs.Arg(0))
	}
	set := visited(fs)
	coap := set["coap"]
	if coap && set["mqttsn"] {
		return c.usageError(stderr, "give --mqttsn or --coap, not both")
	}
	for _, n := range benchMQTTSNFlags {
		if coap && set[n] {
			return c.usageError(stderr, "%s is for the MQTT-SN load, and --coap loads CoAP", dashed(n))
		}
	}
	for _, n := range benchCoAPFlags {
		if !coap && set[n] {
			return c.usageError(stderr, "%s is for the CoAP load: add --coap URL", dashed(n))
		}
	}
	if !coap {
		return runBenchMQTTSN(c, *sn, stdout, stderr)
	}
	if co.coapURL == "" {
		co.coapURL = "coap://127.0.0.1:5683"
	}
	co.mqttURL, co.user, co.pass = sn.mqttURL, sn.user, sn.pass
	co.size, co.limit, co.topic, co.mountpoint = sn.size, sn.limit, sn.topic, sn.mountpoint
	co.gatewayPID, co.brokerPID = sn.gatewayPID, sn.brokerPID
	return runBenchCoAP(c, *co, stdout, stderr)
}

// loopbackOnly refuses anything but a loopback address: the load tool must not
// be pointed at someone else's gateway or broker.
func loopbackOnly(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT", hostport)
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return fmt.Errorf("%q: %v", host, err)
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return fmt.Errorf("%s is not a loopback address: the load tool runs on loopback only", host)
		}
	}
	return nil
}

// --- /proc figures (Linux; zero elsewhere) ---

// rssKB is a process's resident set in kB, or 0.
func rssKB(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// cpuSeconds is a process's user+system CPU time, or -1.
func cpuSeconds(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')') // the command may hold spaces
	if i < 0 {
		return -1
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return -1
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}

func cpuTimes(gatewayPID, brokerPID int) map[string]float64 {
	m := map[string]float64{"bench": cpuSeconds(os.Getpid())}
	if gatewayPID > 0 {
		m["gateway"] = cpuSeconds(gatewayPID)
	}
	if brokerPID > 0 {
		m["broker"] = cpuSeconds(brokerPID)
	}
	return m
}

// --- the straight-to-the-broker side, over paho ---

// benchMQTT connects one MQTT client for the direct baseline or the measuring
// subscriber: clean session, no reconnect (a lost connection is a failed run), and
// handlers that need not keep order.
func benchMQTT(url, user, pass, clientID string) (paho.Client, error) {
	o := paho.NewClientOptions().AddBroker(url).SetClientID(clientID).
		SetUsername(user).SetPassword(pass).SetCleanSession(true).SetAutoReconnect(false).
		SetOrderMatters(false).SetConnectTimeout(10 * time.Second).SetKeepAlive(5 * time.Minute)
	cl := paho.NewClient(o)
	if tok := cl.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("connect %s: %v", url, tok.Error())
	}
	return cl, nil
}

// waitTok waits for a paho token or the end of ctx.
func waitTok(ctx context.Context, tok paho.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// percentile of sorted latencies, p in [0, 1].
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(float64(len(sorted)-1)*p)]
}
