package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/mqttgw/mqttgw/auth"
	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/mapping"
)

// loadAndCompile loads a config and compiles its rules, classes and downlinks,
// returning every problem with its line. table is nil when there were errors.
func loadAndCompile(file string) (*config.Config, *mapping.Table, config.Problems) {
	cfg, ps := config.Load(file)
	if cfg == nil {
		return nil, nil, ps
	}
	table, mps := mapping.CompileConfig(cfg)
	ps = append(ps, cfg.Locate(mps)...)
	ps = append(ps, cfg.Locate(authFileProblems(cfg))...)
	ps.Sort()
	if len(ps.Errors()) > 0 {
		return cfg, nil, ps
	}
	return cfg, table, ps
}

// authFileProblems parses the [auth] files as run would, so that check reports
// a bad line in one of them (with the file's own line) before run refuses it.
func authFileProblems(cfg *config.Config) config.Problems {
	var ps config.Problems
	for _, f := range []struct {
		key, path string
		parse     func(string) error
	}{
		{"auth.password_file", cfg.Auth.PasswordFile, func(p string) error { _, err := auth.LoadPasswordFile(p); return err }},
		{"auth.psk_file", cfg.Auth.PSKFile, func(p string) error { _, err := auth.LoadPSKFile(p); return err }},
		{"auth.acl_file", cfg.Auth.ACLFile, func(p string) error { _, err := auth.LoadACLFile(p); return err }},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(cfg.Path(f.path)); err != nil {
			continue // config reported it already
		}
		if err := f.parse(cfg.Path(f.path)); err != nil {
			ps = append(ps, config.Problem{Key: f.key, Msg: err.Error()})
		}
	}
	return ps
}

// exposureWarnings are check's warnings about what the config leaves open that
// its reader may believe closed: an embedded broker reachable beyond this
// machine without auth.password_file or auth.acl_file, and listeners that
// auth.allow_anonymous = false does not protect.
func exposureWarnings(cfg *config.Config) config.Problems {
	var ps config.Problems
	warn := func(key, format string, args ...any) {
		p := config.Problemf(key, format, args...)
		p.Warning = true
		ps = append(ps, p)
	}
	a := cfg.Auth
	if listen := cfg.Upstream.Embedded.Listen; cfg.Upstream.URL == "embedded" && !listensOnLoopback(listen) {
		const key = "upstream.embedded.listen"
		switch {
		case a.PasswordFile == "" && a.ACLFile == "":
			warn(key, "the embedded broker listens on %q, beyond this machine, with neither auth.password_file nor auth.acl_file: any client may connect, and publish and subscribe to every topic; set both, or listen on 127.0.0.1", listen)
		case a.PasswordFile == "":
			warn(key, "the embedded broker listens on %q, beyond this machine, without auth.password_file: any client may connect as any user; set it, or listen on 127.0.0.1", listen)
		case a.ACLFile == "":
			who := "every client that logs in"
			if a.Anonymous() {
				who = "every client, anonymous ones too (auth.allow_anonymous is true),"
			}
			warn(key, "the embedded broker listens on %q, beyond this machine, without auth.acl_file: %s may publish and subscribe to every topic; set it, or listen on 127.0.0.1", listen, who)
		}
	}
	if !a.Anonymous() {
		for i, l := range cfg.Listeners {
			key := fmt.Sprintf("listener[%d].type", i)
			k := l.Kind()
			switch {
			case k.DTLS, k.Options == "coap":
				// DTLS devices prove their identity with a PSK (or, coaps, a
				// certificate); CoAP devices give the password file's u and p.
			case k.Options == "mqttsn" && l.MQTTSN.RequireKnownClient:
			case k.Options == "mqttsn":
				warn(key, "auth.allow_anonymous = false does not protect listener %q: MQTT-SN carries no credentials, so it takes any client id; set [listener.mqttsn] require_known_client = true, or use type %q (DTLS with PSKs)", l.Name, config.ListenerMQTTSNS)
			case l.Type == config.ListenerUDP:
				warn(key, "auth.allow_anonymous = false does not protect listener %q: plain datagrams carry no credentials, so it takes them from anyone who reaches %s; bind it to a trusted network, and limit what its devices may publish with auth.acl_file", l.Name, l.Bind)
			}
		}
	}
	return ps
}

