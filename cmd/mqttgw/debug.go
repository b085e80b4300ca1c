package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/mqttgw/mqttgw/mqttsn"
)

// pub -d and sub -d print every MQTT-SN packet and every CoAP message sent and
// received to standard error, as mosquitto_pub -d prints MQTT packets: one
// line each, "sending ..." or "received ...".

// debugLog writes -d's lines whole: the client's reader goroutine and the
// caller both print.
type debugLog struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *debugLog) printf(format string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format+"\n", a...)
}

// refusedLine is what -d prints for an ICMP port unreachable.
func (l *debugLog) refused(peer string) {
	l.printf("received ICMP port unreachable from %s: nothing listens there", peer)
}

// snDebugConn prints each MQTT-SN message the client writes and reads.
type snDebugConn struct {
	net.Conn
	log *debugLog
}

func (c *snDebugConn) Write(b []byte) (int, error) {
	c.log.printf("sending %s", snString(b))
	return c.Conn.Write(b)
}

func (c *snDebugConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.log.printf("received %s", snString(b[:n]))
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		c.log.refused(c.RemoteAddr().String())
	}
	return n, err
}

// snString describes one MQTT-SN datagram: its type and fields.
func snString(b []byte) string {
	m, err := mqttsn.Decode(b)
	if err != nil {
		return fmt.Sprintf("%d octets that do not decode: %v", len(b), err)
	}
	name := m.Type().String()
	topic := func(t mqttsn.TopicIDType, id uint16, name string) string {
		switch {
		case name != "":
			return fmt.Sprintf("topic %q", name)
		case t == mqttsn.TopicShort:
			return fmt.Sprintf("short topic %q", mqttsn.ShortTopicName(id))
		}
		return fmt.Sprintf("%s topic id %d", t, id)
	}
	var f string
	switch m := m.(type) {
	case *mqttsn.Connect:
		f = fmt.Sprintf("clean %d, will %d, duration %d, client id %q", b2i(m.Flags.CleanSession), b2i(m.Flags.Will), m.Duration, m.ClientID)
	case *mqttsn.Connack:
		f = m.ReturnCode.String()
	case *mqttsn.WillTopic:
		f = fmt.Sprintf("qos %s, retain %d, topic %q", m.Flags.QoS, b2i(m.Flags.Retain), m.Topic)
	case *mqttsn.WillMsg:
		f = fmt.Sprintf("%d octets", len(m.WillMsg))
	case *mqttsn.Register:
		f = fmt.Sprintf("topic id %d, msg id %d, topic %q", m.TopicID, m.MsgID, m.TopicName)
	case *mqttsn.Regack:
		f = fmt.Sprintf("topic id %d, msg id %d, %s", m.TopicID, m.MsgID, m.ReturnCode)
	case *mqttsn.Publish:
		f = fmt.Sprintf("dup %d, qos %s, retain %d, %s, msg id %d, %d octets",
			b2i(m.Flags.DUP), m.Flags.QoS, b2i(m.Flags.Retain), topic(m.Flags.TopicIDType, m.TopicID, ""), m.MsgID, len(m.Data))
	case *mqttsn.Puback:
		f = fmt.Sprintf("topic id %d, msg id %d, %s", m.TopicID, m.MsgID, m.ReturnCode)
	case *mqttsn.Pubrec:
		f = fmt.Sprintf("msg id %d", m.MsgID)
	case *mqttsn.Pubrel:
		f = fmt.Sprintf("msg id %d", m.MsgID)
	case *mqttsn.Pubcomp:
		f = fmt.Sprintf("msg id %d", m.MsgID)
	case *mqttsn.Subscribe:
		f = fmt.Sprintf("dup %d, qos %s, msg id %d, %s", b2i(m.Flags.DUP), m.Flags.QoS, m.MsgID, topic(m.Flags.TopicIDType, m.TopicID, m.TopicName))
	case *mqttsn.Suback:
		f = fmt.Sprintf("qos %s, topic id %d, msg id %d, %s", m.Flags.QoS, m.TopicID, m.MsgID, m.ReturnCode)
	case *mqttsn.Unsubscribe:
		f = fmt.Sprintf("msg id %d, %s", m.MsgID, topic(m.Flags.TopicIDType, m.TopicID, m.TopicName))
	case *mqttsn.Unsuback:
		f = fmt.Sprintf("msg id %d", m.MsgID)
	case *mqttsn.Pingreq:
		if m.ClientID != "" {
			f = fmt.Sprintf("client id %q", m.ClientID)
		}
	case *mqttsn.Disconnect:
		if m.HasDuration {
			f = fmt.Sprintf("duration %d", m.Duration)
		}
	case *mqttsn.WillTopicUpd:
		f = fmt.Sprintf("qos %s, retain %d, topic %q", m.Flags.QoS, b2i(m.Flags.Retain), m.Topic)
	case *mqttsn.WillMsgUpd:
		f = fmt.Sprintf("%d octets", len(m.WillMsg))
	case *mqttsn.WillTopicResp:
		f = m.ReturnCode.String()
	case *mqttsn.WillMsgResp:
		f = m.ReturnCode.String()
	}
	if f == "" {
		return name
	}
	return name + " (" + f + ")"
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// dialCoAPDebug is dialCoAPDevice for -d. go-coap offers no hook on the
// messages it sends, so it talks plain UDP to a hop in this process, on
// loopback, which prints every datagram and passes it on to the gateway: over
// UDP, or over the DTLS connection the hop holds (so it sees the messages
// before encryption). closeHop, after the client is closed, closes the hop
// and waits for it.
func dialCoAPDebug(ctx context.Context, t deviceTarget, identity string, log *debugLog, opts []udp.Option) (cc *udpclient.Conn, closeHop func(), err error) {
	var up net.Conn
	if t.dtls {
		if up, err = dialDTLS(ctx, "coaps", t.hostport, identity, t.key, dtlsHandshakeBound); err != nil {
			return nil, nil, err
		}
		log.printf("DTLS 1.2 handshake with %s done, PSK identity %q", t.hostport, identity)
	} else {
		var d net.Dialer
		if up, err = d.DialContext(ctx, "udp", t.hostport); err != nil {
			return nil, nil, err
		}
	}
	hop, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		up.Close()
		return nil, nil, err
	}
	local, err := net.DialUDP("udp", nil, hop.LocalAddr().(*net.UDPAddr))
	if err != nil {
		up.Close()
		hop.Close()
		return nil, nil, err
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // the tool's messages, to the gateway
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, _, err := hop.ReadFrom(buf)
			if err != nil {
				return
			}
			log.printf("sending %s", coapString(buf[:n]))
			_, _ = up.Write(buf[:n])
		}
	}()
	go func() { // the gateway's, to the tool
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, err := up.Read(buf)
			switch {
			case errors.Is(err, syscall.ECONNREFUSED):
				log.refused(t.hostport)
				continue
			case err != nil:
				return
			}
			log.printf("received %s", coapString(buf[:n]))
			_, _ = hop.WriteTo(buf[:n], local.LocalAddr())
		}
	}()
	cc = udp.Client(local, append(opts, options.WithCloseSocket())...)
	return cc, func() {
		hop.Close()
		up.Close()
		wg.Wait()
	}, nil
}

