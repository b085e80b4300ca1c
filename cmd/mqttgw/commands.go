package main

import (
	"flag"
	"io"
	"slices"
	"strings"
)

// commands is the command table, in the order of the usage list and the man
// page. It is filled in init because the commands' own help (`mqttgw help`)
// reads it.
var commands []*command

func init() {
	commands = []*command{
		{
			name:     "run",
			line:     "run [--config FILE]",
			summary:  "run the gateway until SIGINT/SIGTERM",
			synopsis: []string{"run [--config FILE]"},
			about: `Runs the gateway on FILE until SIGINT or SIGTERM, then waits up to
gateway.drain_timeout for queued and in-flight QoS 1 and 2 messages, and exits 0.
SIGHUP re-reads the rules, classes, downlinks and the [auth] files (listeners and
the upstream connection need a restart). The log goes to standard error. Exit 1:
the config is invalid (every problem is printed, as by check) or the gateway
failed.`,
			flags: func() *flag.FlagSet { fs, _ := runFlags(); return fs },
			examples: []string{
				"mqttgw run --config /etc/mqttgw/config.toml",
				"mqttgw run -c config.toml.example   # what make run does: embedded broker, loopback",
			},
			run: cmdRun,
		},
		{
			name:     "check",
			line:     "check [--config] FILE",
			summary:  "validate a config, run its tests",
			synopsis: []string{"check [--config] FILE"},
			about: `Validates FILE as run would, without starting anything: every problem at once,
as FILE:LINE: key.path: what is wrong (warnings apart, for what the config leaves
open), the password, PSK and ACL files it names, then the rules' and downlinks'
inline tests. On success it prints what it checked and the config's sha256
digest, which run logs at start (config_sha256), so you can tell which file a
running gateway read. Exit 0: valid and every test passed; 1 otherwise.`,
			flags:    func() *flag.FlagSet { fs, _ := checkFlags(); return fs },
			examples: []string{"mqttgw check /etc/mqttgw/config.toml"},
			files:    true,
			run:      cmdCheck,
		},
		{
			name:    "rules test",
			line:    "rules test --config FILE ...",
			summary: "try one datagram (or downlink) offline",
			synopsis: []string{
				"rules test --config FILE --listener NAME (--hex HEX | --text TEXT | --file F)",
				"    [--from ADDR]",
				"rules test --config FILE --downlink NAME --topic TOPIC [--payload PAYLOAD]",
			},
			about: `The first form runs one datagram through the rules of a plain-UDP listener and
prints the rule, the device, the fields and the publishes, or why no rule took
it. The second encodes one MQTT message with a downlink and prints the datagram
and where it would go. Exit 0: mapped (encoded); 1 not, or the config is
invalid.`,
			flags: func() *flag.FlagSet { fs, _ := rulesTestFlags(); return fs },
			groups: []flagGroup{
				{"A datagram:", []string{"config", "listener", "hex", "text", "file", "from"}},
				{"A downlink:", []string{"downlink", "topic", "payload"}},
			},
			examples: []string{
				"mqttgw rules test --config config.toml --listener sensors --hex a1000700d701900e10",
				"mqttgw rules test --config config.toml --listener sensors --text 'hall temp=19.0 hum=55'",
				"mqttgw rules test --config config.toml --downlink led --topic cmd/kitchen/led --payload on",
			},
			args: []string{"test"},
			run:  cmdRulesTest,
		},
		{
			name:    "devices",
			line:    "devices [--metrics HOST:PORT]",
			summary: "list a running gateway's device sessions",
			synopsis: []string{
				"devices [--metrics HOST:PORT] [--listener NAME] [--state active|asleep|lost]",
				"    [--json] [-u USER -P PASSWORD]",
			},
			about: `Prints the device sessions of a running gateway, read from GET /devices on its
metrics listener ([metrics] listen), one line per device: listener, protocol,
device, class, address, state, first and last seen, queued downlinks.`,
			flags:  func() *flag.FlagSet { fs, _ := devicesFlags(); return fs },
			groups: []flagGroup{{"Flags:", []string{"metrics", "listener", "state", "json", "u", "P"}}},
			examples: []string{
				"mqttgw devices --metrics 127.0.0.1:9100",
				"mqttgw devices --state active --json",
			},
			run: cmdDevices,
		},
		{
			name:      "passwd",
			line:      "passwd [-c] [-b] [-D] FILE USER [PASSWORD]",
			summary:   "edit a Mosquitto password file",
			help:      passwdUsage,
			flagNames: []string{"-c", "-b", "-D"},
			files:     true,
			run: func(_ *command, args []string, stdout, stderr io.Writer) int {
				return cmdPasswd(args, stdout, stderr)
			},
		},
		{
			name:     "pub",
			line:     "pub [-h HOST] [-p PORT] [--coap] -t TOPIC -m MSG",
			summary:  "publish as an MQTT-SN or CoAP device",
			synopsis: pubSynopsis,
			about:    pubAbout,
			flags:    func() *flag.FlagSet { fs, _ := pubFlags(); return fs },
			groups:   pubGroups,
			examples: pubExamples,
			run:      cmdPub,
		},
		{
			name:     "sub",
			line:     "sub [-h HOST] [-p PORT] [--coap] -t TOPIC",
			summary:  "subscribe (or observe) as a device",
			synopsis: subSynopsis,
			about:    subAbout,
			flags:    func() *flag.FlagSet { fs, _ := subFlags(); return fs },
			groups:   subGroups,
			examples: subExamples,
			run:      cmdSub,
		},
		{
			name:     "bench",
			line:     "bench [--mqttsn ADDR | --coap [URL] | --udp ADDR | --matrix] ...",
			summary:  "the load tool",
			synopsis: benchSynopsis,
			about:    benchAbout,
			flags:    func() *flag.FlagSet { fs, _, _ := benchFlags(); return fs },
			groups:   benchGroups,
			examples: benchExamples,
			run:      cmdBench,
		},
		{
			name:     "completion",
			line:     "completion bash|zsh",
			summary:  "print a shell completion script",
			synopsis: []string{"completion bash|zsh"},
			about: `Prints a completion script for bash or zsh: the commands, each command's flags,
and file names where a command takes them.`,
			flags: func() *flag.FlagSet { return flag.NewFlagSet("completion", flag.ContinueOnError) },
			examples: []string{
				"mqttgw completion bash > /etc/bash_completion.d/mqttgw",
				"mqttgw completion zsh > \"${fpath[1]}/_mqttgw\"    # then start a new zsh",
				"source <(mqttgw completion bash)                 # this shell only",
			},
			args: []string{"bash", "zsh"},
			run:  cmdCompletion,
		},
		{
			name:     "version",
			line:     "version",
			summary:  "print the version and the Go release",
			synopsis: []string{"version"},
			about:    "Prints mqttgw's version and the Go release and platform it was built for.",
			flags:    func() *flag.FlagSet { return flag.NewFlagSet("version", flag.ContinueOnError) },
			examples: []string{"mqttgw version"},
			run:      cmdVersion,
		},
		{
			name:     "help",
			line:     "help [COMMAND]",
			summary:  "print the usage, or a command's help",
			synopsis: []string{"help [COMMAND]"},
			about:    "Prints this list, or COMMAND's help as 'mqttgw COMMAND --help' does.",
			examples: []string{"mqttgw help pub"},
			run:      cmdHelp,
		},
	}
	help := lookupCommand("help")
	for _, c := range commands {
		if w := strings.Fields(c.name)[0]; !slices.Contains(help.args, w) {
			help.args = append(help.args, w)
		}
	}
}
