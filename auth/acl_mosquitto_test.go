package auth

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

// differentialACL is one ACL file given both to a real Mosquitto and to
// ParseACL: the cases below must get the same answer from both. It has what
// the issue names: anonymous topic lines before the first user, user blocks,
// patterns with %c and %u, deny lines, and a user whose blocks grant nothing.
const differentialACL = `topic read public/#
topic write anon/in

user alice
topic readwrite alice/#
topic deny alice/secret
topic read shared/+/status

user bob
topic write bob/out

user root
topic readwrite #

pattern write dev/%c/#
pattern read home/%u/#
`

// TestACLAgreesWithMosquitto runs every case twice: through a real Mosquitto
// 2.0 with differentialACL (a publish as the case's user and client id, seen
// or not by root's subscriber; a subscription as them to a topic that holds a
// retained message, delivered or not) and through (*ACL).Allowed. They must
// agree: "Mosquitto's semantics" is checked against Mosquitto itself.
func TestACLAgreesWithMosquitto(t *testing.T) {
	mosquittotest.RequireTools(t, "mosquitto", "mosquitto_pub", "mosquitto_sub")
	users := map[string]string{"alice": "alice-pw", "bob": "bob-pw", "root": "root-pw"}
	b := mosquittotest.Start(t, mosquittotest.Options{Users: users, ACL: differentialACL, AllowAnonymous: true})
	acl, err := ParseACL("differential", []byte(differentialACL))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		user, client, topic string
		access              Access
	}{
		{"alice", "a1", "alice/x", Write},
		{"alice", "a1", "alice/secret", Write}, // deny wins
		{"alice", "a1", "bob/out", Write},
		{"alice", "a1", "dev/a1/t", Write}, // pattern %c
		{"alice", "a1", "dev/a2/t", Write},
		{"bob", "b1", "bob/out", Write},
		{"bob", "b1", "bob/other", Write},
		{"", "anon1", "anon/in", Write}, // anonymous topic lines
		{"", "anon1", "dev/anon1/t", Write},
		{"", "dev+", "dev/x/t", Write}, // '+' in a client id never widens
		{"alice", "a1", "shared/k/status", Read},
		{"alice", "a1", "alice/secret", Read}, // deny wins for reads too
		{"bob", "b1", "shared/k/status", Read},
		{"bob", "b1", "home/bob/lamp", Read}, // pattern %u
		{"", "anon2", "home/bob/lamp", Read}, // %u never matches an anonymous client
		{"", "anon2", "public/news", Read},
	}
	for i, c := range cases {
		what := fmt.Sprintf("%s %q as user %q client %q", map[Access]string{Read: "read", Write: "write"}[c.access], c.topic, c.user, c.client)
		var broker bool
		if c.access == Write {
			broker = mosquittoDelivers(t, b, c.user, users[c.user], c.client, c.topic, i)
		} else {
			broker = mosquittoLetsRead(t, b, c.user, users[c.user], c.client, c.topic, i)
		}
		if got := acl.Allowed(c.client, c.user, c.topic, c.access); got != broker {
			t.Errorf("%s: mqttgw says %v, Mosquitto says %v", what, got, broker)
		}
	}
}

// mosquittoDelivers publishes as user/client and reports whether root's
// subscriber got it: Mosquitto acknowledges a denied publish and drops it, so
// a marker published by root right after tells "dropped" from "late".
func mosquittoDelivers(t *testing.T, b *mosquittotest.Broker, user, pass, client, topic string, i int) bool {
	t.Helper()
	sub := b.Subscribe(t, mosquittotest.SubOptions{Username: "root", Password: "root-pw", QoS: 1, Topics: []string{topic, "marker/" + strconv.Itoa(i)}})
	defer sub.Close()
	payload := "case-" + strconv.Itoa(i)
	args := []string{"-h", b.Host, "-p", strconv.Itoa(b.Port), "-i", client, "-t", topic, "-m", payload, "-q", "1"}
	if user != "" {
		args = append(args, "-u", user, "-P", pass)
	}
	if out, err := exec.Command(tool(t, "mosquitto_pub"), args...).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub %v: %v: %s", args, err, out)
	}
	b.Publish(t, mosquittotest.PubOptions{Username: "root", Password: "root-pw", Topic: "marker/" + strconv.Itoa(i), Payload: []byte("m"), QoS: 1})
	m := sub.Next(t, 10*time.Second)
	return m.Topic == topic && string(m.Payload) == payload
}

// mosquittoLetsRead makes root's retained message on topic, then subscribes
// as user/client: Mosquitto checks read access when it delivers, so the
// retained message arrives only if reading is allowed.
func mosquittoLetsRead(t *testing.T, b *mosquittotest.Broker, user, pass, client, topic string, i int) bool {
	t.Helper()
	payload := "retained-" + strconv.Itoa(i)
	b.Publish(t, mosquittotest.PubOptions{Username: "root", Password: "root-pw", Topic: topic, Payload: []byte(payload), QoS: 1, Retain: true})
	args := []string{"-h", b.Host, "-p", strconv.Itoa(b.Port), "-i", client, "-t", topic, "-C", "1", "-W", "2", "-q", "1"}
	if user != "" {
		args = append(args, "-u", user, "-P", pass)
	}
	out, err := exec.Command(tool(t, "mosquitto_sub"), args...).Output()
	if err != nil {
		// mosquitto_sub -W exits 27 when nothing came in time: not delivered.
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 27 {
			return false
		}
		t.Fatalf("mosquitto_sub %v: %v: %s", args, err, out)
	}
	return strings.TrimSpace(string(out)) == payload
}

func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return p
}
