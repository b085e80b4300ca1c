package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/mqttgw/mqttgw/gateway"
)

// devicesOptions are the flags of devices.
type devicesOptions struct {
	addr, listener, state, user, pass string
	json                              bool
}

func devicesFlags() (*flag.FlagSet, *devicesOptions) {
	var o devicesOptions
	fs := flag.NewFlagSet("devices", flag.ContinueOnError)
	fs.StringVar(&o.addr, "metrics", "127.0.0.1:9100", "the gateway's metrics listener, `HOST:PORT`")
	fs.StringVar(&o.listener, "listener", "", "only the devices of the listener `NAME`")
	fs.StringVar(&o.state, "state", "", "only devices in `STATE`: active, asleep or lost")
	fs.BoolVar(&o.json, "json", false, "print the JSON as the gateway sent it")
	fs.StringVar(&o.user, "u", "", "the `USER`, when [metrics] username and password protect the listener")
	fs.StringVar(&o.pass, "P", "", "the `PASSWORD` for -u")
	return fs, &o
}

// cmdDevices prints a running gateway's GET /devices as a table.
func cmdDevices(c *command, args []string, stdout, stderr io.Writer) int {
	fs, o := devicesFlags()
	if code, done := c.parse(fs, args, stdout, stderr); done {
		return code
	}
	if fs.NArg() > 0 {
		return c.usageError(stderr, "unexpected argument %q", fs.Arg(0))
	}
	addr, listener, state, asJSON, user, pass := &o.addr, &o.listener, &o.state, &o.json, &o.user, &o.pass
	q := url.Values{}
	if *listener != "" {
		q.Set("listener", *listener)
	}
	if *state != "" {
		q.Set("state", *state)
	}
	u := url.URL{Scheme: "http", Host: *addr, Path: "/devices", RawQuery: q.Encode()}
	hc := &http.Client{Timeout: 10 * time.Second}
	req, err := http.NewRequest(http.MethodGet, u.String(), nil)
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw devices: %v\n", err)
		return 2
	}
	if *user != "" {
		req.SetBasicAuth(*user, *pass)
	}
	resp, err := hc.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw devices: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw devices: %s: %v\n", u.String(), err)
		return 1
	}
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "mqttgw devices: %s: %s: %s", u.String(), resp.Status, body)
		return 1
	}
	if *asJSON {
		stdout.Write(body)
		return 0
	}
	var devs []gateway.Device
	if err := json.Unmarshal(body, &devs); err != nil {
		fmt.Fprintf(stderr, "mqttgw devices: %s: not a device list: %v\n", u.String(), err)
		return 1
	}
	printDevices(stdout, devs, time.Now())
	return 0
}

// printDevices writes one line per device; times as ages, which is what an
// operator compares.
func printDevices(w io.Writer, devs []gateway.Device, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LISTENER\tPROTOCOL\tDEVICE\tCLASS\tADDR\tSTATE\tFIRST SEEN\tLAST SEEN\tQUEUED")
	for _, d := range devs {
		class := d.Class
		if class == "" {
			class = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s ago\t%s ago\t%d\n", d.Listener, d.Protocol, d.Device, class, d.Addr, d.State,
			age(now, d.FirstSeen), age(now, d.LastSeen), d.QueuedDownlinks)
	}
	tw.Flush()
	fmt.Fprintf(w, "%d devices\n", len(devs))
}

func age(now, t time.Time) time.Duration {
	return now.Sub(t).Round(time.Second)
}
