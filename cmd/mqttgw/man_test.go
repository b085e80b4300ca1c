package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestManPage: mqttgw(1) has a section per command of the usage text, each
// holding that command's own --help, and only ASCII (groff warns on the rest).
func TestManPage(t *testing.T) {
	var out bytes.Buffer
	if code := cmdMan(&out); code != 0 {
		t.Fatalf("exit %d", code)
	}
	page := out.String()
	for _, c := range manCommands() {
		name := strings.Join(c, " ")
		if !strings.Contains(page, ".SS "+name+"\n") {
			t.Errorf("no section for %q", name)
		}
		if !strings.Contains(usage(), "mqttgw "+name) {
			t.Errorf("%q is documented in the man page but not in the usage text", name)
		}
	}
	for i := 0; i < len(page); i++ {
		if page[i] >= 0x80 {
			t.Fatalf("non-ASCII byte at %d: %q", i, page[max(0, i-20):min(len(page), i+20)])
		}
	}
	if !strings.HasPrefix(page, ".TH MQTTGW 1 ") {
		t.Errorf("no .TH header: %q", page[:min(len(page), 40)])
	}
}
