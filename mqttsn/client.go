package mqttsn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults for ClientOptions.
const (
	// DefaultKeepalive is the keep-alive period when ClientOptions.Keepalive is 0.
	DefaultKeepalive = 60 * time.Second
	// DefaultRetryInterval is T_RETRY, MQTT-SN 1.2 §6.13 (10–15 s).
	DefaultRetryInterval = 10 * time.Second
	// DefaultMaxRetries is N_RETRY, MQTT-SN 1.2 §6.13 (3–5).
	DefaultMaxRetries = 3
)

// Will is the client's last will, sent during CONNECT (MQTT-SN 1.2 §6.2).
type Will struct {
	Topic   string
	Payload []byte
	QoS     QoS
	Retain  bool
}

// ClientOptions configure a Client. The zero value is usable except for
// ClientID, which a gateway normally requires.
type ClientOptions struct {
	// ClientID is sent in CONNECT and in the PINGREQ that wakes a sleeping
	// client.
	ClientID string
	// Keepalive is the CONNECT Duration (rounded up to whole seconds) and the
	// PINGREQ period: while connected and awake the client sends a PINGREQ
	// whenever it has sent nothing for Keepalive. 0 means DefaultKeepalive;
	// a negative value sends Duration 0 and no PINGREQ.
	Keepalive time.Duration
	// CleanSession sets the CONNECT CleanSession flag. A clean CONNECT also
	// forgets the topic ids the client had learned.
	CleanSession bool
	// Will, when set, makes Connect run the WILLTOPIC/WILLMSG exchange.
	Will *Will
	// RetryInterval is how long to wait for an answer before retransmitting
	// (T_RETRY). 0 means DefaultRetryInterval.
	RetryInterval time.Duration
	// MaxRetries is how many retransmissions follow the first transmission
	// before a call fails with ErrNoResponse (N_RETRY). 0 means
	// DefaultMaxRetries; a negative value means none.
	MaxRetries int
	// PredefinedTopics maps topic names to the predefined topic ids agreed
	// with the gateway (MQTT-SN 1.2 §6.7). Publish uses them instead of
	// REGISTER, and OnMessage gets their names.
	PredefinedTopics map[string]uint16
	// OnMessage receives every PUBLISH from the gateway once (QoS 2
	// duplicates are suppressed until PUBREL). topic is the name the client
	// knows for the id: registered by either side, subscribed, predefined in
	// PredefinedTopics, or the two characters of a short name; it is empty
	// for an unknown predefined id. A PUBLISH with an unknown registered id
	// is rejected with PUBACK "invalid topic ID" and not delivered.
	//
	// OnMessage runs on the reader goroutine: it must return promptly and
	// must not call the Client's blocking methods. m and m.Data belong to
	// the callee. The acknowledgement (PUBACK, PUBREC) is sent after
	// OnMessage returns.
	OnMessage func(topic string, topicID uint16, idType TopicIDType, m *Publish)
}

// connState is where the client stands with the gateway, MQTT-SN 1.2 §6.14
// (Figure 4: client's state transition).
type connState uint8

const (
	stateDisconnected connState = iota
	stateActive
	stateAsleep
	stateAwake
)

// waitKey identifies an expected answer: its type and, for the messages that
// carry one, its MsgId (0 otherwise).
type waitKey struct {
	t  MsgType
	id uint16
}

// waiter is a method blocked on one of several answers.
type waiter struct {
	keys []waitKey
	ch   chan Message
	fail chan error // the socket reported the gateway's port unreachable
}

// Client is a small MQTT-SN client over UDP (or any datagram connection, see
// DialConn). Create it with Dial or DialConn; stop it with Close. Its methods are safe for concurrent use (see the package
// comment for ordering and blocking).
type Client struct {
	opts      ClientOptions
	conn      net.Conn
	peer      string        // the gateway's address, for errors
	keepalive time.Duration // 0: no PINGREQ
	retry     time.Duration
	retries   int
	predefs   map[string]uint16 // copy of opts.PredefinedTopics; read-only
	predefIDs map[uint16]string // its inverse; read-only

	// ctrl serializes the exchanges that carry no MsgId (CONNECT and the
	// will exchange, PINGREQ, DISCONNECT, WILLTOPICUPD, WILLMSGUPD): their
	// answers can only be told apart by arriving one at a time. It is a
	// channel so that waiting for it honours the context.
	ctrl chan struct{}

	closeOnce sync.Once
	closeErr  error
	closed    chan struct{} // closed by Close
	done      chan struct{} // closed when the reader goroutine has exited

	lastSend atomic.Int64 // time.Time.UnixNano of the last datagram sent
	dropped  atomic.Int64 // datagrams that did not decode

	// Lock order: a goroutine holding ctrl may take mu; never the reverse.
	// mu is never held across network I/O or a call to OnMessage.
	mu         sync.Mutex
	state      connState
	waiters    map[waitKey]*waiter
	idsInUse   map[uint16]struct{} // MsgIds of exchanges in flight
	nextMsgID  uint16
	topicIDs   map[string]uint16   // registered topic name → id (§6.5)
	topicNames map[uint16]string   // registered id → topic name
	inboundQ2  map[uint16]struct{} // QoS 2 MsgIds received and not yet released (§6.10)
	// subscribing maps the MsgId of a SUBSCRIBE by topic name in flight to
	// that name, so that the reader learns the SUBACK's topic id before it
	// handles the next datagram: a gateway may PUBLISH with the id right
	// after the SUBACK (a retained message), before Subscribe returns.
	subscribing map[uint16]string
}

