// Package testproc is what the tests' real servers (internal/mosquittotest,
// internal/natstest) share: a child process with the goroutine that waits for
// it, and a generated CA with a server certificate for loopback.
package testproc

import (
	"fmt"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// KillWait bounds the wait for a process to exit after SIGKILL.
const KillWait = 5 * time.Second

// Process is a started child and the goroutine that waits for it.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed after cmd.Wait returned
	err  error         // cmd.Wait's result; read only after done is closed
}

// Start starts cmd and a goroutine that waits for it; the goroutine
// exits when the process does.
func Start(cmd *exec.Cmd) (*Process, error) {
	SetProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is how the process ended (cmd.Wait's result); valid once Exited.
func (p *Process) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM and waits up to grace for the process to exit, then
// sends SIGKILL and waits up to KillWait. killed reports whether SIGKILL was
// needed; err is set only when the process outlived SIGKILL too.
func (p *Process) Stop(grace time.Duration) (killed bool, err error) {
	if p.Exited() {
		return false, nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return false, nil
	case <-time.After(grace):
	}
	return true, p.Kill()
}

// Kill sends SIGKILL and waits up to KillWait for the process to exit; err is
// set only when it outlived SIGKILL.
func (p *Process) Kill() error {
	if p.Exited() {
		return nil
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
		return nil
	case <-time.After(KillWait):
		return fmt.Errorf("pid %d still running %v after SIGKILL", p.PID(), KillWait)
	}
}

// StopFor is Stop for a test: a process that outlived SIGKILL fails t, one
// that needed SIGKILL is logged; name says which server it was.
func (p *Process) StopFor(t testing.TB, name string, grace time.Duration) {
	t.Helper()
	killed, err := p.Stop(grace)
	switch {
	case err != nil:
		t.Errorf("stop %s: %v", name, err)
	case killed:
		t.Logf("%s pid %d ignored SIGTERM for %v; killed", name, p.PID(), grace)
	}
}
