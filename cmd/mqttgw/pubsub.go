package main

import (
	"io"
	"strings"
)

// The device-side client tools speak MQTT-SN (--mqttsn HOST:PORT, the default) or
// CoAP (--coap URL); each protocol's flags and code live in its own file.

func cmdPub(args []string, stdout, stderr io.Writer) int {
	if hasFlag(args, "coap") {
		return cmdPubCoAP(args, stdout, stderr)
	}
	return cmdPubMQTTSN(args, stdout, stderr)
}

func cmdSub(args []string, stdout, stderr io.Writer) int {
	if hasFlag(args, "coap") {
		return cmdSubCoAP(args, stdout, stderr)
	}
	return cmdSubMQTTSN(args, stdout, stderr)
}

func cmdBench(args []string, stdout, stderr io.Writer) int {
	if hasFlag(args, "coap") {
		return cmdBenchCoAP(args, stdout, stderr)
	}
	return cmdBenchMQTTSN(args, stdout, stderr)
}

// hasFlag reports whether -name or --name (with or without =value) is in args.
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		a = strings.TrimLeft(a, "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}
