package coap

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/udpgw"
)

// pathPrefix is the first Uri-Path segment of the publish-subscribe resources:
// /ps/{topic...} (draft-ietf-core-coap-pubsub, EMQX's CoAP gateway).
const pathPrefix = "ps"

// monitor sees every decoded message of a connection before go-coap queues it
// for the handler loop. It runs on the reader goroutine (plain CoAP: readUDP;
// DTLS: go-coap's per-session reader), so it never blocks: ACK and RST are
// consumed here, oversize and unauthenticated block-wise uploads are refused
// here, and a peer with maxInflight requests in flight has the next dropped.
func (l *Listener) monitor(cc *udpclient.Conn, r *pool.Message) (drop bool, err error) {
	st := stateOf(cc)
	if st == nil {
		return true, nil
	}
	switch r.Type() {
	case message.Acknowledgement, message.Reset:
		// The gateway sends no Confirmable message through go-coap, and no
		// request at all: every ACK or RST answers a notification.
		if r.Code() == codes.Empty {
			l.ackOrReset(st.addr, r.MessageID(), r.Type() == message.Reset)
		}
		return true, nil
	}
	if r.Code() == codes.Empty {
		// A Confirmable empty message is a CoAP ping: go-coap answers it with RST
		// (RFC 7252 §4.3). A Non-confirmable empty message means nothing (§4.1).
		return r.Type() != message.Confirmable, nil
	}
	if !isRequestCode(r.Code()) {
		return true, nil // a response to a request the gateway never sent
	}
	if len(st.prior) > 0 {
		if l.env.Now().After(st.priorUntil) {
			st.prior = nil // EXCHANGE_LIFETIME is over: no copy can come
		}
		for _, pr := range st.prior {
			if uint16(r.MessageID()) == pr.mid {
				// Answered before the source proved its address (RFC 7252 §4.5).
				if pr.resp != nil && r.Type() == message.Confirmable {
					_, _ = l.conn.WriteToUDPAddrPort(pr.resp, st.addr)
				}
				return true, nil
			}
		}
	}
	if code, opt, reject := l.rejectEarly(st, r); reject {
		l.reply(cc, r, code, opt...)
		return true, nil
	}
	ok, dup := st.admit(r.MessageID(), l.env.Now())
	if !ok && !dup {
		l.ctr.busy.Inc()
	}
	return !ok, nil
}

// rejectEarly decides, on the reader, to refuse a block-wise upload that would
// exceed MaxPayload (RFC 7959 §2.9.3: 4.13 with Size1) and the first block of
// an unauthenticated one (4.01), before go-coap buffers it; the caller answers
// with code and opt.
func (l *Listener) rejectEarly(st *connState, r *pool.Message) (code codes.Code, opt []message.Option, reject bool) {
	c := r.Code()
	if c != codes.POST && c != codes.PUT {
		return 0, nil, false
	}
	v, err := r.GetOptionUint32(message.Block1)
	if err != nil {
		return 0, nil, false
	}
	szx, num, more, err := blockwise.DecodeBlockOption(v)
	if err != nil {
		return 0, nil, false // go-coap answers 4.08
	}
	size, _ := r.BodySize()
	size += num * szx.Size()
	if s1, err := r.GetOptionUint32(message.Size1); err == nil && int64(s1) > size {
		size = int64(s1)
	}
	if size > int64(l.opts.MaxPayload) {
		return codes.RequestEntityTooLarge, []message.Option{{ID: message.Size1, Value: uintOption(uint32(l.opts.MaxPayload))}}, true
	}
	if num == 0 && more && !l.opts.AllowAnonymous && st.identity == "" && !hasQuery(r, "u", "username") {
		return codes.Unauthorized, nil, true
	}
	return 0, nil, false
}

