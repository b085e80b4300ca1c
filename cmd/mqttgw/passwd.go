package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/mqttgw/mqttgw/auth"
)

const passwdUsage = `usage: mqttgw passwd [-c] [-b] [-D] FILE USER [PASSWORD]

Adds USER to the Mosquitto password file FILE or changes USER's password, as
mosquitto_passwd does: the line written is USER:$7$101$SALT$HASH (PBKDF2-SHA512,
Mosquitto 2.0's format), which Mosquitto's password_file and mqttgw's
[auth] password_file both read. Other lines stay as they are, in order. FILE is
replaced atomically and keeps its mode, owner and group; a new FILE is 0600.

  -c  create FILE, replacing it if it exists
  -b  batch: the password is the PASSWORD argument (other users may see it in
      the process list, and it stays in the shell history)
  -D  delete USER from FILE instead

Without -b the password is asked for twice: on a terminal without echo, else
one line each from standard input. A user name must not hold ':' or control
characters, start with '#', or start or end with a space.

Examples:
  mqttgw passwd -c /etc/mosquitto/passwd alice
  printf '%s\n%s\n' "$PW" "$PW" | mqttgw passwd /etc/mosquitto/passwd sensor-7
  mqttgw passwd -D /etc/mosquitto/passwd alice

Then reload Mosquitto (SIGHUP) and mqttgw (SIGHUP) to use the new file.
`

// cmdPasswd is `mqttgw passwd`.
func cmdPasswd(args []string, stdout, stderr io.Writer) int {
	return passwd(args, os.Stdin, stdout, stderr)
}

// passwd is cmdPasswd reading an interactive password from stdin.
func passwd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("passwd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {} // printed below, to stdout for --help
	create := fs.Bool("c", false, "create FILE, replacing it")
	batch := fs.Bool("b", false, "take the password from the command line")
	del := fs.Bool("D", false, "delete USER")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			io.WriteString(stdout, passwdUsage)
			return 0
		}
		io.WriteString(stderr, "\n"+passwdUsage)
		return 2
	}
	usageError := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "mqttgw passwd: "+format+"\n\n%s", append(a, passwdUsage)...)
		return 2
	}
	want := 2
	if *batch {
		want = 3
	}
	switch {
	case *create && *del:
		return usageError("-c and -D cannot be used together")
	case *batch && *del:
		return usageError("-b and -D cannot be used together")
	case fs.NArg() != want && *batch:
		return usageError("-b needs FILE, USER and PASSWORD")
	case fs.NArg() != want:
		return usageError("want FILE and USER (and PASSWORD only with -b)")
	}
	file, user := fs.Arg(0), fs.Arg(1)
	if *del {
		err := auth.UpdatePasswordFile(file, false, func(f *auth.PasswordFile) error { return f.Delete(user) })
		if err != nil {
			fmt.Fprintf(stderr, "mqttgw passwd: %v\n", err)
			return 1
		}
		return 0
	}
	if err := auth.CheckUsername(user); err != nil {
		return usageError("%v", err)
	}
	var password string
	if *batch {
		password = fs.Arg(2)
	} else {
		var err error
		if password, err = readNewPassword(stdin, stderr); err != nil {
			fmt.Fprintf(stderr, "mqttgw passwd: %v\n", err)
			return 1
		}
	}
	if password == "" {
		fmt.Fprintln(stderr, "mqttgw passwd: empty password")
		return 1
	}
	hash, err := auth.HashPassword(password)
	if err != nil {
		fmt.Fprintf(stderr, "mqttgw passwd: %v\n", err)
		return 1
	}
	if err := auth.UpdatePasswordFile(file, *create, func(f *auth.PasswordFile) error { return f.Set(user, hash) }); err != nil {
		fmt.Fprintf(stderr, "mqttgw passwd: %v\n", err)
		return 1
	}
	return 0
}

// readNewPassword asks for a password twice, as mosquitto_passwd does: from a
// terminal with echo off, else one line each from in. The prompts go to
// prompt.
func readNewPassword(in io.Reader, prompt io.Writer) (string, error) {
	tty := false
	if f, ok := in.(*os.File); ok {
		restore, isTTY, err := echoOff(f)
		if err != nil {
			return "", fmt.Errorf("turn off echo on the terminal (use -b, or pipe the password): %w", err)
		}
		if isTTY {
			tty = true
			defer restore()
		}
	}
	r := bufio.NewReader(in)
	ask := func(p string) (string, error) {
		fmt.Fprint(prompt, p)
		line, err := readPasswordLine(r)
		if tty {
			fmt.Fprintln(prompt) // the Enter key was not echoed
		}
		return line, err
	}
	first, err := ask("Password: ")
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	second, err := ask("Reenter password: ")
	if err != nil {
		return "", fmt.Errorf("read password again: %w", err)
	}
	if first != second {
		return "", errors.New("passwords do not match")
	}
	return first, nil
}

// readPasswordLine reads one line without its "\n" or "\r\n". The last line may lack
// its newline; no line at all is an error.
func readPasswordLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	switch {
	case err == io.EOF && line == "":
		return "", errors.New("no line on standard input")
	case err != nil && err != io.EOF:
		return "", err
	}
	return strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r"), nil
}