// Dial opens a UDP socket to the gateway at addr ("host:port") and starts
// the client's reader goroutine. It sends nothing: call Connect, or use the
// client for QoS -1 PublishID calls.
//
// The socket is connected, so the system reports an ICMP port unreachable
// for a datagram it sent: every exchange then in flight (Connect, Publish at
// QoS 1 and 2, Subscribe, ...) fails at once with ErrRefused instead of
// retransmitting, as mosquitto_pub fails on a refused TCP connection. QoS 0
// and -1 publishes wait for nothing and never see it.
func Dial(ctx context.Context, addr string, opts ClientOptions) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("mqttsn: dial %s: %w", addr, err)
	}
	return DialConn(conn, opts), nil
}

// DialConn makes a client on conn, a connection to the gateway that carries
// one MQTT-SN message per Write and per Read: a connected UDP socket, or a
// DTLS connection whose handshake the caller made (MQTT-SN over DTLS, a
// gateway's mqttsns listener). Like Dial it starts the reader goroutine and
// sends nothing; the client owns conn from now on and Close closes it. A
// Read error that is a timeout (net.Error) drives the keep-alive; io.EOF or
// net.ErrClosed ends the reader (the connection is over: later calls fail or
// time out).
func DialConn(conn net.Conn, opts ClientOptions) *Client {
	c := &Client{
		opts:       opts,
		conn:       conn,
		peer:       conn.RemoteAddr().String(),
		keepalive:  opts.Keepalive,
		retry:      opts.RetryInterval,
		retries:    opts.MaxRetries,
		predefIDs:  make(map[uint16]string, len(opts.PredefinedTopics)),
		ctrl:       make(chan struct{}, 1),
		closed:     make(chan struct{}),
		done:       make(chan struct{}),
		waiters:    make(map[waitKey]*waiter),
		idsInUse:   make(map[uint16]struct{}),
		topicIDs:   make(map[string]uint16),
		topicNames: make(map[uint16]string),
		inboundQ2:  make(map[uint16]struct{}),

		subscribing: make(map[uint16]string),
	}
	switch {
	case c.keepalive == 0:
		c.keepalive = DefaultKeepalive
	case c.keepalive < 0:
		c.keepalive = 0
	}
	if c.retry <= 0 {
		c.retry = DefaultRetryInterval
	}
	switch {
	case c.retries == 0:
		c.retries = DefaultMaxRetries
	case c.retries < 0:
		c.retries = 0
	}
	c.predefs = make(map[string]uint16, len(opts.PredefinedTopics))
	for name, id := range opts.PredefinedTopics {
		c.predefs[name] = id
		c.predefIDs[id] = name
	}
	c.lastSend.Store(time.Now().UnixNano())
	go c.read()
	return c
}

// Close stops the reader goroutine and closes the socket, without sending
// DISCONNECT (call Disconnect first for a clean end). Blocked calls return
// ErrClosed. Close may be called more than once; every call returns after
// the reader goroutine has exited.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.closeErr = c.conn.Close()
	})
	<-c.done
	return c.closeErr
}

