package udpgw

import (
	"context"
	"errors"
)

// Message is one MQTT message as a device sees it: the topic is the device-side
// name, before the listener's mountpoint and topic rules are applied (uplink) and
// after they are undone (downlink).
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
}

var (
	// ErrUnavailable means the broker is not connected or did not acknowledge in
	// time: answer the device with the protocol's congestion code (MQTT-SN 0x01,
	// CoAP 5.03 with Max-Age) so it retries.
	ErrUnavailable = errors.New("broker unavailable")
	// ErrForbidden means the device may not publish or subscribe to that topic.
	ErrForbidden = errors.New("forbidden by ACL")
	// ErrBadTopic means the topic cannot be mapped to an MQTT topic (wildcards in a
	// publish, NUL, empty, or a topic rule rejected it).
	ErrBadTopic = errors.New("invalid topic")
)

// Broker is what a protocol engine needs of the upstream side. The gateway gives
// each listener its own Broker, which knows the listener's mountpoint and rules.
// All methods are safe for concurrent use.
type Broker interface {
	// Publish sends m on behalf of device. The listener's topic rules rewrite m.Topic
	// (else it passes unchanged) and its mountpoint prefixes it. For QoS >= 1 it
	// returns only after the broker acknowledged, so the engine can acknowledge the
	// device then; errors wrap ErrUnavailable, ErrForbidden or ErrBadTopic.
	Publish(ctx context.Context, device string, m Message) error
	// BrokerTopic is the broker-side topic a publish by device on topic goes to:
	// the listener's topic rules and mountpoint applied. It is pure (no I/O, no
	// locks), for wills, which the gateway publishes later from the session table.
	BrokerTopic(device, topic string) (string, error)
	// HasTopicRule reports whether one of the listener's topic rules matches topic,
	// e.g. for a CoAP path outside /ps/ that only a rule makes publishable.
	HasTopicRule(topic string) bool
	// Subscribe makes deliver receive every broker message matching filter (an MQTT
	// filter in the device's topic space) until Unsubscribe or UnsubscribeAll. It
	// returns the granted QoS. deliver runs on the broker's delivery goroutine: it
	// must not block (queue the message and return). One device subscribing twice to
	// the same filter replaces the first subscription.
	Subscribe(ctx context.Context, device, filter string, qos byte, deliver func(Message)) (granted byte, err error)
	// Unsubscribe ends one subscription of device.
	Unsubscribe(ctx context.Context, device, filter string) error
	// UnsubscribeAll ends every subscription of device (its session ended).
	UnsubscribeAll(device string)
	// Retained returns the retained or last message the gateway knows for topic,
	// for device to read; ok is false when there is none. Errors wrap
	// ErrUnavailable or ErrForbidden.
	Retained(ctx context.Context, device, topic string) (m Message, ok bool, err error)
}
