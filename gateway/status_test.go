package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
)

// headless loads url in a real headless Chromium (Debian's chromium), lets its
// scripts run for a few seconds of virtual time, and returns the DOM and the
// page's console lines (Chromium logs every console message and uncaught error
// as a ":CONSOLE" line on stderr).
func headless(t *testing.T, url string) (dom string, console []string) {
	t.Helper()
	mosquittotest.RequireTools(t, "chromium")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "chromium", "--headless", "--no-sandbox", "--disable-gpu",
		"--no-first-run", "--disable-extensions", "--user-data-dir="+t.TempDir(),
		"--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000", "--dump-dom", url)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(line, ":CONSOLE") {
			console = append(console, line)
		}
	}
	return string(out), console
}

// TestHeadlessSeesConsoleErrors: the console check below can fail — a page
// with an uncaught error is caught.
func TestHeadlessSeesConsoleErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `<html><body><p id="x">no</p><script>document.getElementById("x").textContent = "ran"; notDefined();</script></body></html>`)
	}))
	defer srv.Close()
	dom, console := headless(t, srv.URL)
	if !strings.Contains(dom, `<p id="x">ran</p>`) {
		t.Errorf("the page's script did not run: %s", dom)
	}
	if len(console) != 1 || !strings.Contains(console[0], "notDefined") {
		t.Errorf("console lines %q, want the one uncaught ReferenceError", console)
	}
}

// TestStatusPageInChromium: the status page at / loads in a real browser
// without console errors (no missing asset, no script error, no CSP
// violation), and shows a device after it sent a datagram, its listener's
// counters, and the broker as connected.
func TestStatusPageInChromium(t *testing.T) {
	b := startMosquitto(t, false)
	g := startGateway(t, rawConfig(b, "")+metricsTOML)
	dev := newUDPDevice(t, g.Gateway, "sensors")
	dev.send(`{"id":"kitchen7","temp":21}`)
	waitFor(t, 5*time.Second, "the device's session", func() bool { return liveSessions(g.Gateway) == 1 })
	base := "http://" + g.MetricsAddr().String()

	dom, console := headless(t, base+"/")
	if len(console) > 0 {
		t.Errorf("console output on the status page:\n%s", strings.Join(console, "\n"))
	}
	for _, want := range []string{"<td>kitchen7</td>", `id="upstream-state">connected<`, `data-listener="sensors"`} {
		if !strings.Contains(dom, want) {
			t.Errorf("status page lacks %q:\n%s", want, dom)
		}
	}
	// The script ran and redrew the listener table from /status.json: the
	// uplink counter of the one mapped datagram is there.
	if !regexp.MustCompile(`data-listener="sensors"><td>sensors</td><td>udp</td><td>[^<]+</td><td class="n">1</td>`).MatchString(dom) {
		t.Errorf("listener row without 1 uplink:\n%s", dom)
	}

	res, err := http.Get(base + "/status.json")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var st Status
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if !st.Upstream.Connected || len(st.Listeners) != 1 || st.Listeners[0].Active != 1 || st.Listeners[0].Uplinks != 1 {
		t.Errorf("status.json %+v", st)
	}
}

// TestMetricsBasicAuth: with [metrics] username and a password hash (made by
// the real mosquitto_passwd), every page of the metrics listener asks for
// them; the right password opens the status page and /metrics.
func TestMetricsBasicAuth(t *testing.T) {
	mosquittotest.RequireTools(t, "mosquitto_passwd")
	b := startMosquitto(t, false)
	pwfile := t.TempDir() + "/pw"
	if out, err := exec.Command("mosquitto_passwd", "-c", "-b", pwfile, "ops", "s3cret").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v: %s", err, out)
	}
	line, err := os.ReadFile(pwfile)
	if err != nil {
		t.Fatal(err)
	}
	hash := strings.TrimPrefix(strings.TrimSpace(string(line)), "ops:")
	g := startGateway(t, rawConfig(b, "")+fmt.Sprintf("\n[metrics]\nlisten = \"127.0.0.1:0\"\nusername = \"ops\"\npassword = %q\n", hash))
	base := "http://" + g.MetricsAddr().String()
	get := func(path, user, pass string) int {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, path := range []string{"/", "/metrics", "/devices", "/status.json", "/healthz"} {
		if c := get(path, "", ""); c != http.StatusUnauthorized {
			t.Errorf("%s without credentials: %d, want 401", path, c)
		}
		if c := get(path, "ops", "wrong"); c != http.StatusUnauthorized {
			t.Errorf("%s with a wrong password: %d, want 401", path, c)
		}
		if c := get(path, "ops", "s3cret"); c != http.StatusOK {
			t.Errorf("%s with the right password: %d, want 200", path, c)
		}
	}
}
