package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/mqttgw/mqttgw/internal/mosquittotest"
	"github.com/mqttgw/mqttgw/internal/wait"
	"github.com/mqttgw/mqttgw/metrics"
)

// deviceACL is the broker's ACL in the device tests: the gateway's own account may
// write anywhere and the watcher read anywhere, each device only below its own
// name (dev/%u, cmd/%u, will/%u).
const deviceACL = `user gw
topic readwrite #

user watch
topic read #

pattern readwrite dev/%u/#
pattern read cmd/%u/#
pattern write will/%u
`

// deviceBroker starts a Mosquitto with the device tests' users and ACL.
func deviceBroker(t *testing.T) *mosquittotest.Broker {
	t.Helper()
	return mosquittotest.Start(t, mosquittotest.Options{
		Users: map[string]string{"gw": "gwpw", "watch": "watchpw", "dev1": "pw1", "dev2": "pw2"},
		ACL:   deviceACL,
	})
}

// deviceProxy is a Proxy for DialDevice only: its own connection is never started.
func deviceProxy(t *testing.T, url string, reg *metrics.Registry) *Proxy {
	t.Helper()
	p, err := New(Options{
		URL: url, ClientID: "gw", Username: "gw", Password: "gwpw",
		ConnectTimeout: 2 * time.Second, PublishTimeout: 3 * time.Second,
		ReconnectMin: 100 * time.Millisecond, ReconnectMax: time.Second,
		Metrics: reg, Logger: zaptest.NewLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// inbox collects a device's messages.
type inbox chan Message

func newInbox() inbox { return make(chan Message, 100) }

func (in inbox) on(m Message) {
	select {
	case in <- m:
	default:
		panic("test inbox full")
	}
}

func (in inbox) expect(t *testing.T, topic, payload string) {
	t.Helper()
	select {
	case m := <-in:
		if m.Topic != topic || string(m.Payload) != payload {
			t.Fatalf("device got %q %q, want %q %q", m.Topic, m.Payload, topic, payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("device got nothing, want %q %q", topic, payload)
	}
}

// waitFor polls cond until it holds, failing the test after bound.
var waitFor = wait.For

// checkGoroutines fails the test when, after every later cleanup (the broker's
// included), more goroutines run than when it was called.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func dial(t *testing.T, p *Proxy, o DeviceOptions) *DeviceConn {
	t.Helper()
	d, err := p.DialDevice(context.Background(), o)
	if err != nil {
		t.Fatalf("DialDevice %q: %v", o.ClientID, err)
	}
	return d
}

// TestDeviceACLEnforcedByBroker: a device publishes with its own identity, so
// Mosquitto's ACL applies to it and not the gateway's account: an allowed topic
// is delivered, a denied one (which the gateway's account may write) is
// acknowledged and dropped, and another device's commands never reach it.
func TestDeviceACLEnforcedByBroker(t *testing.T) {
	checkGoroutines(t)
	b := deviceBroker(t)
	reg := metrics.New()
	p := deviceProxy(t, b.URL, reg)
	watch := b.Subscribe(t, mosquittotest.SubOptions{Username: "watch", Password: "watchpw", QoS: 1, Topics: []string{"dev/#"}})

	in := newInbox()
	d := dial(t, p, DeviceOptions{ClientID: "sn-dev1", Username: "dev1", Password: "pw1", CleanSession: true, OnMessage: in.on})
	defer d.Close(true)
	if !d.Connected() {
		t.Fatal("not connected after DialDevice")
	}
	if got := reg.Get("mqttgw_upstream_device_connections"); got != 1 {
		t.Errorf("device connections gauge %v, want 1", got)
	}

	ctx := context.Background()
	// MQTT 3.1.1 has no negative PUBACK: Mosquitto acknowledges and drops.
	if err := d.Publish(ctx, Message{Topic: "dev/dev2/x", Payload: []byte("denied"), QoS: 1}); err != nil {
		t.Fatalf("denied publish: %v (want acknowledged and dropped)", err)
	}
	if err := d.Publish(ctx, Message{Topic: "dev/dev1/x", Payload: []byte("allowed"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	// Same connection, same order: had the denied one been delivered, it would come first.
	watch.Expect(t, 5*time.Second, "dev/dev1/x", "allowed")
	// The gateway's own account may write there: the relay did not use it.
	b.Publish(t, mosquittotest.PubOptions{Username: "gw", Password: "gwpw", Topic: "dev/dev2/x", Payload: []byte("gateway"), QoS: 1})
	watch.Expect(t, 5*time.Second, "dev/dev2/x", "gateway")

	// Mosquitto 2.0.11's acl_file does not refuse a SUBSCRIBE (it grants the
	// filter, SUBACK 1) but checks read access per message at delivery: the
	// device never gets another device's commands. (A refusal, SUBACK 0x80, is
	// ErrForbidden: TestDeviceSubscribeRefused.)
	if q, err := d.Subscribe(ctx, "cmd/dev2/#", 1); err != nil {
		t.Errorf("Subscribe to another device's filter = %d, %v; Mosquitto 2.0.11 grants it", q, err)
	}
	if q, err := d.Subscribe(ctx, "cmd/dev1/#", 1); err != nil || q != 1 {
		t.Errorf("Subscribe to its own filter = %d, %v; want 1, nil", q, err)
	}
	b.Publish(t, mosquittotest.PubOptions{Username: "gw", Password: "gwpw", Topic: "cmd/dev2/set", Payload: []byte("not yours"), QoS: 1})
	b.Publish(t, mosquittotest.PubOptions{Username: "gw", Password: "gwpw", Topic: "cmd/dev1/set", Payload: []byte("marker"), QoS: 1})
	in.expect(t, "cmd/dev1/set", "marker")
	if err := d.Unsubscribe(ctx, "cmd/dev1/#"); err != nil {
		t.Errorf("Unsubscribe: %v", err)
	}

	d.Close(true)
	d.Close(true) // idempotent
	if d.Connected() {
		t.Error("connected after Close")
	}
	if err := d.Publish(ctx, Message{Topic: "dev/dev1/x", QoS: 1}); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close = %v, want ErrClosed", err)
	}
	if got := reg.Get("mqttgw_upstream_device_connections"); got != 0 {
		t.Errorf("device connections gauge %v after Close, want 0", got)
	}
	if got := reg.Get("mqttgw_upstream_device_connects_total", "outcome", "accepted"); got != 1 {
		t.Errorf("accepted connects %v, want 1", got)
	}
}

// TestDeviceRefused: a wrong password is ErrRefused with the broker's reason,
// and nothing keeps trying.
func TestDeviceRefused(t *testing.T) {
	checkGoroutines(t)
	b := deviceBroker(t)
	reg := metrics.New()
	p := deviceProxy(t, b.URL, reg)
	for _, o := range []DeviceOptions{
		{ClientID: "sn-dev1", Username: "dev1", Password: "wrong", CleanSession: true},
		{ClientID: "sn-nobody", Username: "nobody", Password: "pw", CleanSession: true},
		{ClientID: "sn-anon", CleanSession: true},
	} {
		d, err := p.DialDevice(context.Background(), o)
		if d != nil || !errors.Is(err, ErrRefused) {
			t.Fatalf("DialDevice(%q, %q) = %v, %v; want ErrRefused", o.Username, o.Password, d, err)
		}
		var code ConnackCode
		if !errors.As(err, &code) || (code != ConnNotAuthorized && code != ConnBadUsernamePassword) {
			t.Errorf("DialDevice(%q, %q): %v: want a bad-credentials CONNACK code", o.Username, o.Password, err)
		}
		t.Logf("%q/%q: %v", o.Username, o.Password, err)
	}
	if got := reg.Get("mqttgw_upstream_device_connects_total", "outcome", "refused"); got != 3 {
		t.Errorf("refused connects %v, want 3", got)
	}
	if got := reg.Get("mqttgw_upstream_device_connections"); got != 0 {
		t.Errorf("device connections gauge %v, want 0", got)
	}
}

// TestDeviceUnavailable: no broker, or one that never answers CONNECT, is
// ErrUnavailable within the connect timeout or the context.
func TestDeviceUnavailable(t *testing.T) {
	checkGoroutines(t)
	reg := metrics.New()
	p := deviceProxy(t, "tcp://"+freeAddr(t), reg)
	_, err := p.DialDevice(context.Background(), DeviceOptions{ClientID: "sn-dev1", CleanSession: true})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("DialDevice without broker = %v, want ErrUnavailable", err)
	}

	// A listener that accepts and never answers: the context ends the wait.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	})
	defer wg.Wait()
	defer l.Close()
	p = deviceProxy(t, "tcp://"+l.Addr().String(), reg)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = p.DialDevice(ctx, DeviceOptions{ClientID: "sn-dev1", CleanSession: true})
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("DialDevice to a silent broker = %v, want ErrUnavailable and DeadlineExceeded", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("DialDevice took %v after its context ended (200ms)", took)
	}
	if got := reg.Get("mqttgw_upstream_device_connects_total", "outcome", "unavailable"); got != 2 {
		t.Errorf("unavailable connects %v, want 2", got)
	}
}

// TestDeviceWill: Close(false) drops the connection so Mosquitto publishes the
// device's will; Close(true) disconnects, so it does not.
func TestDeviceWill(t *testing.T) {
	checkGoroutines(t)
	b := deviceBroker(t)
	p := deviceProxy(t, b.URL, metrics.New())
	watch := b.Subscribe(t, mosquittotest.SubOptions{Username: "watch", Password: "watchpw", QoS: 1, Topics: []string{"will/#"}})
	will := &Message{Topic: "will/dev1", Payload: []byte("gone"), QoS: 1}

	d := dial(t, p, DeviceOptions{ClientID: "sn-dev1", Username: "dev1", Password: "pw1", CleanSession: true, Will: will})
	d.Close(false)
	watch.Expect(t, 5*time.Second, "will/dev1", "gone")

	d = dial(t, p, DeviceOptions{ClientID: "sn-dev1", Username: "dev1", Password: "pw1", CleanSession: true, Will: will})
	d.Close(true)
	// The broker handles one client's packets in order, and the marker's
	// publisher connects after the DISCONNECT: a will would precede it.
	b.Publish(t, mosquittotest.PubOptions{Username: "gw", Password: "gwpw", Topic: "will/marker", Payload: []byte("marker"), QoS: 1})
	watch.Expect(t, 5*time.Second, "will/marker", "marker")
}

// TestDevicePersistentSession: a CleanSession=false device that went away finds
// the QoS 1 messages published meanwhile, held by Mosquitto, when it comes back
// with the same client id.
func TestDevicePersistentSession(t *testing.T) {
	checkGoroutines(t)
	b := deviceBroker(t)
	p := deviceProxy(t, b.URL, metrics.New())
	o := DeviceOptions{ClientID: "sn-dev1", Username: "dev1", Password: "pw1", CleanSession: false}

	d := dial(t, p, o)
	if _, err := d.Subscribe(context.Background(), "cmd/dev1/#", 1); err != nil {
		t.Fatal(err)
	}
	d.Close(true)

	for i := range 3 {
		b.Publish(t, mosquittotest.PubOptions{Username: "gw", Password: "gwpw", Topic: "cmd/dev1/set", Payload: []byte(fmt.Sprint(i)), QoS: 1})
	}

	in := newInbox()
	o.OnMessage = in.on
	d = dial(t, p, o)
	defer d.Close(true)
	if !d.SessionPresent() {
		t.Error("SessionPresent false for a persistent session the broker holds")
	}
	for i := range 3 {
		in.expect(t, "cmd/dev1/set", fmt.Sprint(i))
	}
}

// TestDeviceReconnectsAfterBrokerRestart: after a broker restart the devices
// reconnect by themselves, publish again, and get their subscriptions back (the
// test broker has no persistence, so even the persistent session is gone).
func TestDeviceReconnectsAfterBrokerRestart(t *testing.T) {
	checkGoroutines(t)
	b := deviceBroker(t)
	reg := metrics.New()
	p := deviceProxy(t, b.URL, reg)
	watch := b.Subscribe(t, mosquittotest.SubOptions{Username: "watch", Password: "watchpw", QoS: 1, Topics: []string{"dev/#"}})

	var mu sync.Mutex
	lost := map[string]int{}
	devs := map[string]*DeviceConn{}
	inboxes := map[string]inbox{}
	for _, c := range []struct {
		user  string
		clean bool
	}{{"dev1", true}, {"dev2", false}} {
		in := newInbox()
		d := dial(t, p, DeviceOptions{
			ClientID: "sn-" + c.user, Username: c.user, Password: "pw" + c.user[3:], CleanSession: c.clean,
			OnMessage: in.on,
			OnLost: func(err error) {
				if !errors.Is(err, ErrUnavailable) {
					t.Errorf("OnLost(%v): want ErrUnavailable", err)
				}
				mu.Lock()
				lost[c.user]++
				mu.Unlock()
			},
		})
		defer d.Close(true)
		if _, err := d.Subscribe(context.Background(), "cmd/"+c.user+"/#", 1); err != nil {
			t.Fatal(err)
		}
		devs[c.user], inboxes[c.user] = d, in
	}

	b.Restart()
	watch.WaitSubscribed(t, 10*time.Second)
	for user, d := range devs {
		waitFor(t, 10*time.Second, user+" reconnected", d.Connected)
		if err := d.Publish(context.Background(), Message{Topic: "dev/" + user + "/back", Payload: []byte("again"), QoS: 1}); err != nil {
			t.Fatalf("%s: publish after reconnect: %v", user, err)
		}
		watch.Expect(t, 5*time.Second, "dev/"+user+"/back", "again")
		// The restored SUBSCRIBE may still be on its way: publish until it arrives.
		deadline := time.Now().Add(10 * time.Second)
		for got := false; !got; {
			b.Publish(t, mosquittotest.PubOptions{Username: "gw", Password: "gwpw", Topic: "cmd/" + user + "/set", Payload: []byte("x"), QoS: 1})
			select {
			case m := <-inboxes[user]:
				if m.Topic != "cmd/"+user+"/set" {
					t.Fatalf("%s got %q", user, m.Topic)
				}
				got = true
			case <-time.After(200 * time.Millisecond):
				if time.Now().After(deadline) {
					t.Fatalf("%s: subscription not restored after the broker restart", user)
				}
			}
		}
	}
	mu.Lock()
	if lost["dev1"] != 1 || lost["dev2"] != 1 {
		t.Errorf("OnLost calls %v, want one each", lost)
	}
	mu.Unlock()
	if got := reg.Get("mqttgw_upstream_device_connections"); got != 2 {
		t.Errorf("device connections gauge %v, want 2", got)
	}
}

// fakeBroker accepts MQTT connections on 127.0.0.1 and hands the i-th (from 0)
// to serve on a goroutine of its own; cleanup closes everything and waits.
func fakeBroker(t *testing.T, serve func(i int, c net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for i := 0; ; i++ {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { serve(i, c) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// connack reads a CONNECT and answers it with code.
func connack(c net.Conn, code byte) error {
	if _, err := packets.ReadPacket(c); err != nil {
		return err
	}
	ca := packets.NewControlPacket(packets.Connack).(*packets.ConnackPacket)
	ca.ReturnCode = code
	return ca.Write(c)
}

// TestDeviceSubscribeRefused: a SUBACK refusal (0x80, MQTT 3.1.1 §3.9.3) is
// ErrForbidden, and the filter is not restored later.
func TestDeviceSubscribeRefused(t *testing.T) {
	checkGoroutines(t)
	addr := fakeBroker(t, func(_ int, c net.Conn) {
		if connack(c, packets.Accepted) != nil {
			return
		}
		for {
			pk, err := packets.ReadPacket(c)
			if err != nil {
				return
			}
			switch pk := pk.(type) {
			case *packets.SubscribePacket:
				sa := packets.NewControlPacket(packets.Suback).(*packets.SubackPacket)
				sa.MessageID = pk.MessageID
				sa.ReturnCodes = []byte{0x80}
				sa.Write(c)
			case *packets.DisconnectPacket:
				return
			}
		}
	})
	p := deviceProxy(t, "tcp://"+addr, metrics.New())
	d := dial(t, p, DeviceOptions{ClientID: "sn-dev1", CleanSession: true})
	defer d.Close(true)
	q, err := d.Subscribe(context.Background(), "cmd/dev2/#", 1)
	if !errors.Is(err, ErrForbidden) || q != 0x80 {
		t.Fatalf("Subscribe = %#x, %v; want 0x80, ErrForbidden", q, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.subs) != 0 {
		t.Errorf("refused filter kept for restoring: %v", d.subs)
	}
}

// TestDeviceReconnectRefused: when the broker refuses a reconnect (the device's
// credentials were revoked), the DeviceConn tells OnLost with ErrRefused and
// stops trying.
func TestDeviceReconnectRefused(t *testing.T) {
	checkGoroutines(t)
	var mu sync.Mutex
	var accepted int
	drop := make(chan struct{})
	addr := fakeBroker(t, func(i int, c net.Conn) {
		defer c.Close()
		mu.Lock()
		accepted++
		mu.Unlock()
		if i == 0 {
			connack(c, packets.Accepted)
			<-drop // then drop the connection
			return
		}
		connack(c, packets.ErrRefusedNotAuthorised)
	})
	dropNow := sync.OnceFunc(func() { close(drop) })
	t.Cleanup(dropNow) // before fakeBroker's cleanup waits for serve
	p := deviceProxy(t, "tcp://"+addr, metrics.New())
	errs := make(chan error, 10)
	d := dial(t, p, DeviceOptions{ClientID: "sn-dev1", CleanSession: true, OnLost: func(err error) { errs <- err }})
	defer d.Close(true)
	dropNow()
	for _, want := range []error{ErrUnavailable, ErrRefused} {
		select {
		case err := <-errs:
			if !errors.Is(err, want) {
				t.Fatalf("OnLost(%v), want %v", err, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("OnLost not called with %v", want)
		}
	}
	var code ConnackCode
	d.mu.Lock()
	timer, refused := d.timer, d.refused
	d.mu.Unlock()
	if timer != nil || !refused || d.Connected() {
		t.Errorf("after a refused reconnect: timer %v, refused %v, connected %v; want given up", timer, refused, d.Connected())
	}
	if _, err := d.Subscribe(context.Background(), "a", 0); !errors.Is(err, ErrUnavailable) || errors.As(err, &code) {
		t.Errorf("Subscribe after giving up = %v, want ErrUnavailable", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if accepted != 2 {
		t.Errorf("%d connections, want 2 (no retry after the refusal)", accepted)
	}
}

// TestDeviceCloseWhileReconnecting: while the broker is away, the device is
// unavailable at once, and Close stops its reconnects without leaving a goroutine.
func TestDeviceCloseWhileReconnecting(t *testing.T) {
	checkGoroutines(t)
	b := deviceBroker(t)
	reg := metrics.New()
	p := deviceProxy(t, b.URL, reg)
	d := dial(t, p, DeviceOptions{ClientID: "sn-dev1", Username: "dev1", Password: "pw1", CleanSession: true})
	b.Stop()
	waitFor(t, 5*time.Second, "connection loss", func() bool { return !d.Connected() })
	// At once: refused because the connection is down, not after waiting for
	// an acknowledgement (that would be ErrTimeout).
	err := d.Publish(context.Background(), Message{Topic: "dev/dev1/x", QoS: 1})
	if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrTimeout) {
		t.Errorf("Publish while the broker is away = %v, want ErrUnavailable at once (not a timeout)", err)
	}
	waitFor(t, 5*time.Second, "a failed reconnect", func() bool {
		return reg.Get("mqttgw_upstream_device_connects_total", "outcome", "unavailable") > 0
	})
	d.Close(false)
	if got := reg.Get("mqttgw_upstream_device_connections"); got != 0 {
		t.Errorf("device connections gauge %v, want 0", got)
	}
}
