// Command mqttgw is the gateway binary: `run` serves, `check` validates a config and
// runs its inline rule and downlink tests, `rules test` dry-runs one datagram (or
// one downlink message), `devices` lists a running gateway's sessions, `passwd`
// edits a Mosquitto password file, `pub`/`sub`/`bench` act as devices, `version`
// prints the build. Exit codes: 0 success, 1 a failed check or run, 2 bad usage.
package main

import (
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `mqttgw — a gateway from MQTT-SN, CoAP and plain UDP devices to MQTT

Usage:
  mqttgw run --config FILE          run the gateway until SIGINT/SIGTERM
  mqttgw check [--config] FILE      validate a config and run its inline rule tests
  mqttgw rules test --config FILE --listener NAME (--hex HEX | --text TEXT | --file F) [--from ADDR]
                                    map one datagram without a broker and print the result
  mqttgw rules test --config FILE --downlink NAME --topic TOPIC [--payload PAYLOAD]
                                    encode one MQTT message as a downlink datagram
  mqttgw devices [--metrics HOST:PORT] [--listener NAME] [--state active|asleep|lost] [--json]
                                    list a running gateway's device sessions
  mqttgw passwd [-c] [-b] [-D] FILE USER [PASSWORD]
                                    add, change or delete a user in a Mosquitto password file
  mqttgw pub (--mqttsn HOST:PORT | --coap URL) ...   publish as a device
  mqttgw sub (--mqttsn HOST:PORT | --coap URL) ...   subscribe (or observe) as a device
  mqttgw bench (--mqttsn HOST:PORT | --coap URL) ... the load tool
  mqttgw version                    print the version

Run 'mqttgw COMMAND --help' for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "rules":
		if len(args) < 2 || args[1] != "test" {
			fmt.Fprintln(stderr, rulesTestUsage)
			return 2
		}
		return cmdRulesTest(args[2:], stdout, stderr)
	case "devices":
		return cmdDevices(args[1:], stdout, stderr)
	case "passwd":
		return cmdPasswd(args[1:], stdout, stderr)
	case "pub":
		return cmdPub(args[1:], stdout, stderr)
	case "sub":
		return cmdSub(args[1:], stdout, stderr)
	case "bench":
		return cmdBench(args[1:], stdout, stderr)
	case "man": // mqttgw(1) in roff, for packagers (make package)
		return cmdMan(stdout)
	case "version", "--version", "-v":
		fmt.Fprintf(stdout, "mqttgw %s\n", version)
		return 0
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "mqttgw: unknown command %q\n\n%s", args[0], usage)
	return 2
}
