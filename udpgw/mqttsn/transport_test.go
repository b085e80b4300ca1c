package mqttsn

import (
	"fmt"
	"sync"
	"testing"
	"time"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
)

// TestUDPWritesTogether: answers composed at the same time by the reader
// (PINGRESPs to a burst of PINGREQs) and by the workers (PUBACKs) all
// arrive, each once, however the transport groups them into writes.
func TestUDPWritesTogether(t *testing.T) {
	te := startEngine(t, nil)
	const clients, each = 20, 50
	devs := make([]*device, clients)
	ids := make([]uint16, clients)
	for i := range devs {
		devs[i] = te.device(t)
		devs[i].connect(fmt.Sprintf("w%d", i), 600, true)
		ids[i] = devs[i].register(fmt.Sprintf("w/%d", i))
		devs[i].send(&mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: ids[i], MsgID: 1, Data: []byte("x")})
		recv[*mqttsn.Puback](devs[i]) // proves the address
	}
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range each { // a burst: nothing waits for its answer
				b, _ := mqttsn.Append(nil, &mqttsn.Publish{Flags: mqttsn.Flags{QoS: 1}, TopicID: ids[i], MsgID: uint16(n + 2), Data: []byte("y")})
				d.c.Write(b)
				p, _ := mqttsn.Append(nil, &mqttsn.Pingreq{})
				d.c.Write(p)
			}
			acked, pings := map[uint16]bool{}, 0
			buf := make([]byte, 64)
			d.c.SetReadDeadline(time.Now().Add(10 * time.Second))
			for len(acked) < each || pings < each {
				n, err := d.c.Read(buf)
				if err != nil {
					errs <- fmt.Errorf("client %d: %d PUBACKs and %d PINGRESPs of %d: %v", i, len(acked), pings, each, err)
					return
				}
				m, err := mqttsn.Decode(buf[:n])
				if err != nil {
					errs <- err
					return
				}
				switch m := m.(type) {
				case *mqttsn.Puback:
					if acked[m.MsgID] || m.MsgID < 2 || m.MsgID >= each+2 || m.ReturnCode != mqttsn.Accepted {
						errs <- fmt.Errorf("client %d: PUBACK %d (%v) again or unexpected", i, m.MsgID, m.ReturnCode)
						return
					}
					acked[m.MsgID] = true
				case *mqttsn.Pingresp:
					pings++
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
