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
	addr, listener, state, owner, user, pass string
	json, local                              bool
}

func devicesFlags() (*flag.FlagSet, *devicesOptions) {
	var o devicesOptions
	fs := flag.NewFlagSet("devices", flag.ContinueOnError)
	fs.StringVar(&o.addr, "metrics", "127.0.0.1:9100", "the gateway's metrics listener, `HOST:PORT`")
	fs.StringVar(&o.listener, "listener", "", "only the devices of the listener `NAME`")
	fs.StringVar(&o.state, "state", "", "only devices in `STATE`: active, asleep or lost; with [cluster] also remote (another instance's) or idle")
	fs.StringVar(&o.owner, "owner", "", "with [cluster], only the devices owned by the instance `ID` (its gateway.id)")
	fs.BoolVar(&o.local, "local", false, "with [cluster], only this instance's sessions, without reading the fleet's owners")
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
	if o.owner != "" {
		q.Set("owner", o.owner)
	}
	if o.local {
		q.Set("scope", "local")
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
	if e := resp.Header.Get("Mqttgw-Fleet-Error"); e != "" {
		fmt.Fprintf(stderr, "mqttgw devices: warning: this instance's devices only: %s\n", e)
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
// operator compares. A fleet's answer (devices with owners) gets an OWNER
// column: the instance serving each, with "(dead)" once its live key is
// gone; another instance's devices have no address or times here ("-").
func printDevices(w io.Writer, devs []gateway.Device, now time.Time) {
	fleet := false
	for _, d := range devs {
		fleet = fleet || d.Owner != ""
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "LISTENER\tPROTOCOL\tDEVICE\tCLASS\tADDR\tSTATE\tFIRST SEEN\tLAST SEEN\tQUEUED"
	if fleet {
		head += "\tOWNER"
	}
	fmt.Fprintln(tw, head)
	for _, d := range devs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d", d.Listener, d.Protocol, d.Device, dash(d.Class), dash(d.Addr), d.State,
			age(now, d.FirstSeen), age(now, d.LastSeen), d.QueuedDownlinks)
		if fleet {
			owner := dash(d.Owner)
			if d.OwnerAlive != nil && !*d.OwnerAlive {
				owner += " (dead)"
			}
			fmt.Fprintf(tw, "\t%s", owner)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	fmt.Fprintf(w, "%d devices\n", len(devs))
}

// dash is s, or "-" for nothing.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// age is how long ago t was, "-" when unknown.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}
