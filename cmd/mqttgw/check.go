package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/mapping"
)

// loadAndCompile loads a config and compiles its rules, returning every problem
// with its line. table is nil when there were errors.
func loadAndCompile(file string) (*config.Config, *mapping.Table, config.Problems) {
	cfg, ps := config.Load(file)
	if cfg == nil {
		return nil, nil, ps
	}
	table, mps := mapping.Compile(cfg.Gateway.ID, cfg.Listeners, cfg.Rules)
	ps = append(ps, cfg.Locate(mps)...)
	ps.Sort()
	if len(ps.Errors()) > 0 {
		return cfg, nil, ps
	}
	return cfg, table, ps
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "config file (or give it as the argument)")
	fs.StringVar(file, "c", "", "config file (shorthand)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file == "" && fs.NArg() == 1 {
		*file = fs.Arg(0)
	}
	if *file == "" || fs.NArg() > 1 {
		fmt.Fprintln(stderr, "usage: mqttgw check [--config] FILE")
		return 2
	}
	cfg, table, ps := loadAndCompile(*file)
	for _, p := range ps {
		fmt.Fprintln(stdout, p.Error())
	}
	if table == nil {
		fmt.Fprintf(stdout, "%s: invalid: %d error(s)\n", *file, len(ps.Errors()))
		return 1
	}
	failed := cfg.Locate(table.RunTests())
	for _, p := range failed {
		fmt.Fprintln(stdout, p.Error())
	}
	if len(failed) > 0 {
		fmt.Fprintf(stdout, "%s: invalid: %d rule test(s) failed\n", *file, len(failed))
		return 1
	}
	tests := 0
	for _, r := range cfg.Rules {
		tests += len(r.Tests)
	}
	data, _ := os.ReadFile(*file)
	sum := sha256.Sum256(data)
	fmt.Fprintf(stdout, "%s: valid: %d listener(s), %d rule(s), %d rule test(s) passed; sha256 %s\n",
		*file, len(cfg.Listeners), len(cfg.Rules), tests, hex.EncodeToString(sum[:8]))
	return 0
}

func cmdRulesTest(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "config.toml", "config file")
	listener := fs.String("listener", "", "listener the datagram arrives on")
	hexIn := fs.String("hex", "", "datagram as hex")
	textIn := fs.String("text", "", "datagram as text")
	fileIn := fs.String("file", "", "datagram read from a file")
	from := fs.String("from", "127.0.0.1:40000", "sender address")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	set := 0
	for _, s := range []string{*hexIn, *textIn, *fileIn} {
		if s != "" {
			set++
		}
	}
	if *listener == "" || set != 1 {
		fmt.Fprintln(stderr, "usage: mqttgw rules test --config FILE --listener NAME (--hex HEX | --text TEXT | --file F) [--from ADDR]")
		return 2
	}
	var payload []byte
	var err error
	switch {
	case *hexIn != "":
		payload, err = hex.DecodeString(strings.ReplaceAll(*hexIn, " ", ""))
	case *textIn != "":
		payload = []byte(*textIn)
	default:
		payload, err = os.ReadFile(*fileIn)
	}
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw: datagram: %v\n", err)
		return 2
	}
	addr, err := netip.ParseAddrPort(*from)
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw: --from: %v\n", err)
		return 2
	}
	cfg, table, ps := loadAndCompile(*file)
	for _, p := range ps {
		fmt.Fprintln(stderr, p.Error())
	}
	if table == nil {
		return 1
	}
	known := false
	for _, l := range cfg.Listeners {
		known = known || l.Name == *listener
	}
	if !known {
		fmt.Fprintf(stderr, "mqttgw: no listener named %q in %s\n", *listener, *file)
		return 2
	}
	var res mapping.Result
	d := mapping.Datagram{Listener: *listener, From: addr, Payload: payload}
	if err := table.Map(d, &res); err != nil {
		fmt.Fprintf(stdout, "no publish: %v\n", err)
		for _, v := range table.Explain(d) {
			if v.Reason != "" {
				fmt.Fprintf(stdout, "  rule %s: %s\n", v.Rule, v.Reason)
			}
		}
		return 1
	}
	fmt.Fprintf(stdout, "rule:   %s\ndevice: %s\n", res.Rule, res.Device)
	for _, f := range res.Fields {
		fmt.Fprintf(stdout, "field:  %s = %s\n", f.Name, f.Value)
	}
	for _, p := range res.Publishes {
		fmt.Fprintf(stdout, "publish: topic=%s qos=%d retain=%t payload=%s\n", p.Topic, p.QoS, p.Retain, p.Payload)
	}
	return 0
}
