package testproc

import (
	"io"
	"os"
)

// FileSize is the size of the file at path, 0 when it cannot be read: where
// a server's log ends now, to read only what it writes next.
func FileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// ReadFrom returns the file's contents from offset off, or "".
func ReadFrom(path string, off int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return ""
	}
	data, _ := io.ReadAll(f)
	return string(data)
}