// listensOnLoopback reports whether a listen address takes connections from this
// machine only: 127.0.0.0/8, ::1 or localhost. An empty host is every interface.
func listensOnLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return true // config reported it already
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// checkFlags are check's flags.
func checkFlags() (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	file := fs.String("config", "", "the config `FILE` (or give it as the argument)")
	fs.StringVar(file, "c", "", "the config `FILE` (or give it as the argument)")
	return fs, file
}

// configDigest is the first 16 hex digits of the sha256 of a config file's
// bytes, which check prints and run logs, or "" when it cannot be read.
func configDigest(file string) string {
	data, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

func cmdCheck(c *command, args []string, stdout, stderr io.Writer) int {
	fs, file := checkFlags()
	if code, done := c.parse(fs, args, stdout, stderr); done {
		return code
	}
	if *file == "" && fs.NArg() == 1 {
		*file = fs.Arg(0)
	}
	switch {
	case *file == "":
		return c.usageError(stderr, "no config file")
	case fs.NArg() > 1 || (fs.NArg() == 1 && fs.Arg(0) != *file):
		return c.usageError(stderr, "one config file only")
	}
	cfg, table, ps := loadAndCompile(*file)
	if cfg != nil {
		ps = append(ps, cfg.Locate(exposureWarnings(cfg))...)
		ps.Sort()
	}
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
		ruleFails, downFails := 0, 0
		for _, p := range failed {
			if strings.HasPrefix(p.Key, "downlink[") {
				downFails++
			} else {
				ruleFails++
			}
		}
		var what []string
		if ruleFails > 0 {
			what = append(what, fmt.Sprintf("%d rule test(s)", ruleFails))
		}
		if downFails > 0 {
			what = append(what, fmt.Sprintf("%d downlink test(s)", downFails))
		}
		fmt.Fprintf(stdout, "%s: invalid: %s failed\n", *file, strings.Join(what, " and "))
		return 1
	}
	tests, downTests := 0, 0
	for _, r := range cfg.Rules {
		tests += len(r.Tests)
	}
	for _, d := range cfg.Downlinks {
		downTests += len(d.Tests)
	}
	// Classes and downlinks are named only when there are some, so that the line of
	// a rules-only config stays as it was.
	more := ""
	if len(cfg.Classes) > 0 || len(cfg.Downlinks) > 0 {
		more = fmt.Sprintf("; %d class(es), %d downlink(s), %d downlink test(s) passed", len(cfg.Classes), len(cfg.Downlinks), downTests)
	}
	fmt.Fprintf(stdout, "%s: valid: %d listener(s), %d rule(s), %d rule test(s) passed%s; config sha256 %s (run logs it as config_sha256)\n",
		*file, len(cfg.Listeners), len(cfg.Rules), tests, more, configDigest(*file))
	return 0
}

// rulesTestOptions are the flags of rules test.
type rulesTestOptions struct {
	file, listener, hexIn, textIn, fileIn, from string
	downlink, topic, payload                    string
}