// LocalAddr returns the client's UDP address.
func (c *Client) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// TopicID returns the id the client knows for a topic name: registered by
// either side, learned from a SUBACK, or predefined.
func (c *Client) TopicID(topic string) (id uint16, idType TopicIDType, ok bool) {
	if id, ok := c.predefs[topic]; ok {
		return id, TopicPredefined, true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok = c.topicIDs[topic]
	return id, TopicNormal, ok
}

// Dropped returns how many datagrams from the gateway failed to decode.
func (c *Client) Dropped() int64 { return c.dropped.Load() }

// errorf wraps err with the package, the gateway's address and the operation.
func (c *Client) errorf(op string, err error) error {
	return fmt.Errorf("mqttsn: %s: %s: %w", c.peer, op, err)
}

// Connect sends CONNECT and waits for CONNACK, running the will exchange
// (WILLTOPICREQ, WILLTOPIC, WILLMSGREQ, WILLMSG) when ClientOptions.Will is
// set. MQTT-SN 1.2 §6.2. A rejecting CONNACK returns its ReturnCode as the
// error (errors.Is(err, mqttsn.Congestion)). Without an answer CONNECT is
// sent again, restarting the exchange.
func (c *Client) Connect(ctx context.Context) error {
	release, err := c.acquireCtrl(ctx)
	if err != nil {
		return c.errorf("connect", err)
	}
	defer release()

	c.mu.Lock()
	if c.opts.CleanSession {
		clear(c.topicIDs)
		clear(c.topicNames)
		clear(c.inboundQ2)
	}
	c.mu.Unlock()

	w, err := c.register(waitKey{t: MsgConnack}, waitKey{t: MsgWillTopicReq}, waitKey{t: MsgWillMsgReq})
	if err != nil {
		return c.errorf("connect", err)
	}
	defer c.unregister(w)

	secs := ceilSeconds(c.keepalive)
	connect := &Connect{
		Flags:      Flags{Will: c.opts.Will != nil, CleanSession: c.opts.CleanSession},
		ProtocolID: ProtocolID12,
		Duration:   secs,
		ClientID:   c.opts.ClientID,
	}
	timer := time.NewTimer(c.retry)
	defer timer.Stop()
	if err := refused(c.send(connect)); err != nil {
		return c.errorf("connect", err)
	}
	for attempt := 0; ; {
		select {
		case err := <-w.fail:
			return c.errorf("connect", err)
		case m := <-w.ch:
			var reply Message
			switch m := m.(type) {
			case *WillTopicReq:
				reply = c.willTopic()
			case *WillMsgReq:
				reply = c.willMsg()
			case *Connack:
				if err := m.ReturnCode.Err(); err != nil {
					return c.errorf("connect", err)
				}
				return nil
			default:
				continue
			}
			if err := refused(c.send(reply)); err != nil {
				return c.errorf("connect", err)
			}
			timer.Reset(c.retry)
		case <-timer.C:
			if attempt >= c.retries {
				return c.errorf("connect", ErrNoResponse)
			}
			attempt++
			if err := refused(c.send(connect)); err != nil {
				return c.errorf("connect", err)
			}
			timer.Reset(c.retry)
		case <-ctx.Done():
			return c.errorf("connect", ctx.Err())
		case <-c.closed:
			return c.errorf("connect", ErrClosed)
		}
	}
}

// willTopic is the answer to WILLTOPICREQ (§5.4.7): the will's topic, or the
// empty WILLTOPIC when the client has no will.
func (c *Client) willTopic() Message {
	w := c.opts.Will
	if w == nil {
		return &WillTopic{}
	}
	return &WillTopic{Flags: Flags{QoS: w.QoS, Retain: w.Retain}, Topic: w.Topic}
}

// willMsg is the answer to WILLMSGREQ (§5.4.9).
func (c *Client) willMsg() Message {
	if c.opts.Will == nil {
		return &WillMsg{}
	}
	return &WillMsg{WillMsg: c.opts.Will.Payload}
}

// Register asks the gateway for the topic id of a topic name (REGISTER,
// REGACK; MQTT-SN 1.2 §6.5) and remembers it for Publish.
func (c *Client) Register(ctx context.Context, topic string) (uint16, error) {
	id, err := c.register1(ctx, topic)
	if err != nil {
		return 0, c.errorf(fmt.Sprintf("register %q", topic), err)
	}
	return id, nil
}

func (c *Client) register1(ctx context.Context, topic string) (uint16, error) {
	msgID, release, err := c.allocMsgID()
	if err != nil {
		return 0, err
	}
	defer release()
	m, err := c.exchange(ctx, []waitKey{{MsgRegack, msgID}}, func(bool) Message {
		return &Register{MsgID: msgID, TopicName: topic}
	})
	if err != nil {
		return 0, err
	}
	ra := m.(*Regack)
	if err := ra.ReturnCode.Err(); err != nil {
		return 0, err
	}
	c.remember(topic, ra.TopicID)
	return ra.TopicID, nil
}

// Publish publishes payload to a topic name at QoS 0, 1 or 2, using the
// topic's predefined id, or its registered id, registering it first when
// the client knows none. QoS 1 waits for PUBACK; QoS 2 runs PUBREC, PUBREL,
// PUBCOMP (MQTT-SN 1.2 §6.6). A PUBACK that rejects the message returns its
// ReturnCode as the error; after "invalid topic ID" the client forgets the
// id, so the next Publish registers the topic again. QoS -1 needs a
// predefined id or short name: use PublishID or PublishMinusOne.
func (c *Client) Publish(ctx context.Context, topic string, qos QoS, retain bool, payload []byte) error {
	op := fmt.Sprintf("publish %q", topic)
	if qos < QoS0 || qos > QoS2 {
		return c.errorf(op, ErrBadQoS)
	}
	id, idType, ok := c.TopicID(topic)
	if !ok {
		var err error
		if id, err = c.register1(ctx, topic); err != nil {
			return c.errorf(op, err)
		}
	}
	err := c.publish(ctx, idType, id, qos, retain, payload)
	if errors.Is(err, InvalidTopicID) && idType == TopicNormal {
		c.forget(id)
	}
	if err != nil {
		return c.errorf(op, err)
	}
	return nil
}

// PublishID publishes payload with a topic id the caller knows: a
// registered id (TopicNormal), a predefined id, or a short topic name (see
// ShortTopicID). QoS -1 is allowed with predefined ids and short names and
// sends one PUBLISH without waiting, connected or not (MQTT-SN 1.2 §6.8).
func (c *Client) PublishID(ctx context.Context, idType TopicIDType, topicID uint16, qos QoS, retain bool, payload []byte) error {
	op := fmt.Sprintf("publish %s topic id %d", idType, topicID)
	if err := c.publish(ctx, idType, topicID, qos, retain, payload); err != nil {
		return c.errorf(op, err)
	}
	return nil
}

func (c *Client) publish(ctx context.Context, idType TopicIDType, topicID uint16, qos QoS, retain bool, payload []byte) error {
	if idType > TopicShort {
		return ErrBadTopicIDType
	}
	if !qos.Valid() || (qos == QoSMinusOne && idType == TopicNormal) {
		return ErrBadQoS
	}
	flags := Flags{QoS: qos, Retain: retain, TopicIDType: idType}
	if qos <= QoS0 {
		if err := c.checkClosed(); err != nil {
			return err
		}
		return ignoreRefused(c.send(&Publish{Flags: flags, TopicID: topicID, Data: payload}))
	}
	msgID, release, err := c.allocMsgID()
	if err != nil {
		return err
	}
	defer release()
	keys := []waitKey{{MsgPuback, msgID}}
	if qos == QoS2 {
		// A rejection comes as PUBACK whatever the QoS (§6.6).
		keys = append(keys, waitKey{MsgPubrec, msgID})
	}
	m, err := c.exchange(ctx, keys, func(retry bool) Message {
		f := flags
		f.DUP = retry
		return &Publish{Flags: f, TopicID: topicID, MsgID: msgID, Data: payload}
	})
	if err != nil {
		return err
	}
	if pa, ok := m.(*Puback); ok {
		return pa.ReturnCode.Err()
	}
	// PUBREC: release the message and wait for PUBCOMP (§6.6, Figure 7).
	_, err = c.exchange(ctx, []waitKey{{MsgPubcomp, msgID}}, func(bool) Message {
		return &Pubrel{MsgID: msgID}
	})
	return err
}

// Subscribe subscribes to a topic name or filter (wildcards allowed) and
// returns the granted QoS and the topic id from SUBACK, which is 0 for a
// wildcard filter (MQTT-SN 1.2 §6.9). The client remembers the id of a
// plain topic name for OnMessage. A rejecting SUBACK returns its ReturnCode
// as the error.
func (c *Client) Subscribe(ctx context.Context, filter string, qos QoS) (granted QoS, topicID uint16, err error) {
	sa, err := c.subscribe(ctx, Flags{QoS: qos}, filter, 0)
	if err != nil {
		return 0, 0, c.errorf(fmt.Sprintf("subscribe %q", filter), err)
	}
	if sa.TopicID != 0 && !strings.ContainsAny(filter, "+#") {
		c.remember(filter, sa.TopicID)
	}
	return sa.Flags.QoS, sa.TopicID, nil
}

// SubscribeID subscribes to a predefined topic id or a short topic name
// (see ShortTopicID) and returns the granted QoS.
func (c *Client) SubscribeID(ctx context.Context, idType TopicIDType, topicID uint16, qos QoS) (QoS, error) {
	op := fmt.Sprintf("subscribe %s topic id %d", idType, topicID)
	if idType != TopicPredefined && idType != TopicShort {
		return 0, c.errorf(op, ErrBadTopicIDType)
	}
	sa, err := c.subscribe(ctx, Flags{QoS: qos, TopicIDType: idType}, "", topicID)
	if err != nil {
		return 0, c.errorf(op, err)
	}
	return sa.Flags.QoS, nil
}

func (c *Client) subscribe(ctx context.Context, flags Flags, filter string, topicID uint16) (*Suback, error) {
	if flags.QoS < QoS0 || flags.QoS > QoS2 {
		return nil, ErrBadQoS
	}
	msgID, release, err := c.allocMsgID()
	if err != nil {
		return nil, err
	}
	defer release()
	if flags.TopicIDType == TopicNormal && !strings.ContainsAny(filter, "+#") {
		c.mu.Lock()
		c.subscribing[msgID] = filter
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			delete(c.subscribing, msgID)
			c.mu.Unlock()
		}()
	}
	m, err := c.exchange(ctx, []waitKey{{MsgSuback, msgID}}, func(retry bool) Message {
		f := flags
		f.DUP = retry
		return &Subscribe{Flags: f, MsgID: msgID, TopicName: filter, TopicID: topicID}
	})
	if err != nil {
		return nil, err
	}
	sa := m.(*Suback)
	if err := sa.ReturnCode.Err(); err != nil {
		return nil, err
	}
	return sa, nil
}

