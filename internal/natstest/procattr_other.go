//go:build !linux

package natstest

import "os/exec"

// setProcAttr does nothing where Pdeathsig does not exist.
func setProcAttr(cmd *exec.Cmd) {}
