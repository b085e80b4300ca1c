package proxy

import "github.com/eclipse/paho.mqtt.golang/packets"

// noStore is a paho Store that keeps nothing. With a clean session paho still
// resends its stored publishes after every reconnect (client.resume), marking them
// DUP while its writer may hold the same packet — a data race in paho v1.5.1 — and
// duplicating what the gateway's own queue redelivers. The queue owns redelivery,
// so paho gets no store: a publish in flight when the connection drops simply
// times out and goes back into the queue.
type noStore struct{}

func (noStore) Open()                             {}
func (noStore) Put(string, packets.ControlPacket) {}
func (noStore) Get(string) packets.ControlPacket  { return nil }
func (noStore) All() []string                     { return nil }
func (noStore) Del(string)                        {}
func (noStore) Close()                            {}
func (noStore) Reset()                            {}