// Unsubscribe ends a subscription to a topic name or filter (UNSUBSCRIBE,
// UNSUBACK; MQTT-SN 1.2 §6.9).
func (c *Client) Unsubscribe(ctx context.Context, filter string) error {
	if err := c.unsubscribe(ctx, TopicNormal, filter, 0); err != nil {
		return c.errorf(fmt.Sprintf("unsubscribe %q", filter), err)
	}
	return nil
}

// UnsubscribeID ends a subscription to a predefined topic id or a short
// topic name.
func (c *Client) UnsubscribeID(ctx context.Context, idType TopicIDType, topicID uint16) error {
	op := fmt.Sprintf("unsubscribe %s topic id %d", idType, topicID)
	if idType != TopicPredefined && idType != TopicShort {
		return c.errorf(op, ErrBadTopicIDType)
	}
	if err := c.unsubscribe(ctx, idType, "", topicID); err != nil {
		return c.errorf(op, err)
	}
	return nil
}

func (c *Client) unsubscribe(ctx context.Context, idType TopicIDType, filter string, topicID uint16) error {
	msgID, release, err := c.allocMsgID()
	if err != nil {
		return err
	}
	defer release()
	_, err = c.exchange(ctx, []waitKey{{MsgUnsuback, msgID}}, func(bool) Message {
		return &Unsubscribe{Flags: Flags{TopicIDType: idType}, MsgID: msgID, TopicName: filter, TopicID: topicID}
	})
	return err
}

