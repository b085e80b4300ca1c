package main

import (
	"os"
	"os/signal"
	"syscall"
	"unsafe"
)

// echoOff turns off echo on the terminal f for `mqttgw passwd`; restore turns
// it back on. isTTY is false, and nothing changed, when f is not a terminal.
// Until restore, SIGINT and SIGTERM turn echo back on and exit (status 130),
// as mosquitto_passwd does, so an interrupted prompt does not leave the
// terminal silent.
func echoOff(f *os.File) (restore func(), isTTY bool, err error) {
	fd := f.Fd()
	var old syscall.Termios
	if ioctlTermios(fd, syscall.TCGETS, &old) != nil {
		return nil, false, nil
	}
	quiet := old
	quiet.Lflag &^= syscall.ECHO
	if err := ioctlTermios(fd, syscall.TCSETS, &quiet); err != nil {
		return nil, true, err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case <-sig:
			ioctlTermios(fd, syscall.TCSETS, &old)
			os.Stderr.WriteString("\n")
			os.Exit(130)
		case <-done:
		}
	}()
	return func() {
		close(done)
		<-exited
		signal.Stop(sig)
		ioctlTermios(fd, syscall.TCSETS, &old)
	}, true, nil
}

func ioctlTermios(fd uintptr, req uintptr, t *syscall.Termios) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, req, uintptr(unsafe.Pointer(t))); errno != 0 {
		return errno
	}
	return nil
}
