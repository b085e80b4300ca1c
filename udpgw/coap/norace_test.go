//go:build !race

package coap

// raceEnabled: see race_test.go.
const raceEnabled = false
