package proxy

import (
	"context"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// DefaultMaxInflightQoS2 is Mosquitto's default max_inflight_messages.
const DefaultMaxInflightQoS2 = 20

// qos2Window bounds the QoS 2 publishes in flight on one broker connection:
// sent and not yet completed by PUBCOMP. A broker keeps an incoming QoS 2
// message from PUBLISH to PUBREL, and takes only so many at once from one
// client: Mosquitto max_inflight_messages (20 by default). Beyond that it
// drops the message and still answers PUBREC, whose reason code 0x97 "quota
// exceeded" only an MQTT 5 client sees (MQTT 3.1.1 §3.5 has none): the
// publish looks acknowledged and is lost (eclipse/mosquitto#2876). A gateway
// relaying many devices' QoS 2 publishes over one connection reaches that at
// once, so it never sends more. QoS 1 needs no window: Mosquitto answers it
// with PUBACK at once and never holds it in flight.
//
// A slot is a value in the channel; it is freed when the publish's token is
// done or its connection is lost (a clean session: the broker forgets what was
// in flight, and the next connection gets a new window).
type qos2Window chan struct{}

// take waits for a slot of w, or until lost, ctx or stop; it reports whether
// it got one.
func (w qos2Window) take(ctx context.Context, lost, stop <-chan struct{}) (bool, error) {
	select {
	case w <- struct{}{}:
		return true, nil
	case <-lost:
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	case <-stop:
		return false, ErrClosed
	}
}

// freeWhenDone frees the slot taken for tok once tok is done or the
// connection it went out on is lost.
func (w qos2Window) freeWhenDone(tok paho.Token, lost <-chan struct{}) {
	go func() {
		select {
		case <-tok.Done():
		case <-lost:
		}
		<-w
	}()
}

// publishPaho hands m to paho. A QoS 2 message first waits for a slot of the
// current connection's window (qos2Window); without a connection it waits for
// one when wait is set, else fails with ErrUnavailable. ctx and Close end the
// wait (then the token is nil).
func (p *Proxy) publishPaho(ctx context.Context, m Message, wait bool) (paho.Token, error) {
	if m.QoS < 2 {
		return p.paho().Publish(m.Topic, m.QoS, m.Retain, m.Payload), nil
	}
	for {
		select {
		case <-p.stop:
			return nil, ErrClosed
		default:
		}
		p.mu.Lock()
		w, connected, lost := p.q2, p.connected, p.lost
		p.mu.Unlock()
		select {
		case <-connected:
		default:
			if !wait {
				return nil, ErrUnavailable
			}
		}
		select {
		case <-connected:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.stop:
			return nil, ErrClosed
		}
		ok, err := w.take(ctx, lost, p.stop)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue // that connection is gone: wait for the next one's window
		}
		tok := p.paho().Publish(m.Topic, m.QoS, m.Retain, m.Payload)
		w.freeWhenDone(tok, lost)
		return tok, nil
	}
}
