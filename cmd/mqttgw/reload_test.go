package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/mqttsn"
)

// TestReloadOnSIGHUP runs the binary against a real Mosquitto: SIGHUP with a
// changed acl_file takes effect for a connected MQTT-SN client without dropping
// its session (same client, no new CONNECT); a broken acl_file is refused with
// FILE:LINE and the old one stays in force; the process never exits on SIGHUP.
func TestReloadOnSIGHUP(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{AllowAnonymous: true})
	dir := t.TempDir()
	acl := filepath.Join(dir, "acl")
	writeTestFile(t, acl, "pattern write a/%c/#\n")
	snPort := freePort(t, "udp")
	cfgFile := filepath.Join(dir, "config.toml")
	writeTestFile(t, cfgFile, fmt.Sprintf(`
[upstream]
url = %q
[auth]
acl_file = %q
[[listener]]
name = "sn"
type = "mqttsn"
bind = "127.0.0.1:%d"
`, b.URL, acl, snPort))
	notified := listenNotify(t)
	r := startBinaryEnv(t, []string{"NOTIFY_SOCKET=" + notified.path}, buildBinary(t), "run", "--config", cfgFile)
	notified.expect(t, "READY=1")
	r.waitLog(t, "connected to broker")
	sub := b.Subscribe(t, mosquittotest.SubOptions{Topics: []string{"a/#", "b/#"}, QoS: 1})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := mqttsn.Dial(ctx, fmt.Sprintf("127.0.0.1:%d", snPort), mqttsn.ClientOptions{ClientID: "dev1", RetryInterval: 300 * time.Millisecond, MaxRetries: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	publish := func(topic string) error { return c.Publish(ctx, topic, 1, false, []byte(topic)) }
	if err := publish("a/dev1/x"); err != nil {
		t.Fatalf("allowed before the reload: %v", err)
	}
	sub.Expect(t, 5*time.Second, "a/dev1/x", "a/dev1/x")
	if err := publish("b/dev1/x"); !errors.Is(err, mqttsn.NotSupported) {
		t.Fatalf("b/dev1/x before the reload: %v, want rejected: not supported", err)
	}

	writeTestFile(t, acl, "pattern write b/%c/#\n")
	r.cmd.Process.Signal(syscall.SIGHUP)
	r.waitLog(t, "reloaded rules, classes, downlinks and auth files")
	notified.expect(t, "RELOADING=1")
	notified.expect(t, "READY=1")
	if err := publish("b/dev1/x"); err != nil {
		t.Fatalf("allowed after the reload: %v", err)
	}
	sub.Expect(t, 5*time.Second, "b/dev1/x", "b/dev1/x")
	if err := publish("a/dev1/x"); !errors.Is(err, mqttsn.NotSupported) {
		t.Fatalf("a/dev1/x after the reload: %v, want rejected: not supported", err)
	}

	writeTestFile(t, acl, "pattern write b/%c/#\ntopic sometimes a/#\n")
	r.cmd.Process.Signal(syscall.SIGHUP)
	r.waitLog(t, acl+":2")
	r.waitLog(t, "reload refused")
	notified.expect(t, "RELOADING=1")
	notified.expect(t, "READY=1") // still serving, on the old ACL
	if err := publish("b/dev1/y"); err != nil {
		t.Fatalf("the old ACL after a broken reload: %v", err)
	}
	sub.Expect(t, 5*time.Second, "b/dev1/y", "b/dev1/y")
	sub.None(t, 200*time.Millisecond)
	select {
	case err := <-r.exited:
		r.exited <- err
		t.Fatalf("mqttgw exited after SIGHUP: %v", err)
	default:
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	notified.expect(t, "STOPPING=1")
}

// notifySocket stands in for systemd's notification socket (sd_notify(3)).
type notifySocket struct {
	path string
	c    *net.UnixConn
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &notifySocket{path: path, c: c}
}

// expect reads the next notification and fails unless it is want.
func (n *notifySocket) expect(t *testing.T, want string) {
	t.Helper()
	buf := make([]byte, 256)
	n.c.SetReadDeadline(time.Now().Add(15 * time.Second))
	k, err := n.c.Read(buf)
	if err != nil {
		t.Fatalf("waiting for %q on NOTIFY_SOCKET: %v", want, err)
	}
	if got := string(buf[:k]); got != want {
		t.Fatalf("NOTIFY_SOCKET got %q, want %q", got, want)
	}
}

func writeTestFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}
