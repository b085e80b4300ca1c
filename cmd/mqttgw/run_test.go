package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

func freePort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestRunBinaryEmbeddedBroker builds mqttgw and runs it on config.toml.example (with
// free ports swapped in) the way `make run` does: the embedded broker takes a
// datagram's publish, mosquitto_sub reads it, and SIGTERM ends the run with exit 0.
func TestRunBinaryEmbeddedBroker(t *testing.T) {
	mosquittotest.RequireTools(t, "mosquitto_sub")
	dir := t.TempDir()
	bin := buildBinary(t)
	example, err := os.ReadFile("../../config.toml.example")
	if err != nil {
		t.Fatal(err)
	}
	mqttPort, udpPort, metricsPort := freePort(t, "tcp"), freePort(t, "udp"), freePort(t, "tcp")
	cfg := strings.NewReplacer(
		`bind = "127.0.0.1:1884"`, `bind = "127.0.0.1:0"`,
		`bind = "127.0.0.1:5683"`, `bind = "127.0.0.1:0"`,
		`listen = "127.0.0.1:1883"`, fmt.Sprintf(`listen = "127.0.0.1:%d"`, mqttPort),
		`bind = "127.0.0.1:1885"`, fmt.Sprintf(`bind = "127.0.0.1:%d"`, udpPort),
		`listen = "127.0.0.1:9100"`, fmt.Sprintf(`listen = "127.0.0.1:%d"`, metricsPort),
	).Replace(string(example))
	cfgFile := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	r := startBinary(t, bin, "run", "--config", cfgFile)
	r.waitLog(t, "connected to broker")
	// The digest check prints, so that an operator can tell which file a
	// running gateway read.
	if want := fmt.Sprintf(`"config_sha256": "%s"`, configDigest(cfgFile)); !strings.Contains(r.logs.String(), want) {
		t.Errorf("the start log line lacks %s", want)
	}

	sub := exec.Command("mosquitto_sub", "-h", "127.0.0.1", "-p", fmt.Sprint(mqttPort), "-t", "sensors/#", "-v", "-C", "1", "-W", "10")
	var subOut bytes.Buffer
	sub.Stdout = &subOut
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	// mosquitto_sub has no "subscribed" signal without -d; resend until it reads one.
	c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", udpPort))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	subDone := make(chan error, 1)
	go func() { subDone <- sub.Wait() }()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		c.Write([]byte("hall temp=19.0 hum=55"))
		select {
		case err := <-subDone:
			if err != nil {
				t.Fatalf("mosquitto_sub: %v", err)
			}
			break wait
		case <-tick.C:
		}
	}
	if got := strings.TrimSpace(subOut.String()); got != "sensors/hall/temperature 19.0" && got != "sensors/hall/humidity 55" {
		t.Fatalf("mosquitto_sub read %q", got)
	}

	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-r.exited:
		r.exited <- err // for the cleanup's Wait
		if err != nil {
			t.Fatalf("mqttgw exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("mqttgw did not exit within 15s of SIGTERM")
	}
	if !strings.Contains(r.logs.String(), "mqttgw stopped") {
		t.Errorf("no clean stop in the log")
	}
}
