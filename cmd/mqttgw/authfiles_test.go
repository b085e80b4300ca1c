package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckReportsBadACLLine: check parses the ACL file as run does and reports
// its bad line with both the config's line and the ACL file's own.
func TestCheckReportsBadACLLine(t *testing.T) {
	dir := t.TempDir()
	acl := filepath.Join(dir, "acl")
	if err := os.WriteFile(acl, []byte("topic read public/#\ntopik write x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "c.toml")
	text := "[[listener]]\nname = \"s\"\ntype = \"udp\"\nbind = \"127.0.0.1:0\"\n[auth]\nacl_file = \"acl\"\n"
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if rc := run([]string{"check", cfg}, &out, &errb); rc != 1 {
		t.Fatalf("check exit %d, want 1:\n%s%s", rc, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "c.toml:6: auth.acl_file:") || !strings.Contains(out.String(), ":2:") {
		t.Errorf("check output does not name both lines:\n%s", out.String())
	}
}