func rulesTestFlags() (*flag.FlagSet, *rulesTestOptions) {
	var o rulesTestOptions
	fs := flag.NewFlagSet("rules test", flag.ContinueOnError)
	fs.StringVar(&o.file, "config", "config.toml", "the config `FILE`")
	fs.StringVar(&o.listener, "listener", "", "the plain-UDP listener the datagram arrives on (by `NAME`)")
	fs.StringVar(&o.hexIn, "hex", "", "the datagram in `HEX` (spaces allowed)")
	fs.StringVar(&o.textIn, "text", "", "the datagram as `TEXT`")
	fs.StringVar(&o.fileIn, "file", "", "the datagram read from `F`")
	fs.StringVar(&o.from, "from", "127.0.0.1:40000", "the sender's `ADDR` (IP:PORT), for rules that use it")
	fs.StringVar(&o.downlink, "downlink", "", "encode an MQTT message with the downlink `NAME` instead of mapping a datagram")
	fs.StringVar(&o.topic, "topic", "", "with --downlink: the message's `TOPIC`, as the broker has it (mountpoint included)")
	fs.StringVar(&o.payload, "payload", "", "with --downlink: the message's `PAYLOAD`")
	return fs, &o
}

func cmdRulesTest(c *command, args []string, stdout, stderr io.Writer) int {
	fs, o := rulesTestFlags()
	if code, done := c.parse(fs, args, stdout, stderr); done {
		return code
	}
	if fs.NArg() > 0 {
		return c.usageError(stderr, "unexpected argument %q", fs.Arg(0))
	}
	file, listener, hexIn, textIn, fileIn, from := &o.file, &o.listener, &o.hexIn, &o.textIn, &o.fileIn, &o.from
	if o.downlink != "" || o.topic != "" {
		switch {
		case o.downlink == "" || o.topic == "":
			return c.usageError(stderr, "a downlink test needs --downlink NAME and --topic TOPIC")
		case *listener != "" || *hexIn != "" || *textIn != "" || *fileIn != "":
			return c.usageError(stderr, "--downlink encodes a message: it takes no --listener, --hex, --text or --file")
		}
		return downlinkTest(*file, o.downlink, o.topic, []byte(o.payload), stdout, stderr)
	}
	set := 0
	for _, s := range []string{*hexIn, *textIn, *fileIn} {
		if s != "" {
			set++
		}
	}
	switch {
	case *listener == "":
		return c.usageError(stderr, "give --listener NAME and one of --hex, --text or --file (or --downlink NAME --topic TOPIC)")
	case set != 1:
		return c.usageError(stderr, "give one of --hex HEX, --text TEXT or --file F")
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

// downlinkTest encodes one MQTT message with a downlink and prints the device and
// the datagram, or why there is none: 0 encoded, 1 not (or a bad config), 2 usage.
func downlinkTest(file, name, topic string, payload []byte, stdout, stderr io.Writer) int {
	_, table, ps := loadAndCompile(file)
	for _, p := range ps {
		fmt.Fprintln(stderr, p.Error())
	}
	if table == nil {
		return 1
	}
	d := table.Downlink(name)
	if d == nil {
		var names []string
		for _, d := range table.Downlinks() {
			names = append(names, d.Name)
		}
		fmt.Fprintf(stderr, "mqttgw: no downlink named %q in %s (downlinks: %s)\n", name, file, strings.Join(names, ", "))
		return 2
	}
	device, datagram, ok, err := d.Encode(topic, payload)
	switch {
	case !ok:
		fmt.Fprintf(stdout, "no datagram: %s\n", d.ExplainTopic(topic))
		return 1
	case err != nil:
		fmt.Fprintf(stdout, "no datagram: %v\n", err)
		return 1
	}
	deliver := "now"
	if d.OnUplink {
		deliver = fmt.Sprintf("on_uplink (ttl %v, max_queued %d)", d.TTL, d.MaxQueued)
	}
	fmt.Fprintf(stdout, "downlink: %s\nlistener: %s\ndevice:   %s\ndeliver:  %s\nhex:      %s\n", d.Name, d.Listener, device, deliver, hex.EncodeToString(datagram))
	if printable(datagram) {
		fmt.Fprintf(stdout, "text:     %s\n", datagram)
	}
	return 0
}

// printable reports whether b reads as one line of text.
func printable(b []byte) bool {
	if len(b) == 0 || !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