// reply answers r directly from the reader: piggybacked for a Confirmable
// request, Non-confirmable otherwise (RFC 7252 §5.2). It carries no payload, so
// it is never larger than r (§11.3).
func (l *Listener) reply(cc *udpclient.Conn, r *pool.Message, code codes.Code, opts ...message.Option) {
	resp := cc.AcquireMessage(l.ctx)
	defer cc.ReleaseMessage(resp)
	resp.SetCode(code)
	resp.SetToken(r.Token())
	if r.Type() == message.Confirmable {
		resp.SetType(message.Acknowledgement)
		resp.SetMessageID(r.MessageID())
	} else {
		resp.SetType(message.NonConfirmable)
		resp.SetMessageID(cc.GetMessageID())
	}
	for _, o := range opts {
		resp.SetOptionBytes(o.ID, o.Value)
	}
	_ = cc.Session().WriteMessage(resp)
	l.ctr.response(r.Code(), code)
}

// response is what a request gets.
type response struct {
	code       codes.Code
	payload    []byte // nil: none
	diagnostic string // a short reason in an error's payload (RFC 7252 §5.5.2)
	observe    int64  // Observe option value; -1: none
	maxAge     int64  // Max-Age seconds; -1: none
	size1      int    // Size1 with 4.13; 0: none
	after      func() // runs once the response is written
	cancel     func() // runs instead of after when the response is not sent
	served     bool   // the request got past authentication to a device
	// proof: the request needs a proven address (the unproven path answers
	// 4.01 with an Echo option instead: needProof).
	proof bool
	// registered is the observation the request registered; dev is the
	// device the request was served for (numbering a Non-confirmable
	// answer, nextMID).
	registered *observation
	dev        *device
}

func answer(code codes.Code) response { return response{code: code, observe: -1, maxAge: -1} }

func answerWhy(code codes.Code, why string) response {
	r := answer(code)
	r.diagnostic = why
	return r
}

// handle is go-coap's handler: it runs on the connection's loop goroutine, one
// request at a time per peer, and may wait for the broker.
func (l *Listener) handle(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
	if !isRequest(r) {
		return
	}
	cc := w.Conn()
	st := stateOf(cc)
	if st == nil {
		return
	}
	res := l.serve(cc, st, r)
	if err := w.SetResponse(res.code, message.TextPlain, nil); err != nil {
		// The client asked for no response of this class (RFC 7967).
		if res.cancel != nil {
			res.cancel()
		}
		return
	}
	res.apply(w.Message())
	if res.after != nil && !responsewriter.AfterWrite(r.Context(), res.after) {
		res.after()
	}
	l.ctr.response(r.Code(), res.code)
}

// apply sets the options and payload of res on m, whose code, type, Message
// ID and token are set.
func (res *response) apply(m *pool.Message) {
	if res.observe >= 0 {
		m.SetObserve(uint32(res.observe))
	}
	if res.maxAge >= 0 {
		m.SetOptionUint32(message.MaxAge, uint32(res.maxAge))
	}
	if res.size1 > 0 {
		m.SetOptionUint32(message.Size1, uint32(res.size1))
	}
	switch {
	case res.payload != nil:
		m.SetBody(bytes.NewReader(res.payload))
	case res.diagnostic != "":
		m.SetContentFormat(message.TextPlain)
		m.SetBody(strings.NewReader(res.diagnostic))
	}
}

