package mosquittotest

import (
	"fmt"
	"os/exec"
	"syscall"
	"time"
)

// killWait bounds the wait for a process to exit after SIGKILL.
const killWait = 5 * time.Second

// process is a started child and the goroutine that waits for it.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed after cmd.Wait returned
	err  error         // cmd.Wait's result; read only after done is closed
}

// startProcess starts cmd and a goroutine that waits for it; the goroutine
// exits when the process does.
func startProcess(cmd *exec.Cmd) (*process, error) {
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to grace for the process to exit, then
// sends SIGKILL and waits up to killWait. killed reports whether SIGKILL was
// needed; err is set only when the process outlived SIGKILL too.
func (p *process) stop(grace time.Duration) (killed bool, err error) {
	if p.exited() {
		return false, nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return false, nil
	case <-time.After(grace):
	}
	return true, p.kill()
}

// kill sends SIGKILL and waits up to killWait for the process to exit; err is
// set only when it outlived SIGKILL.
func (p *process) kill() error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("pid %d still running %v after SIGKILL", p.pid(), killWait)
	}
}
