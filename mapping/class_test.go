package mapping

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const classesTOML = `
[[class]]
name = "meters"
listeners = ["sensors", "lora"]
match = "meter-*"
keepalive = "5m"
will  = { topic = "devices/{device}/status", payload = "offline {class} {gateway}", qos = 1, retain = true }
birth = { topic = "devices/{listener}/{device}", payload = "online from {addr}", qos = 2 }

[[class]]
name = "sn-any"
listeners = ["sn"]
will = { topic = "{device}/gone" }

[[class]]
name = "pumps"
match = "pump-[0-9]?"

[[class]]
name = "rest"
`

func TestClassSelection(t *testing.T) {
	tab := mustLoadTOML(t, classesTOML)
	for _, tc := range []struct {
		listener, device, want string
	}{
		{"sensors", "meter-1", "meters"},
		{"lora", "meter-", "meters"},
		{"sn", "meter-1", "sn-any"}, // meters does not list sn
		{"sn", "pump-1x", "sn-any"}, // first wins, though pumps matches too
		{"sensors", "pump-1x", "pumps"},
		{"sensors", "pump-x", "rest"},
		{"sensors", "meter-a/b", "meters"}, // '*' takes '/' too: a device id is no path
		{"nosuch", "meter-1", "rest"},      // a class without listeners takes any
	} {
		c := tab.Class(tc.listener, tc.device)
		if c == nil || c.Name != tc.want {
			t.Errorf("Class(%q, %q) = %v, want %q", tc.listener, tc.device, c, tc.want)
		}
	}
	if c := tab.Class("sensors", "meter-1"); c.Keepalive != 5*time.Minute {
		t.Errorf("meters keepalive %v", c.Keepalive)
	}
	if c := tab.Class("sensors", "x"); c.Keepalive != 0 {
		t.Errorf("rest keepalive %v, want 0 (not set)", c.Keepalive)
	}
	var nilTable *Table
	if c := nilTable.Class("sensors", "x"); c != nil {
		t.Errorf("nil table: %v", c)
	}
	if c := mustLoadTOML(t, "").Class("sensors", "x"); c != nil {
		t.Errorf("no classes: %v", c)
	}
}

func TestClassWillBirth(t *testing.T) {
	tab := mustLoadTOML(t, classesTOML)
	meters := tab.Class("sensors", "meter-1")
	v := DeviceVars{Device: "meter-1", Listener: "sensors", Addr: "10.0.0.7:40001"}

	m, ok, err := meters.Will(v)
	if err != nil || !ok {
		t.Fatalf("Will: %v %v", ok, err)
	}
	if m.Topic != "site1/devices/meter-1/status" || string(m.Payload) != "offline meters gw1" || m.QoS != 1 || !m.Retain {
		t.Errorf("will on sensors (mountpoint site1/): %+v %q", m, m.Payload)
	}
	v.Listener = "lora"
	m, ok, err = meters.Birth(v)
	if err != nil || !ok {
		t.Fatalf("Birth: %v %v", ok, err)
	}
	if m.Topic != "devices/lora/meter-1" || string(m.Payload) != "online from 10.0.0.7:40001" || m.QoS != 2 || m.Retain {
		t.Errorf("birth on lora (no mountpoint): %+v %q", m, m.Payload)
	}

	rest := tab.Class("sensors", "other")
	if m, ok, err := rest.Will(v); ok || err != nil || m.Topic != "" {
		t.Errorf("class without will: %+v %v %v", m, ok, err)
	}
	if _, ok, err := rest.Birth(v); ok || err != nil {
		t.Errorf("class without birth: %v %v", ok, err)
	}
	sn := tab.Class("sn", "x")
	if _, ok, err := sn.Birth(v); ok || err != nil {
		t.Errorf("class with will only, birth: %v %v", ok, err)
	}
}

func TestClassUnsafeValues(t *testing.T) {
	tab := mustLoadTOML(t, classesTOML)
	meters, sn := tab.Class("sensors", "meter-1"), tab.Class("sn", "x")
	for _, tc := range []struct {
		name    string
		c       *Class
		v       DeviceVars
		errText string // "" = renders
	}{
		{"slash", meters, DeviceVars{Device: "meter-a/b", Listener: "sensors"}, `mapping: class "meters": will: unsafe topic value: {device} = "meter-a/b" contains '/'`},
		{"plus", meters, DeviceVars{Device: "+", Listener: "lora"}, `{device} = "+" contains '+'`},
		{"hash", meters, DeviceVars{Device: "a#", Listener: "lora"}, `contains '#'`},
		{"empty", meters, DeviceVars{Listener: "lora"}, `{device} = "" is empty`},
		{"not utf-8", meters, DeviceVars{Device: "\xff", Listener: "lora"}, `is not UTF-8`},
		{"dollar first", sn, DeviceVars{Device: "$SYS", Listener: "sn"}, `{device} = "$SYS" would start the topic with '$'`},
		// The mountpoint comes first, so the value does not start the topic.
		{"dollar after mountpoint", sn, DeviceVars{Device: "$SYS", Listener: "sensors"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, ok, err := tc.c.Will(tc.v)
			if tc.errText == "" {
				if err != nil || !ok || m.Topic != "site1/$SYS/gone" {
					t.Fatalf("Will = %+v, %v, %v", m, ok, err)
				}
				return
			}
			if !errors.Is(err, ErrUnsafeTopic) || !ok {
				t.Fatalf("Will error %v (ok %v), want ErrUnsafeTopic", err, ok)
			}
			if !strings.Contains(err.Error(), tc.errText) {
				t.Errorf("error %q, want it to contain %q", err, tc.errText)
			}
		})
	}
}

