// Command mqttgw is the gateway binary: `run` serves, `check` validates a config and
// runs its inline rule and downlink tests, `rules test` dry-runs one datagram (or
// one downlink message), `devices` lists a running gateway's sessions, `passwd`
// edits a Mosquitto password file, `pub`/`sub`/`bench` act as devices,
// `completion` prints a shell completion script, `version` prints the build.
// Every command answers --help; the usage list, the man page and the completion
// scripts are made from the same command table (commands.go). Exit codes: 0
// success, 1 a failed check or run, 2 bad usage.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// usage is `mqttgw --help`: one line per command, from the command table.
func usage() string {
	var b strings.Builder
	b.WriteString("mqttgw — a gateway from MQTT-SN, CoAP and plain UDP devices to MQTT\n\nUsage:\n")
	const col = 40
	for _, c := range commands {
		line := "  mqttgw " + c.line
		if len(line) < col-1 {
			b.WriteString(line + strings.Repeat(" ", col-len(line)) + c.summary + "\n")
		} else {
			b.WriteString(line + "\n" + strings.Repeat(" ", col) + c.summary + "\n")
		}
	}
	b.WriteString("\nRun 'mqttgw COMMAND --help' for a command's flags and examples.\n")
	return b.String()
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage())
		return 2
	}
	switch args[0] {
	case "man": // mqttgw(1) in roff, for packagers (make package)
		return cmdMan(stdout)
	case "--version", "-v":
		return cmdVersion(lookupCommand("version"), nil, stdout, stderr)
	case "--help", "-h", "-help":
		io.WriteString(stdout, usage())
		return 0
	case "rules":
		c := lookupCommand("rules", "test")
		switch {
		case len(args) >= 2 && args[1] == "test":
			return c.run(c, args[2:], stdout, stderr)
		case len(args) == 2 && (args[1] == "--help" || args[1] == "-h" || args[1] == "-help"):
			io.WriteString(stdout, c.helpText())
			return 0
		}
		return c.usageError(stderr, "want 'mqttgw rules test ...'")
	}
	if c := lookupCommand(args[0]); c != nil {
		return c.run(c, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "mqttgw: unknown command %q\n\n%s", args[0], usage())
	return 2
}

// cmdVersion prints the version and the Go release it was built with.
func cmdVersion(c *command, args []string, stdout, stderr io.Writer) int {
	fs := c.flags()
	if code, done := c.parse(fs, args, stdout, stderr); done {
		return code
	}
	if fs.NArg() > 0 {
		return c.usageError(stderr, "unexpected argument %q", fs.Arg(0))
	}
	fmt.Fprintf(stdout, "mqttgw %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return 0
}
