package mqttsn

import (
	"sync"
	"testing"

	mqttsn "github.com/mqttgw/mqttgw/mqttsn"
	"github.com/mqttgw/mqttgw/store"
)

// BenchmarkPublishQoS2 measures a whole QoS 2 exchange (PUBLISH, PUBREC,
// PUBREL, PUBCOMP) over loopback UDP with a broker that acknowledges at once,
// 50 persistent clients with one exchange each in flight: in memory, and
// with a store (bbolt in a temporary directory, fsync on, the default commit
// interval), where PUBREC and PUBCOMP wait for the commit of the client's
// record (persist.go). The difference is the cost of durable QoS 2.
func BenchmarkPublishQoS2(b *testing.B) {
	for _, stored := range []bool{false, true} {
		name := "memory"
		if stored {
			name = "store"
		}
		b.Run(name, func(b *testing.B) {
			var tune func(*Options)
			if stored {
				st, err := store.Open(b.TempDir(), store.Options{})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { st.Close() })
				tune = func(o *Options) { o.State = st.State() }
			}
			te := startEngine(b, tune)
			devs, ids := benchClients(b, te, false)
			var wg sync.WaitGroup
			per := b.N/len(devs) + 1
			b.ResetTimer()
			for i, d := range devs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, 64)
					for n := range per {
						id := uint16(n%60000 + 1)
						pub, _ := mqttsn.Append(nil, &mqttsn.Publish{Flags: mqttsn.Flags{QoS: 2}, TopicID: ids[i], MsgID: id, Data: []byte("0123456789abcdef0123456789abcdef")})
						rel, _ := mqttsn.Append(nil, &mqttsn.Pubrel{MsgID: id})
						for _, m := range [][]byte{pub, rel} {
							if _, err := d.c.Write(m); err != nil {
								return
							}
							if _, err := d.c.Read(buf); err != nil {
								return
							}
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(per*len(devs))/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
