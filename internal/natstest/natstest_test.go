package natstest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// serverInfo is the part of a server's INFO line the tests read.
type serverInfo struct {
	ServerName   string   `json:"server_name"`
	Version      string   `json:"version"`
	JetStream    bool     `json:"jetstream"`
	Cluster      string   `json:"cluster"`
	ConnectURLs  []string `json:"connect_urls"`
	AuthRequired bool     `json:"auth_required"`
	TLSRequired  bool     `json:"tls_required"`
}

// info reads the INFO line a server sends to every new client.
func info(t *testing.T, n *Node) serverInfo {
	t.Helper()
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(n.Port)), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("%s: read INFO: %v", n.Name, err)
	}
	js, ok := strings.CutPrefix(strings.TrimSpace(line), "INFO ")
	if !ok {
		t.Fatalf("%s: first line %q is not INFO", n.Name, line)
	}
	var si serverInfo
	if err := json.Unmarshal([]byte(js), &si); err != nil {
		t.Fatalf("%s: INFO %s: %v", n.Name, js, err)
	}
	return si
}

// metaPeers returns the JetStream meta group as node n sees it: its leader
// and the number of peers (the leader included).
func metaPeers(t *testing.T, n *Node) (leader string, size int) {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/jsz", n.HTTPPort))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var jsz struct {
		Meta struct {
			Leader string `json:"leader"`
			Size   int    `json:"cluster_size"`
		} `json:"meta_cluster"`
	}
	if err := json.Unmarshal(body, &jsz); err != nil {
		t.Fatalf("%s: /jsz %s: %v", n.Name, body, err)
	}
	return jsz.Meta.Leader, jsz.Meta.Size
}

func TestClusterKillRestart(t *testing.T) {
	c := Start(t, Options{})
	if len(c.Nodes) != 3 || len(c.URLs()) != 3 {
		t.Fatalf("%d nodes, URLs %v", len(c.Nodes), c.URLs())
	}
	for i, n := range c.Nodes {
		if !strings.HasPrefix(n.URL, "nats://127.0.0.1:") || !c.Running(i) {
			t.Fatalf("node %d: %+v running %v", i, n, c.Running(i))
		}
		si := info(t, n)
		if si.ServerName != n.Name || !si.JetStream || si.Cluster != clusterName || si.Version != c.Version || si.AuthRequired || si.TLSRequired {
			t.Fatalf("%s: INFO %+v", n.Name, si)
		}
		if leader, size := metaPeers(t, n); leader == "" || size != 3 {
			t.Fatalf("%s: meta leader %q, cluster size %d", n.Name, leader, size)
		}
	}

	leader, _ := metaPeers(t, c.Nodes[0])
	killed := 0
	for i, n := range c.Nodes {
		if n.Name == leader {
			killed = i
		}
	}
	c.Kill(killed)
	if c.Running(killed) {
		t.Fatal("killed node still running")
	}
	// The other two notice and elect a new meta leader.
	other := c.Nodes[(killed+1)%3]
	deadline := time.Now().Add(readyTimeout)
	for {
		l, _ := metaPeers(t, other)
		if l != "" && l != leader {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("meta leader %q %v after killing %s", l, readyTimeout, leader)
		}
		time.Sleep(pollEvery)
	}
	c.WaitHealthy()
	if !strings.Contains(c.Log(killed), "Server is ready") {
		t.Fatal("the killed node's log is gone")
	}

	port := c.Nodes[killed].Port
	c.Restart(killed)
	if !c.Running(killed) || c.Nodes[killed].Port != port {
		t.Fatalf("restarted node: running %v, port %d want %d", c.Running(killed), c.Nodes[killed].Port, port)
	}
	c.Stop(killed)
	c.Stop(killed) // idempotent
}

func TestSingleNodeUserTLS(t *testing.T) {
	c := Start(t, Options{Nodes: 1, Username: "gw", Password: "s3cret", TLS: true})
	n := c.Nodes[0]
	if !strings.HasPrefix(n.URL, "tls://127.0.0.1:") || c.CAFile == "" {
		t.Fatalf("URL %s, CAFile %q", n.URL, c.CAFile)
	}
	si := info(t, n)
	if !si.JetStream || !si.AuthRequired || !si.TLSRequired || si.Cluster != "" {
		t.Fatalf("INFO %+v", si)
	}
}

func TestToken(t *testing.T) {
	c := Start(t, Options{Nodes: 1, Token: "t0ken"})
	if si := info(t, c.Nodes[0]); !si.AuthRequired {
		t.Fatalf("INFO %+v", si)
	}
}