// dtlsHandshakeBound bounds the DTLS handshake of pub -d or sub -d over
// coaps, as go-coap's own default bounds it without -d.
const dtlsHandshakeBound = 10 * time.Second

// coapString describes one CoAP datagram as a line:
//
//	CON POST mid 4711 token 0a1b /ps/sensors/t1 ?qos=1 (4 octets)
//	ACK 2.04 Changed mid 4711 token 0a1b
func coapString(b []byte) string {
	m := message.Message{Options: make(message.Options, 0, 32)}
	_, err := coder.DefaultCoder.Decode(b, &m)
	if errors.Is(err, message.ErrOptionsTooSmall) {
		m = message.Message{Options: make(message.Options, 0, len(b))} // an option takes an octet at least
		_, err = coder.DefaultCoder.Decode(b, &m)
	}
	if err != nil {
		return fmt.Sprintf("%d octets that do not decode as CoAP: %v", len(b), err)
	}
	typ := map[message.Type]string{message.Confirmable: "CON", message.NonConfirmable: "NON",
		message.Acknowledgement: "ACK", message.Reset: "RST"}[m.Type]
	parts := []string{typ}
	switch {
	case m.Code == codes.Empty:
		parts = append(parts, "empty")
	case m.Code < 32: // a method, 0.xx
		parts = append(parts, m.Code.String())
	default:
		parts = append(parts, fmt.Sprintf("%d.%02d %v", m.Code>>5, m.Code&0x1f, m.Code))
	}
	parts = append(parts, fmt.Sprintf("mid %d", m.MessageID))
	if len(m.Token) > 0 {
		parts = append(parts, "token "+hex.EncodeToString(m.Token))
	}
	if p, err := m.Options.Path(); err == nil && p != "" && p != "/" {
		parts = append(parts, p)
	}
	if q, err := m.Options.Queries(); err == nil && len(q) > 0 {
		parts = append(parts, "?"+strings.Join(q, "&"))
	}
	if v, err := m.Options.Observe(); err == nil {
		parts = append(parts, fmt.Sprintf("observe %d", v))
	}
	for _, o := range []struct {
		id   message.OptionID
		name string
	}{{message.Block1, "block1"}, {message.Block2, "block2"}} {
		if v, err := m.Options.GetUint32(o.id); err == nil { // RFC 7959 §2.2: NUM, M, SZX
			parts = append(parts, fmt.Sprintf("%s %d/%d/%d", o.name, v>>4, v>>3&1, 1<<(4+v&7)))
		}
	}
	if v, err := m.Options.GetUint32(message.MaxAge); err == nil {
		parts = append(parts, fmt.Sprintf("max-age %d", v))
	}
	if len(m.Payload) > 0 {
		parts = append(parts, fmt.Sprintf("(%d octets)", len(m.Payload)))
	}
	return strings.Join(parts, " ")
}
