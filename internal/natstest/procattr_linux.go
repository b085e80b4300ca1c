package natstest

import (
	"os/exec"
	"syscall"
)

// setProcAttr asks the kernel to SIGKILL the child if the test binary dies
// (a panic or a -timeout), so no server outlives the test run.
// The kernel ties Pdeathsig to the thread that forked; the Go runtime ends
// threads only when a goroutine exits while locked to one, so in practice
// this is the test process's lifetime.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
