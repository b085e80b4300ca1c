package auth

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

// lineError is a problem on one line of a credentials file.
type lineError struct {
	file string
	line int
	err  error
}

func (e *lineError) Error() string { return fmt.Sprintf("auth: %s:%d: %v", e.file, e.line, e.err) }
func (e *lineError) Unwrap() error { return e.err }

// eachEntry calls fn with the two halves of every `name:value` line of r, split at
// the first ':' (Mosquitto's formats: a name never holds ':'). Blank lines and
// lines starting with '#' are skipped; a CR before the newline is dropped.
func eachEntry(file string, r io.Reader, fn func(name, value string) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSuffix(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return &lineError{file, n, fmt.Errorf("%w: want NAME:VALUE, found no ':'", ErrMalformed)}
		}
		if name == "" {
			return &lineError{file, n, fmt.Errorf("%w: empty name before ':'", ErrMalformed)}
		}
		if err := fn(name, value); err != nil {
			return &lineError{file, n, err}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("auth: %s: %w", file, err)
	}
	return nil
}

func readFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return data, nil
}
