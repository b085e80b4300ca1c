package main

// Helpers both load tools share (bench --mqttsn, bench --coap).

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

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
