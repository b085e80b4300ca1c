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

// cmdDevices prints a running gateway's GET /devices as a table.
func cmdDevices(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("devices", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("metrics", "127.0.0.1:9100", "the gateway's metrics listener, HOST:PORT")
	listener := fs.String("listener", "", "only this listener's devices")
	state := fs.String("state", "", "only devices in this state: active, asleep or lost")
	asJSON := fs.Bool("json", false, "print the JSON as the gateway sent it")
	user := fs.String("u", "", "user name, when [metrics] username/password protect the listener")
	pass := fs.String("P", "", "password for -u")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	q := url.Values{}
	if *listener != "" {
		q.Set("listener", *listener)
	}
	if *state != "" {
		q.Set("state", *state)
	}
	u := url.URL{Scheme: "http", Host: *addr, Path: "/devices", RawQuery: q.Encode()}
	c := &http.Client{Timeout: 10 * time.Second}
	req, err := http.NewRequest(http.MethodGet, u.String(), nil)
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw devices: %v\n", err)
		return 2
	}
	if *user != "" {
		req.SetBasicAuth(*user, *pass)
	}
	resp, err := c.Do(req)
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
