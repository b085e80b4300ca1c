package testproc

import (
	"os/exec"
	"syscall"
)

// SetProcAttr asks the kernel to SIGKILL the child if the test binary dies
// (a panic or a -timeout), so no server or client outlives the test run.
// The kernel ties Pdeathsig to the thread that forked; the Go runtime ends
// threads only when a goroutine exits while locked to one, so in practice
// this is the test process's lifetime.
func SetProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
