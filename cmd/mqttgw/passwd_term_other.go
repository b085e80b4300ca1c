//go:build !linux

package main

import (
	"errors"
	"os"
)

// echoOff cannot turn off a terminal's echo here without a dependency: on a
// terminal (a character device) `mqttgw passwd` asks for -b or a pipe instead
// of showing the password. isTTY is false for pipes and files.
func echoOff(f *os.File) (restore func(), isTTY bool, err error) {
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return nil, false, nil
	}
	return nil, true, errors.New("not supported on this system")
}
