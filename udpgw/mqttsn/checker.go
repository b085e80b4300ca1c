package mqttsn

// PublishChecker is an optional interface of the udpgw.Broker in udpgw.Env.
// CheckPublish reports, without publishing, whether device may publish to
// topic (in the device's topic space, as in Broker.Publish): nil, or an error
// wrapping udpgw.ErrForbidden (the ACL denies it) or udpgw.ErrBadTopic (the
// listener's topic rules or MQTT refuse the name).
//
// The engine asks it when a client REGISTERs a topic name, so that a topic the
// client may never publish to gets no topic id: REGACK "rejected: not
// supported" (0x03) for a forbidden name, "rejected: invalid topic ID" (0x02)
// for a bad one (MQTT-SN 1.2 §5.4.11, §6.5). It is called with Engine.mu held:
// it must not block, do network I/O or call back into the engine (looking up
// the registry and logging, rate-limited, are fine). The PUBLISH that follows
// is still checked by Broker.Publish (the ACL may have changed meanwhile). A
// Broker without it lets every valid REGISTER through.
type PublishChecker interface {
	CheckPublish(device, topic string) error
}
