package mqttsn

import (
	"net/netip"
	"testing"
	"time"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
)

// TestAllowedSources: a datagram from outside allowed_sources is dropped before
// anything else, unanswered and counted; one from inside is served.
func TestAllowedSources(t *testing.T) {
	te := startEngine(t, func(o *Options) { o.AllowedSources = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} })
	d := te.device(t) // 127.0.0.1: outside
	d.send(&mqttsn.Connect{Flags: mqttsn.Flags{CleanSession: true}, Duration: 60, ClientID: "outsider"})
	d.none(200 * time.Millisecond)
	if v := te.dropped("source_not_allowed"); v != 1 {
		t.Errorf("source_not_allowed = %v, want 1", v)
	}
	inside := startEngine(t, func(o *Options) { o.AllowedSources = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} })
	inside.device(t).connect("insider", 60, true)
}

// TestRequireKnownClient: a CONNECT whose client id the password file does not
// know is refused with "not supported" and counted.
func TestRequireKnownClient(t *testing.T) {
	te := startEngine(t, func(o *Options) { o.KnownClient = func(id string) bool { return id == "known" } })
	d := te.device(t)
	d.send(&mqttsn.Connect{Flags: mqttsn.Flags{CleanSession: true}, Duration: 60, ClientID: "stranger"})
	if ca := recv[*mqttsn.Connack](d); ca.ReturnCode != mqttsn.NotSupported {
		t.Fatalf("CONNACK %v, want not supported", ca.ReturnCode)
	}
	if v := te.reg.Get("mqttgw_mqttsn_refused_total", "listener", "sn", "reason", "unknown_client"); v != 1 {
		t.Errorf("refused unknown_client = %v, want 1", v)
	}
	d.connect("known", 60, true)
}