// Ping sends PINGREQ and waits for PINGRESP (MQTT-SN 1.2 §6.11).
func (c *Client) Ping(ctx context.Context) error {
	if err := c.ctrlExchange(ctx, MsgPingresp, &Pingreq{}); err != nil {
		return c.errorf("ping", err)
	}
	return nil
}

// Sleep sends DISCONNECT with a duration (rounded up to whole seconds, at
// most 65535) and waits for the gateway's DISCONNECT; the client is then
// asleep: the gateway buffers its messages and it sends no keep-alive
// PINGREQ. MQTT-SN 1.2 §6.14.
func (c *Client) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return c.errorf("sleep", fmt.Errorf("duration %v: %w", d, ErrInvalidMessage))
	}
	c.setState(stateAsleep)
	if err := c.ctrlExchange(ctx, MsgDisconnect, &Disconnect{Duration: ceilSeconds(d), HasDuration: true}); err != nil {
		return c.errorf("sleep", err)
	}
	return nil
}

// Wake sends PINGREQ with the ClientID, delivers the messages the gateway
// buffered during the sleep to OnMessage (acknowledging them), and returns
// when PINGRESP arrives. The client is asleep again afterwards; call
// Connect to become active. MQTT-SN 1.2 §6.14.
func (c *Client) Wake(ctx context.Context) error {
	c.setState(stateAwake)
	err := c.ctrlExchange(ctx, MsgPingresp, &Pingreq{ClientID: c.opts.ClientID})
	c.mu.Lock()
	if c.state == stateAwake {
		c.state = stateAsleep
	}
	c.mu.Unlock()
	if err != nil {
		return c.errorf("wake", err)
	}
	return nil
}

// Disconnect sends DISCONNECT and waits for the gateway's DISCONNECT
// (MQTT-SN 1.2 §6.12). The socket stays open: call Close when done.
func (c *Client) Disconnect(ctx context.Context) error {
	c.setState(stateDisconnected)
	if err := c.ctrlExchange(ctx, MsgDisconnect, &Disconnect{}); err != nil {
		return c.errorf("disconnect", err)
	}
	return nil
}

// UpdateWillTopic replaces the will topic stored by the gateway
// (WILLTOPICUPD, WILLTOPICRESP; MQTT-SN 1.2 §6.4). An empty topic deletes
// the will. A rejecting WILLTOPICRESP returns its ReturnCode as the error.
func (c *Client) UpdateWillTopic(ctx context.Context, topic string, qos QoS, retain bool) error {
	m := &WillTopicUpd{}
	if topic != "" {
		m = &WillTopicUpd{Flags: Flags{QoS: qos, Retain: retain}, Topic: topic}
	}
	if err := c.ctrlExchange(ctx, MsgWillTopicResp, m); err != nil {
		return c.errorf("update will topic", err)
	}
	return nil
}

