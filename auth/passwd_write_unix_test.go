//go:build unix

package auth

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestWritePasswordFileKeepsOwner: as root, a file owned by another user and
// group (the broker's, say) keeps them after the rewrite.
func TestWritePasswordFileKeepsOwner(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to give a file away") // the CI and the dev container run as root
	}
	path := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(path, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 4242, 4343); err != nil {
		t.Fatal(err)
	}
	if err := WritePasswordFile(path, []byte("x\n")); err != nil {
		t.Fatal(err)
	}
	if uid, gid := fileOwner(t, path); uid != 4242 || gid != 4343 {
		t.Errorf("owner %d:%d, want 4242:4343", uid, gid)
	}
}

func fileOwner(t *testing.T, path string) (uid, gid uint32) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid
}
