package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/mqttgw/mqttgw/config"
	"github.com/mqttgw/mqttgw/gateway"
	"github.com/mqttgw/mqttgw/internal/wait"
)

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runGateway runs a gateway on cfgText in this process until the test ends and
// waits until it is connected to its broker.
func runGateway(t *testing.T, cfgText string) *gateway.Gateway {
	t.Helper()
	cfg, ps := config.Parse("t.toml", []byte(cfgText))
	if errs := ps.Errors(); len(errs) > 0 {
		t.Fatal(errs)
	}
	g, err := gateway.New(cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("gateway did not stop")
		}
	})
	waitCond(t, "gateway connected", g.Proxy().Connected)
	return g
}

// waitCond polls cond for at most 15 s.
func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	wait.For(t, 15*time.Second, what, cond)
}

// errPollTimeout is poll's answer when bound passed before check was done.
var errPollTimeout = errors.New("timed out")

// poll calls check every 10 ms until it reports done or an error, for at most
// bound: the one wait loop of this package's tests (no fixed sleeps).
func poll(bound time.Duration, check func() (done bool, err error)) error {
	deadline := time.Now().Add(bound)
	for {
		done, err := check()
		if done || err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return errPollTimeout
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// buildBinary builds mqttgw into the test's temp dir, once per test.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "mqttgw")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// binaryRun is mqttgw running as its own process, with its output collected.
type binaryRun struct {
	cmd    *exec.Cmd
	logs   *syncBuffer
	exited chan error // receives Wait's result once
}

// startBinary runs bin with args until the test ends (then it is killed; its
// output is logged when the test failed).
func startBinary(t *testing.T, bin string, args ...string) *binaryRun {
	t.Helper()
	return startBinaryEnv(t, nil, bin, args...)
}

// startBinaryEnv is startBinary with env added to the test's environment.
func startBinaryEnv(t *testing.T, env []string, bin string, args ...string) *binaryRun {
	t.Helper()
	r := &binaryRun{cmd: exec.Command(bin, args...), logs: &syncBuffer{}, exited: make(chan error, 1)}
	if env != nil {
		r.cmd.Env = append(os.Environ(), env...)
	}
	r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.exited <- r.cmd.Wait() }()
	t.Cleanup(func() {
		r.cmd.Process.Kill()
		err := <-r.exited
		r.exited <- err
		if t.Failed() {
			t.Logf("mqttgw output:\n%s", r.logs.String())
		}
	})
	return r
}

// waitLog waits until the process's output contains want, or fails the test
// when it exits first or after 15 s.
func (r *binaryRun) waitLog(t *testing.T, want string) {
	t.Helper()
	err := poll(15*time.Second, func() (bool, error) {
		if strings.Contains(r.logs.String(), want) {
			return true, nil
		}
		return false, r.exitErr()
	})
	if err != nil {
		t.Fatalf("mqttgw did not log %q: %v", want, err)
	}
}

// exitErr is an error when the process has exited, else nil.
func (r *binaryRun) exitErr() error {
	select {
	case err := <-r.exited:
		r.exited <- err
		return fmt.Errorf("mqttgw exited (%v)", err)
	default:
		return nil
	}
}