// UpdateWillMsg replaces the will message stored by the gateway
// (WILLMSGUPD, WILLMSGRESP; MQTT-SN 1.2 §6.4).
func (c *Client) UpdateWillMsg(ctx context.Context, payload []byte) error {
	if err := c.ctrlExchange(ctx, MsgWillMsgResp, &WillMsgUpd{WillMsg: payload}); err != nil {
		return c.errorf("update will message", err)
	}
	return nil
}

// ctrlExchange runs one exchange without MsgId under ctrl and turns a
// rejecting return code into an error.
func (c *Client) ctrlExchange(ctx context.Context, answer MsgType, m Message) error {
	release, err := c.acquireCtrl(ctx)
	if err != nil {
		return err
	}
	defer release()
	resp, err := c.exchange(ctx, []waitKey{{t: answer}}, func(bool) Message { return m })
	if err != nil {
		return err
	}
	switch r := resp.(type) {
	case *WillTopicResp:
		return r.ReturnCode.Err()
	case *WillMsgResp:
		return r.ReturnCode.Err()
	}
	return nil
}

// PublishMinusOne sends one QoS -1 PUBLISH to the gateway at addr from a
// fresh UDP socket, without connecting (MQTT-SN 1.2 §6.8). idType must be
// TopicPredefined or TopicShort.
func PublishMinusOne(ctx context.Context, addr string, idType TopicIDType, topicID uint16, retain bool, payload []byte) error {
	b, err := minusOne(idType, topicID, retain, payload)
	if err != nil {
		return fmt.Errorf("mqttsn: %s: publish QoS -1: %w", addr, err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return fmt.Errorf("mqttsn: dial %s: %w", addr, err)
	}
	defer conn.Close()
	if _, err := conn.Write(b); err != nil {
		return fmt.Errorf("mqttsn: %s: publish QoS -1: %w", addr, err)
	}
	return nil
}

// PublishMinusOneTo is PublishMinusOne on a socket the caller owns.
func PublishMinusOneTo(pc net.PacketConn, to net.Addr, idType TopicIDType, topicID uint16, retain bool, payload []byte) error {
	b, err := minusOne(idType, topicID, retain, payload)
	if err == nil {
		_, err = pc.WriteTo(b, to)
	}
	if err != nil {
		return fmt.Errorf("mqttsn: %s: publish QoS -1: %w", to, err)
	}
	return nil
}

func minusOne(idType TopicIDType, topicID uint16, retain bool, payload []byte) ([]byte, error) {
	if idType != TopicPredefined && idType != TopicShort {
		return nil, ErrBadTopicIDType
	}
	return Append(nil, &Publish{
		Flags:   Flags{QoS: QoSMinusOne, Retain: retain, TopicIDType: idType},
		TopicID: topicID,
		Data:    payload,
	})
}

// --- exchanges ---

// acquireCtrl takes the ctrl token, or fails when ctx ends or the client
// closes first.
func (c *Client) acquireCtrl(ctx context.Context) (release func(), err error) {
	select {
	case c.ctrl <- struct{}{}:
		return func() { <-c.ctrl }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.closed:
		return nil, ErrClosed
	}
}

// allocMsgID reserves a MsgId (never 0) that no exchange in flight uses.
func (c *Client) allocMsgID() (id uint16, release func(), err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for range 0xFFFF {
		c.nextMsgID++
		if c.nextMsgID == 0 {
			c.nextMsgID = 1
		}
		if _, busy := c.idsInUse[c.nextMsgID]; !busy {
			id = c.nextMsgID
			c.idsInUse[id] = struct{}{}
			return id, func() {
				c.mu.Lock()
				delete(c.idsInUse, id)
				c.mu.Unlock()
			}, nil
		}
	}
	return 0, nil, errors.New("all message IDs in use")
}

// register makes the reader hand messages matching keys to the returned
// waiter, until unregister.
func (c *Client) register(keys ...waitKey) (*waiter, error) {
	w := &waiter{keys: keys, ch: make(chan Message, 4), fail: make(chan error, 1)}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		if _, dup := c.waiters[k]; dup {
			return nil, fmt.Errorf("already waiting for %s %d", k.t, k.id)
		}
	}
	for _, k := range keys {
		c.waiters[k] = w
	}
	return w, nil
}

func (c *Client) unregister(w *waiter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range w.keys {
		if c.waiters[k] == w {
			delete(c.waiters, k)
		}
	}
}

