//go:build !linux

package testproc

import "os/exec"

// SetProcAttr does nothing where Pdeathsig does not exist.
func SetProcAttr(cmd *exec.Cmd) {}
