package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"time"
)

// manCommands are the commands the man page documents, in the order of the
// usage list; each section is that command's own --help output, so the page
// cannot drift from the CLI.
func manCommands() [][]string {
	var out [][]string
	for _, c := range commands {
		if c.name != "help" {
			out = append(out, strings.Fields(c.name))
		}
	}
	return out
}

// cmdMan prints mqttgw(1) in roff (man(7)), generated from the CLI's own help
// texts; `make package` installs it. It is not in the usage list: it is for
// packagers.
func cmdMan(stdout io.Writer) int {
	var b strings.Builder
	date := time.Now().UTC().Format("2006-01-02")
	fmt.Fprintf(&b, ".TH MQTTGW 1 %q %q \"User Commands\"\n", date, "mqttgw "+version)
	b.WriteString(".SH NAME\nmqttgw \\- a gateway from MQTT-SN, CoAP and plain UDP devices to MQTT\n")
	b.WriteString(".SH SYNOPSIS\n")
	_, synopsis, _ := strings.Cut(usage(), "Usage:\n")
	verbatim(&b, synopsis)
	b.WriteString(".SH DESCRIPTION\n")
	b.WriteString("mqttgw lets constrained devices that speak MQTT-SN 1.2, CoAP (RFC 7252, over UDP or DTLS) " +
		"or plain UDP datagrams reach an MQTT broker such as Mosquitto. A rules table in the TOML " +
		"config maps datagrams onto MQTT topics and broker messages back down to devices. " +
		"SIGHUP re-reads the rules, classes, downlinks and the [auth] files.\n")
	b.WriteString(".SH COMMANDS\n")
	for _, c := range manCommands() {
		var out bytes.Buffer
		run(append(append([]string{}, c...), "--help"), &out, &out)
		fmt.Fprintf(&b, ".SS %s\n", strings.Join(c, " "))
		verbatim(&b, out.String())
	}
	b.WriteString(".SH FILES\n.TP\n/etc/mqttgw/config.toml\nthe packaged configuration\n" +
		".TP\n/var/lib/mqttgw\nthe service's state directory\n")
	b.WriteString(".SH EXIT STATUS\n0 success, 1 a failed check or run, 2 bad usage.\n")
	b.WriteString(".SH SEE ALSO\n.BR mosquitto (8),\n.BR mosquitto_passwd (1),\n.BR mosquitto_pub (1)\n")
	io.WriteString(stdout, b.String())
	return 0
}

// verbatim writes text as a no-fill block, escaping what roff would read as
// requests or escapes.
func verbatim(b *strings.Builder, text string) {
	b.WriteString(".nf\n")
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		line = strings.ReplaceAll(line, `\`, `\e`)
		if strings.HasPrefix(line, ".") || strings.HasPrefix(line, "'") {
			line = `\&` + line
		}
		for _, r := range line {
			if r < 128 {
				b.WriteRune(r)
			} else {
				fmt.Fprintf(b, `\[u%04X]`, r) // groff's escape for any Unicode character
			}
		}
		b.WriteByte('\n')
	}
	b.WriteString(".fi\n")
}