// exchange sends build(false), then build(true) after every RetryInterval
// without an answer, at most MaxRetries times, and returns the first
// message matching one of keys. MQTT-SN 1.2 §6.13.
func (c *Client) exchange(ctx context.Context, keys []waitKey, build func(retry bool) Message) (Message, error) {
	if err := c.checkClosed(); err != nil {
		return nil, err
	}
	w, err := c.register(keys...)
	if err != nil {
		return nil, err
	}
	defer c.unregister(w)
	timer := time.NewTimer(c.retry)
	defer timer.Stop()
	for attempt := 0; ; attempt++ {
		if err := refused(c.send(build(attempt > 0))); err != nil {
			return nil, err
		}
		timer.Reset(c.retry)
		select {
		case m := <-w.ch:
			return m, nil
		case err := <-w.fail:
			return nil, err
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.closed:
			return nil, ErrClosed
		case <-timer.C:
		}
		if attempt >= c.retries {
			return nil, ErrNoResponse
		}
	}
}

func (c *Client) checkClosed() error {
	select {
	case <-c.closed:
		return ErrClosed
	default:
		return nil
	}
}

// send encodes and writes one message.
func (c *Client) send(m Message) error {
	b, err := Append(make([]byte, 0, 64), m)
	if err != nil {
		return err
	}
	c.lastSend.Store(time.Now().UnixNano())
	if _, err := c.conn.Write(b); err != nil {
		if errors.Is(err, net.ErrClosed) {
			return ErrClosed
		}
		return err
	}
	return nil
}

// errRefused is what an exchange returns when the socket reports ICMP port
// unreachable: ErrRefused, and the system's error beneath it.
var errRefused = fmt.Errorf("%w (%w)", ErrRefused, syscall.ECONNREFUSED)

// refused turns the ICMP "port unreachable" that a connected UDP socket
// reports on a write (for an earlier datagram) into errRefused.
func refused(err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return errRefused
	}
	return err
}

// ignoreRefused drops the ICMP "port unreachable" a connected UDP socket
// reports for an earlier datagram, where nobody waits for an answer (QoS 0
// and -1 publishes): like a lost datagram.
func ignoreRefused(err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil
	}
	return err
}

// failWaiters ends every exchange in flight with err: the socket reported the
// gateway's port unreachable, so no answer will come (MQTT-SN 1.2 §6.13's
// retransmissions are for lost datagrams, not for a gateway that is not
// there). An exchange started later sends again and learns it anew.
func (c *Client) failWaiters(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.waiters {
		select {
		case w.fail <- err:
		default: // a waiter under several keys, told already
		}
	}
}

func (c *Client) setState(s connState) {
	c.mu.Lock()
	c.state = s
	c.mu.Unlock()
}

// remember records a topic name ↔ id registration (§6.5).
func (c *Client) remember(topic string, id uint16) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.topicNames[id]; ok && old != topic {
		delete(c.topicIDs, old)
	}
	c.topicIDs[topic] = id
	c.topicNames[id] = topic
}

// forget drops a registered id the gateway no longer knows.
func (c *Client) forget(id uint16) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if name, ok := c.topicNames[id]; ok {
		delete(c.topicIDs, name)
		delete(c.topicNames, id)
	}
}

// ceilSeconds converts d to whole seconds for a Duration field, rounding up
// and saturating at 65535.
func ceilSeconds(d time.Duration) uint16 {
	if d <= 0 {
		return 0
	}
	s := (d + time.Second - 1) / time.Second
	if s > 0xFFFF {
		return 0xFFFF
	}
	return uint16(s)
}

// --- the reader goroutine ---

