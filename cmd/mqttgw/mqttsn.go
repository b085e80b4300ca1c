package main

import "io"

// MQTT-SN client tools: `mqttgw pub|sub|bench --mqttsn HOST:PORT ...`.

func cmdPubMQTTSN(args []string, stdout, stderr io.Writer) int {
	return notBuilt(stderr, "mqttgw pub --mqttsn")
}

func cmdSubMQTTSN(args []string, stdout, stderr io.Writer) int {
	return notBuilt(stderr, "mqttgw sub --mqttsn")
}

func cmdBenchMQTTSN(args []string, stdout, stderr io.Writer) int {
	return notBuilt(stderr, "mqttgw bench --mqttsn")
}