func TestClassProblems(t *testing.T) {
	runTOMLCases(t, []tomlCase{
		{"no name", "[[class]]\nmatch = \"a*\"\n", 1, `class[0].name: name is empty`},
		{"duplicate name", "[[class]]\nname = \"a\"\nmatch = \"x\"\n[[class]]\nname = \"a\"\n", 5, `class[1].name: duplicate class name "a" (also class[0])`},
		{"unknown listener", "[[class]]\nname = \"a\"\nlisteners = [\"sensors\",\n  \"radio\"]\n", 4, `class[0].listeners[1]: unknown listener "radio" (listeners: sensors, lora, sn)`},
		{"bad glob", "[[class]]\nname = \"a\"\nmatch = \"meter-[0-9\"\n", 3, `class[0].match: bad glob "meter-[0-9": want * (any text), ? (one character), [a-z] or [^a-z] (a class), \ escapes`},
		{"sub-second keepalive", "[[class]]\nname = \"a\"\nkeepalive = \"500ms\"\n", 3, `class[0].keepalive: 500ms: want 0 (the listener's own) or at least 1s`},
		{"negative keepalive", "[[class]]\nname = \"a\"\nkeepalive = \"-5m\"\n", 3, `class[0].keepalive: bad duration "-5m": want a positive Go duration like "500ms", "30s" or "1m30s"`},
		{"will without topic", "[[class]]\nname = \"a\"\nwill = { payload = \"x\" }\n", 3, `class[0].will.topic: missing: a will or birth needs a topic, such as "devices/{device}/status"`},
		{"will qos", "[[class]]\nname = \"a\"\n[class.will]\ntopic = \"x\"\nqos = 3\n", 5, `class[0].will.qos: qos must be 0, 1 or 2, got integer 3`},
		{"will unknown key", "[[class]]\nname = \"a\"\nwill = { topic = \"x\", retian = true }\n", 3, `class[0].will.retian: unknown key "retian" (did you mean "retain"?)`},
		{"unknown class key", "[[class]]\nname = \"a\"\nlistener = \"sensors\"\n", 3, `class[0].listener: unknown key "listener" (did you mean "listeners"?)`},
		{"topic unknown name", "[[class]]\nname = \"a\"\nbirth = { topic = \"d/{device}/{rule}\" }\n", 3, `class[0].birth.topic: unknown placeholder {rule} in topic "d/{device}/{rule}" (known: device, listener, gateway, class, addr)`},
		{"topic wildcard", "[[class]]\nname = \"a\"\n[class.will]\ntopic = \"d/+/{device}\"\n", 4, `class[0].will.topic: topic "d/+/{device}" contains '+' (wildcards are not allowed in a publish topic)`},
		{"topic syntax", "[[class]]\nname = \"a\"\nwill = { topic = \"d/{device\" }\n", 3, `class[0].will.topic: topic "d/{device": unclosed '{' at offset 2 (write '{{' for a literal brace)`},
		{"class name unsafe in topic", "[[class]]\nname = \"a/b\"\nwill = { topic = \"d/{class}\" }\n", 3, `class[0].will.topic: {class} is "a/b", which cannot be a topic level: it contains '/'`},
		{"payload unknown name", "[[class]]\nname = \"a\"\nwill = { topic = \"d\", payload = \"{state}\" }\n", 3, `class[0].will.payload: unknown placeholder {state} in payload (known: device, listener, gateway, class, addr)`},
		{"dollar topic warns", "[[class]]\nname = \"a\"\nwill = { topic = \"$aws/{device}\" }\n", 3, `warning: class[0].will.topic: topic "$aws/{device}" starts with '$', which is reserved for the broker (MQTT 3.1.1 §4.7.2)`},
		{"unreachable", "[[class]]\nname = \"all\"\n[[class]]\nname = \"later\"\nlisteners = [\"sn\"]\n", 3, `warning: class[1]: unreachable: class[0] "all" before it matches every device of its listeners`},
	})
}

// TestClassUnreachableOnlyWhenCovered: a class after a catch-all of other listeners
// is reachable.
func TestClassUnreachableOnlyWhenCovered(t *testing.T) {
	mustLoadTOML(t, "[[class]]\nname = \"sn\"\nlisteners = [\"sn\"]\n[[class]]\nname = \"udp\"\nlisteners = [\"sensors\", \"sn\"]\n[[class]]\nname = \"rest\"\n")
}