// serve decides the response to one request. cc is the request's go-coap
// connection, nil on the unproven path (unproven.go) and on the proven one
// (fast.go, st.proven).
func (l *Listener) serve(cc *udpclient.Conn, st *connState, r *pool.Message) response {
	unproven := cc == nil && !st.proven
	q := parseQuery(r)
	// Authentication comes first: an unauthenticated client learns nothing, not
	// even whether a path exists, and gets a bare code, never larger than its
	// request (RFC 7252 §11.3).
	key, cred, refused := l.identify(st, q)
	if refused != "" {
		if l.opts.Refused != nil {
			l.opts.Refused(st.addr, q.user, refused)
		}
		return answer(codes.Unauthorized)
	}
	method := r.Code()
	topic, found, why := l.topicOf(r, method == codes.POST || method == codes.PUT)
	if !found {
		return answer(codes.NotFound)
	}
	if why == "" {
		why = q.bad
	}
	if why != "" {
		return answerWhy(codes.BadRequest, why)
	}
	if method != codes.GET && method != codes.POST && method != codes.PUT {
		return answer(codes.MethodNotAllowed)
	}
	if key == "" {
		key = st.addr.String()
		// RFC 7641 §3.6 matches a deregistration by endpoint and token: a client
		// that named itself with c when it registered may leave it out when it
		// cancels (go-coap's client does), so a GET with Observe=1 from the
		// device's address and with its token is that device's.
		if obs, err := r.Observe(); err == nil && obs == 1 && method == codes.GET {
			if d := l.byAddress(st.addr); d != nil && d.observes(r.Token()) {
				key = d.key
			}
		}
	}
	var conn udpgw.Connection
	if l.connector != nil {
		conn = transparentConnection(st, q)
		if unproven {
			// The unproven path makes no broker connection: it uses the
			// device's, or asks for proof of the address first.
			if err := l.usable(key, conn); err != nil {
				return l.connectRefusal(st, q, key, err)
			}
		}
	}
	var res response
	if unproven && method == codes.GET && !r.HasOption(message.Observe) {
		// A plain read from a source that has not proven its address (the
		// unproven path): it leaves nothing behind, not even a session, so
		// that spoofed reads cost no state.
		res = l.get(&device{key: key}, r, topic, q)
		res.served = true
		return res
	}
	now := l.env.Now()
	var d *device
	for {
		d = l.lookup(key)
		ok, authorized := l.attach(d, cred, st.addr, cc, now)
		if !authorized {
			// Another credential first named this device: no takeover.
			return answer(codes.Unauthorized)
		}
		if ok {
			break
		}
	}
	if l.connector != nil {
		ctx, cancel := context.WithTimeout(l.ctx, l.opts.PublishTimeout)
		err := l.connect(ctx, d, conn, !unproven)
		cancel()
		if err != nil {
			return l.connectRefusal(st, q, key, err)
		}
	}
	if method == codes.GET {
		res = l.get(d, r, topic, q)
	} else {
		res = l.publish(d, r, topic, q)
	}
	res.served = true
	res.dev = d
	return res
}

// publish handles POST and PUT /ps/{topic}: one MQTT publish. A Confirmable
// request defaults to QoS 1 and a Non-confirmable one to QoS 0; 2.04 Changed
// comes only after the broker acknowledged a QoS >= 1 publish.
func (l *Listener) publish(d *device, r *pool.Message, topic string, q query) response {
	size, _ := r.BodySize()
	if size > int64(l.opts.MaxPayload) {
		res := answer(codes.RequestEntityTooLarge)
		res.size1 = l.opts.MaxPayload // RFC 7959 §4
		return res
	}
	body, err := r.ReadBody()
	if err != nil {
		return answerWhy(codes.BadRequest, "unreadable payload")
	}
	if body == nil {
		body = []byte{}
	}
	qos := byte(0)
	if r.Type() == message.Confirmable {
		qos = 1
	}
	if q.qos >= 0 {
		qos = byte(q.qos)
	}
	ctx, cancel := context.WithTimeout(l.ctx, l.opts.PublishTimeout)
	defer cancel()
	err = l.env.Broker.Publish(ctx, d.key, udpgw.Message{Topic: topic, Payload: body, QoS: qos, Retain: q.retain})
	if err != nil {
		return l.brokerError(d, "publish", topic, err)
	}
	return answer(codes.Changed)
}

