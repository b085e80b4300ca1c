package main

import "io"

// CoAP client tools: `mqttgw pub|sub|bench --coap URL ...`.

func cmdPubCoAP(args []string, stdout, stderr io.Writer) int {
	return notBuilt(stderr, "mqttgw pub --coap")
}

func cmdSubCoAP(args []string, stdout, stderr io.Writer) int {
	return notBuilt(stderr, "mqttgw sub --coap")
}

func cmdBenchCoAP(args []string, stdout, stderr io.Writer) int {
	return notBuilt(stderr, "mqttgw bench --coap")
}
