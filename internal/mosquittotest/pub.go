package mosquittotest

import (
	"bytes"
	"context"
	"fmt"
	"github.com/mqttgw/mqttgw/internal/testproc"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// pubTimeout bounds one mosquitto_pub run.
const pubTimeout = 10 * time.Second

// PubOptions is one message for mosquitto_pub.
type PubOptions struct {
	Username, Password string
	Topic              string
	Payload            []byte // empty sends a zero-length payload; with Retain it clears the retained message
	QoS                int
	Retain             bool
}

// Publish runs mosquitto_pub and fails the test when it exits non-zero.
// With QoS 1 or 2 it returns after the broker acknowledged the message.
func (b *Broker) Publish(t testing.TB, o PubOptions) {
	t.Helper()
	if err := b.PublishErr(t, o); err != nil {
		t.Fatalf("mosquittotest: %v", err)
	}
}

// PublishErr is Publish returning mosquitto_pub's failure (e.g. a refused
// connection) instead of failing the test. It fails the test only when
// mosquitto_pub is missing. A message the ACL denies is not a failure: the
// broker drops it silently (MQTT 3.1.1).
func (b *Broker) PublishErr(t testing.TB, o PubOptions) error {
	t.Helper()
	bin := mustTool(t, "mosquitto_pub")
	args := append(b.clientArgs(o.Username, o.Password), "-t", o.Topic, "-q", strconv.Itoa(o.QoS))
	if o.Retain {
		args = append(args, "-r")
	}
	if len(o.Payload) == 0 {
		args = append(args, "-n")
	} else {
		args = append(args, "-s") // the whole of stdin is the payload
	}
	ctx, cancel := context.WithTimeout(context.Background(), pubTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = bytes.NewReader(o.Payload)
	cmd.WaitDelay = time.Second
	testproc.SetProcAttr(cmd)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("no exit within %v: %w", pubTimeout, err)
	}
	if err != nil {
		return fmt.Errorf("mosquitto_pub %s -t %s: %v: %s", b.Addr, o.Topic, err, bytes.TrimSpace(out))
	}
	return nil
}