// get handles GET /ps/{topic}: the retained or last value (2.05, 4.04 when none),
// and Observe registration (0) and deregistration (1) (RFC 7641 §3.1, §3.6).
func (l *Listener) get(d *device, r *pool.Message, topic string, q query) response {
	obs, err := r.Observe()
	hasObserve := err == nil
	wild := strings.ContainsAny(topic, "+#")
	if wild && (!hasObserve || obs != 0) {
		return answerWhy(codes.BadRequest, "wildcards only in an observation")
	}
	if hasObserve && obs == 0 {
		if wild && !l.opts.AllowWildcards {
			return answerWhy(codes.BadRequest, "wildcards are not allowed here")
		}
		qos := byte(0)
		if l.opts.NotifyCON {
			qos = 1
		}
		if q.qos >= 0 {
			qos = byte(q.qos)
		}
		ctx, cancel := context.WithTimeout(l.ctx, l.opts.PublishTimeout)
		defer cancel()
		o, refused, err := l.register(ctx, d, r.Token(), topic, qos)
		switch {
		case err != nil:
			return l.brokerError(d, "subscribe", topic, err)
		case refused:
			// RFC 7641 §4.1: a server unwilling to add an observer answers as
			// to a plain GET, without an Observe option.
			l.ctr.refused.Inc()
			if wild {
				return answerWhy(codes.ServiceUnavailable, "too many observers")
			}
		default:
			// Told it is registered only once its record is durable
			// (persist.go): a crash cannot forget it then.
			if err := l.awaitSaved(ctx, d, o); err != nil {
				l.endObservation(d, o, endStore, true)
				return l.brokerError(d, "subscribe", topic, err)
			}
			d.mu.Lock()
			seq, s := o.seq, d.sess
			d.mu.Unlock()
			res := answer(codes.Content)
			res.observe = int64(seq)
			res.maxAge = int64(l.maxAge(s))
			res.payload = []byte{}
			res.after = func() { l.arm(d, o) }
			res.cancel = func() { l.endObservation(d, o, endUnanswered, true) }
			res.registered = o
			return res
		}
	}
	if hasObserve && obs == 1 {
		d.mu.Lock()
		o := d.obsLocked(string(r.Token()))
		d.mu.Unlock()
		if o != nil && o.filter == topic {
			l.endObservation(d, o, endDeregister, true)
		}
	}
	ctx, cancel := context.WithTimeout(l.ctx, l.opts.PublishTimeout)
	defer cancel()
	m, ok, err := l.env.Broker.Retained(ctx, d.key, topic)
	switch {
	case err != nil:
		return l.brokerError(d, "read", topic, err)
	case !ok:
		return answer(codes.NotFound)
	case len(m.Payload) > l.opts.MaxPayload:
		return answerWhy(codes.InternalServerError, "value larger than max_payload")
	}
	res := answer(codes.Content)
	res.payload = m.Payload
	if res.payload == nil {
		res.payload = []byte{}
	}
	return res
}