// read is the client's only goroutine: it receives and handles datagrams and
// sends the keep-alive PINGREQ when a read deadline expires. It exits when
// Close closes the socket.
func (c *Client) read() {
	defer close(c.done)
	buf := make([]byte, MaxLength+1)
	for {
		_ = c.conn.SetReadDeadline(c.nextPing())
		n, err := c.conn.Read(buf)
		if err != nil {
			select {
			case <-c.closed:
				return
			default:
			}
			var ne net.Error
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
				c.keepaliveTick()
			case errors.Is(err, net.ErrClosed), errors.Is(err, io.EOF):
				return
			case errors.Is(err, syscall.ECONNREFUSED):
				// ICMP port unreachable for a datagram we sent: nothing
				// listens at the gateway's address. Linux reports it
				// once, on this read (or on the next write).
				c.failWaiters(errRefused)
			default:
				// ICMP errors and the like: do not spin on them.
				select {
				case <-c.closed:
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
			continue
		}
		m, err := Decode(buf[:n])
		if err != nil {
			c.dropped.Add(1)
			continue
		}
		c.handle(m)
	}
}

// nextPing is the read deadline: when the keep-alive PINGREQ is due, or none
// unless the client is active. MQTT-SN 1.2 §6.11.
func (c *Client) nextPing() time.Time {
	if c.keepalive <= 0 {
		return time.Time{}
	}
	c.mu.Lock()
	active := c.state == stateActive
	c.mu.Unlock()
	if !active {
		return time.Time{}
	}
	return time.Unix(0, c.lastSend.Load()).Add(c.keepalive)
}

func (c *Client) keepaliveTick() {
	due := c.nextPing()
	if due.IsZero() || time.Now().Before(due) {
		return
	}
	_ = c.send(&Pingreq{})
}

// handle acts on one message from the gateway.
func (c *Client) handle(m Message) {
	switch m := m.(type) {
	case *Publish:
		c.handlePublish(m)
	case *Pubrel: // §6.10: the gateway releases a QoS 2 message
		c.mu.Lock()
		delete(c.inboundQ2, m.MsgID)
		c.mu.Unlock()
		_ = c.send(&Pubcomp{MsgID: m.MsgID})
	case *Register: // §6.5: the gateway names a topic before publishing on it
		c.remember(m.TopicName, m.TopicID)
		_ = c.send(&Regack{TopicID: m.TopicID, MsgID: m.MsgID, ReturnCode: Accepted})
	case *Pingreq: // §6.11: the gateway checks on us
		_ = c.send(&Pingresp{})
	case *Connack:
		if m.ReturnCode == Accepted {
			c.setState(stateActive)
		} else {
			c.setState(stateDisconnected)
		}
		c.deliver(m)
	case *Disconnect:
		if !c.deliver(m) {
			// Unsolicited: the gateway ended the connection (§6.12).
			c.setState(stateDisconnected)
		}
	case *Suback:
		if m.ReturnCode == Accepted && m.TopicID != 0 {
			c.mu.Lock()
			filter, ok := c.subscribing[m.MsgID]
			c.mu.Unlock()
			if ok {
				c.remember(filter, m.TopicID)
			}
		}
		c.deliver(m)
	case *Puback:
		if !c.deliver(m) && m.ReturnCode == InvalidTopicID {
			// Rejection of a QoS 0 PUBLISH: register again next time.
			c.forget(m.TopicID)
		}
	default:
		c.deliver(m)
	}
}

// deliver hands an answer to the method waiting for it and reports whether
// there was one.
func (c *Client) deliver(m Message) bool {
	k := waitKey{t: m.Type()}
	switch m := m.(type) {
	case *Regack:
		k.id = m.MsgID
	case *Puback:
		k.id = m.MsgID
	case *Pubrec:
		k.id = m.MsgID
	case *Pubcomp:
		k.id = m.MsgID
	case *Suback:
		k.id = m.MsgID
	case *Unsuback:
		k.id = m.MsgID
	}
	c.mu.Lock()
	w := c.waiters[k]
	c.mu.Unlock()
	if w == nil {
		return false
	}
	select {
	case w.ch <- m:
	default: // duplicates of an answer already queued
	}
	return true
}

// handlePublish delivers a PUBLISH from the gateway and acknowledges it.
// MQTT-SN 1.2 §6.10.
func (c *Client) handlePublish(p *Publish) {
	var topic string
	switch p.Flags.TopicIDType {
	case TopicNormal:
		c.mu.Lock()
		name, ok := c.topicNames[p.TopicID]
		c.mu.Unlock()
		if !ok {
			_ = c.send(&Puback{TopicID: p.TopicID, MsgID: p.MsgID, ReturnCode: InvalidTopicID})
			return
		}
		topic = name
	case TopicPredefined:
		topic = c.predefIDs[p.TopicID]
	case TopicShort:
		topic = ShortTopicName(p.TopicID)
	}
	if p.Flags.QoS == QoS2 {
		c.mu.Lock()
		_, dup := c.inboundQ2[p.MsgID]
		c.inboundQ2[p.MsgID] = struct{}{}
		c.mu.Unlock()
		if !dup {
			c.onMessage(topic, p)
		}
		_ = c.send(&Pubrec{MsgID: p.MsgID})
		return
	}
	c.onMessage(topic, p)
	if p.Flags.QoS == QoS1 {
		_ = c.send(&Puback{TopicID: p.TopicID, MsgID: p.MsgID, ReturnCode: Accepted})
	}
}

// onMessage calls OnMessage with a copy of p that does not alias the read
// buffer.
func (c *Client) onMessage(topic string, p *Publish) {
	if c.opts.OnMessage == nil {
		return
	}
	cp := *p
	cp.Data = bytes.Clone(p.Data)
	c.opts.OnMessage(topic, p.TopicID, p.Flags.TopicIDType, &cp)
}