// brokerError turns a Broker error into a CoAP code: 5.03 with Max-Age for an
// unreachable broker (the device retries then), 4.03 for the ACL, 4.00 for a
// topic MQTT cannot take.
func (l *Listener) brokerError(d *device, op, topic string, err error) response {
	var res response
	switch {
	case errors.Is(err, udpgw.ErrForbidden):
		res = answer(codes.Forbidden)
	case errors.Is(err, udpgw.ErrBadTopic):
		res = answerWhy(codes.BadRequest, "invalid topic")
	case errors.Is(err, udpgw.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		res = answer(codes.ServiceUnavailable)
		res.maxAge = int64(l.opts.RetryAfter / time.Second) // RFC 7252 §5.9.3.4
	default:
		res = answer(codes.InternalServerError)
	}
	if ce := l.log.Check(zap.DebugLevel, "broker refused"); ce != nil {
		ce.Write(zap.String("device", d.key), zap.String("op", op), zap.String("topic", topic), zap.Error(err))
	}
	return res
}

// identify names the device and checks its credentials: the DTLS PSK identity,
// else the query's u and p (or t) against the password file. key is "" when the
// caller should use the source address; refused says why the request gets 4.01
// ("" when it does not).
func (l *Listener) identify(st *connState, q query) (key, cred, refused string) {
	switch {
	case st.identity != "":
		return st.identity, "psk:" + st.identity, ""
	case q.user != "":
		pass := q.password
		if pass == "" {
			pass = q.token
		}
		if l.opts.CheckPassword != nil {
			if err := l.opts.CheckPassword(st.addr.Addr(), q.user, pass); err != nil {
				return "", "", err.Error()
			}
			cred = "user:" + q.user
		} else if !l.opts.AllowAnonymous {
			return "", "", "credentials given but no password file to check them"
		}
	case !l.opts.AllowAnonymous:
		return "", "", "no credentials and allow_anonymous is false"
	}
	return q.client, cred, ""
}

// query is the parsed Uri-Query of a request.
type query struct {
	client, user, password, token string
	qos                           int // -1: not given
	retain                        bool
	bad                           string // why the query is invalid; "" when valid
}

func parseQuery(r *pool.Message) query {
	q := query{qos: -1}
	for _, o := range r.Options() {
		if o.ID != message.URIQuery {
			continue
		}
		k, v, _ := strings.Cut(string(o.Value), "=")
		switch k {
		case "c", "clientid":
			q.client = v
			if err := checkClientID(v); err != "" {
				q.bad = err
			}
		case "u", "username":
			q.user = v
		case "p", "password":
			q.password = v
		case "t", "token":
			q.token = v
		case "qos":
			switch v {
			case "0", "1", "2":
				q.qos = int(v[0] - '0')
			default:
				q.bad = "qos must be 0, 1 or 2"
			}
		case "retain":
			switch v {
			case "", "1", "true":
				q.retain = true
			case "0", "false":
				q.retain = false
			default:
				q.bad = "retain must be true or false"
			}
		}
	}
	return q
}

// checkClientID refuses a client id that could be mistaken for another device's
// name: an address (anonymous devices are named by theirs), or one that would
// add topic levels or wildcards where the device name is used in a topic.
func checkClientID(id string) string {
	switch {
	case id == "":
		return "empty client id"
	case len(id) > 256:
		return "client id longer than 256 bytes"
	case strings.ContainsAny(id, "/+#\x00"):
		return "client id must not contain '/', '+', '#' or NUL"
	}
	if _, err := netip.ParseAddrPort(id); err == nil {
		return "client id must not be an address"
	}
	return ""
}

func hasQuery(r *pool.Message, keys ...string) bool {
	for _, o := range r.Options() {
		if o.ID != message.URIQuery {
			continue
		}
		k, _, _ := strings.Cut(string(o.Value), "=")
		for _, want := range keys {
			if k == want {
				return true
			}
		}
	}
	return false
}

// topicOf reads the topic of a request from its Uri-Path options (RFC 7252
// §6.4: one option per segment): /ps/{topic...}, or for a publish any path that
// one of the listener's topic rules matches (such as /d/{device}/{kind}). found
// is false for any other path; why explains a path that cannot be a topic.
func (l *Listener) topicOf(r *pool.Message, publish bool) (topic string, found bool, why string) {
	var b strings.Builder
	first, ps := true, false
	levels := 0 // topic levels written to b
	for _, o := range r.Options() {
		if o.ID != message.URIPath {
			continue
		}
		seg := string(o.Value)
		if first {
			first = false
			if seg == pathPrefix {
				ps = true
				continue
			}
		}
		if strings.Contains(seg, "/") {
			why = "a path segment holds '/'"
		}
		if levels > 0 {
			b.WriteByte('/')
		}
		b.WriteString(seg)
		levels++
	}
	topic = b.String()
	switch {
	case ps && levels > 0:
		return topic, true, why
	case !ps && levels > 0 && publish && why == "" && l.env.Broker.HasTopicRule(topic):
		return topic, true, ""
	}
	return "", false, ""
}

// isRequestCode reports a request method code, 0.01 to 0.31 (RFC 7252 §12.1.1).
func isRequestCode(c codes.Code) bool { return c >= 1 && c < 32 }

// uintOption encodes an unsigned option value in the fewest bytes (RFC 7252 §3.2).
func uintOption(v uint32) []byte {
	switch {
	case v == 0:
		return nil
	case v < 1<<8:
		return []byte{byte(v)}
	case v < 1<<16:
		return []byte{byte(v >> 8), byte(v)}
	case v < 1<<24:
		return []byte{byte(v >> 16), byte(v >> 8), byte(v)}
	}
	return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}
