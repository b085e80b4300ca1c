package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/session"
	"github.com/mqttgw/mqttgw/store"
	"github.com/mqttgw/mqttgw/store/natsstore"
)

// The fleet's view of its devices (issue 13), for GET /devices and the status
// page: with [cluster], each device's owner instance from the owner keys in
// the fleet's JetStream store (store/natsstore/owner.go), and the instances
// alive (their live keys). The local registry says how this instance's own
// devices are doing; the owner keys say which instance serves every other
// one, with no detail (its registry is in another process).
//
// One pass over the owner keys serves every request for fleetFresh; at most
// one pass is under way at a time, on a goroutine of its own (started by the
// request that needs it, ended by the pass, which the store's Close ends),
// so that a slow or unreachable NATS delays a request by fleetWait at most:
// it then gets this instance's devices and the reason the others are
// missing.

// Device states of the fleet's view, beside the registry's.
const (
	// stateRemote: another instance owns the device; its liveness is there.
	stateRemote = "remote"
	// stateIdle: this instance owns the device's key but holds no session
	// for it: the client disconnected, or this instance restarted and it
	// has not connected since.
	stateIdle = "idle"
)

const (
	// fleetFresh is how long one pass over the owner keys answers requests.
	fleetFresh = time.Second
	// fleetWait bounds a request's wait for a pass.
	fleetWait = 5 * time.Second
)

// errFleetSlow is a request's answer when the pass it waits for takes
// longer than fleetWait.
var errFleetSlow = errors.New("owner keys not read within " + fleetWait.String())

// fleetSnapshot is one pass: every owner key and the instances alive.
type fleetSnapshot struct {
	owners map[session.Key]string // device → the instance of its owner key
	alive  map[string]bool        // instances whose live key is there
	at     time.Time              // when the pass ended
}

// fleetPass is a pass under way or done: done is closed once snap or err,
// and at, are set.
type fleetPass struct {
	done chan struct{}
	snap *fleetSnapshot
	err  error
	at   time.Time // when it ended
}

// fleetCache holds the last pass for fleetFresh. It lives in statusState,
// which every Gateway has.
type fleetCache struct {
	// mu guards the fields below; a leaf, never held across a request.
	mu      sync.Mutex
	last    *fleetPass // the last pass begun, done or not; nil before the first
	lastErr string     // the last failed pass's error, logged once
}

// fleetView returns a pass at most fleetFresh old, beginning one when there
// is none; it waits for it until ctx ends or fleetWait has passed.
func (g *Gateway) fleetView(ctx context.Context) (*fleetSnapshot, error) {
	st := g.fleetStore()
	if st == nil {
		return nil, errors.New("gateway: fleet view: no [cluster]")
	}
	c := &g.status.fleet
	c.mu.Lock()
	p := c.last
	if p == nil || p.stale() {
		p = &fleetPass{done: make(chan struct{})}
		c.last = p
		go g.runFleetPass(st, p)
	}
	c.mu.Unlock()
	t := time.NewTimer(fleetWait)
	defer t.Stop()
	select {
	case <-p.done:
		return p.snap, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, errFleetSlow
	}
}

// stale reports whether p is over and older than fleetFresh (a failure
// too: a NATS in trouble gets one pass a second at most).
func (p *fleetPass) stale() bool {
	select {
	case <-p.done:
		return time.Since(p.at) >= fleetFresh
	default:
		return false // under way: wait for it
	}
}

// runFleetPass reads the owner keys and the live keys into p. It needs no
// stopping: the store's Close ends its reads (Close waits for those under
// way, and later ones fail at once).
func (g *Gateway) runFleetPass(st *natsstore.Store, p *fleetPass) {
	snap := &fleetSnapshot{owners: map[session.Key]string{}, alive: map[string]bool{}}
	err := st.RangeOwners(func(key, instance string, _ uint64) bool {
		// The owner key of a device is its record's: listener NUL device.
		if l, d, ok := strings.Cut(key, "\x00"); ok {
			snap.owners[session.Key{Listener: l, Device: d}] = instance
		}
		return true
	})
	if err == nil {
		var alive []string
		alive, err = st.Instances()
		for _, in := range alive {
			snap.alive[in] = true
		}
	}
	p.at = time.Now()
	snap.at = p.at
	if err != nil {
		p.err = fmt.Errorf("gateway: fleet view: %w", err)
	} else {
		p.snap = snap
	}
	if !errors.Is(err, store.ErrClosed) { // shutting down: nothing to say
		g.logFleetPass(err)
	}
	close(p.done)
}

// logFleetPass logs a pass's failure when it is not the last one's, and
// the first success after failures.
func (g *Gateway) logFleetPass(err error) {
	c := &g.status.fleet
	c.mu.Lock()
	prev := c.lastErr
	c.lastErr = ""
	if err != nil {
		c.lastErr = err.Error()
	}
	c.mu.Unlock()
	switch {
	case err != nil && err.Error() != prev:
		g.log.Warn("fleet view: owner keys not read: /devices and the status page show this instance's devices only", zap.Error(err))
	case err == nil && prev != "":
		g.log.Info("fleet view: owner keys read again")
	}
}

// deviceQuery filters the device list; empty fields filter nothing.
type deviceQuery struct {
	listener, state, owner string
	local                  bool // this instance's registry only, no pass
}

// deviceList is GET /devices: with [cluster] the fleet's view (unless
// q.local), else the registry; snap is the pass it comes from. With
// [cluster] and a failed pass, it is this instance's devices and err says
// why the others are missing.
func (g *Gateway) deviceList(ctx context.Context, q deviceQuery) (_ []Device, snap *fleetSnapshot, err error) {
	devs := g.Devices(q.listener, "")
	if g.fleetStore() != nil && !q.local {
		if snap, err = g.fleetView(ctx); err == nil {
			devs = g.mergeFleet(devs, snap, q.listener)
		}
	}
	return filterDevices(devs, q), snap, err
}

// mergeFleet adds the owner keys of snap to devs (the registry's, of
// listener or all): a device whose owner key names another instance is that
// one's (a session left here is the one it took the device from, which is
// letting it go), and the owner keys of devices not here are listed with
// their owners.
func (g *Gateway) mergeFleet(devs []Device, snap *fleetSnapshot, listener string) []Device {
	self := g.cfg.Gateway.ID
	here := make(map[session.Key]bool, len(devs))
	out := devs[:0]
	for _, d := range devs {
		k := session.Key{Listener: d.Listener, Device: d.Device}
		here[k] = true
		if o, ok := snap.owners[k]; ok && o != self {
			out = append(out, g.ownedDevice(k, o, snap))
			continue
		}
		d.Owner, d.OwnerAlive = self, alivePtr(snap.alive[self])
		out = append(out, d)
	}
	for k, o := range snap.owners {
		if !here[k] && (listener == "" || k.Listener == listener) {
			out = append(out, g.ownedDevice(k, o, snap))
		}
	}
	sortDevices(out)
	return out
}

// ownedDevice is the entry of a device known by its owner key alone.
func (g *Gateway) ownedDevice(k session.Key, owner string, snap *fleetSnapshot) Device {
	d := Device{Listener: k.Listener, Device: k.Device, Owner: owner, OwnerAlive: alivePtr(snap.alive[owner]), State: stateRemote}
	if owner == g.cfg.Gateway.ID {
		d.State = stateIdle
	}
	for _, lc := range g.cfg.Listeners {
		if lc.Name == k.Listener {
			d.Protocol = lc.Type // the fleet's instances share their listeners
		}
	}
	return d
}

// alivePtr is the owner_alive field: set, whatever its value.
func alivePtr(b bool) *bool { return &b }

func filterDevices(devs []Device, q deviceQuery) []Device {
	if q.state == "" && q.owner == "" {
		return devs
	}
	return slices.DeleteFunc(devs, func(d Device) bool {
		return q.state != "" && d.State != q.state || q.owner != "" && d.Owner != q.owner
	})
}

func sortDevices(devs []Device) {
	slices.SortFunc(devs, func(a, b Device) int {
		if c := strings.Compare(a.Listener, b.Listener); c != 0 {
			return c
		}
		return strings.Compare(a.Device, b.Device)
	})
}

// FleetStatus is the fleet section of GET /status.json, with [cluster].
type FleetStatus struct {
	Name     string `json:"name"`     // [cluster] name
	Instance string `json:"instance"` // this one's gateway.id
	// Instances are those alive and those owning devices, sorted by id.
	Instances []FleetInstance `json:"instances"`
	// Devices is the length of this instance's GET /devices.
	Devices int       `json:"devices"`
	AsOf    time.Time `json:"as_of,omitzero"` // when the owner keys were read
	// Error says why the owner keys could not be read: the counts are then
	// this instance's alone.
	Error string `json:"error,omitempty"`
}

// FleetInstance is one instance's line of the fleet section.
type FleetInstance struct {
	ID    string `json:"id"`
	Alive bool   `json:"alive"`          // its live key is there
	Self  bool   `json:"self,omitempty"` // this instance
	// Devices counts the devices owned by the instance in GET /devices.
	Devices int `json:"devices"`
}

// fleetStatus is the fleet section for devs, deviceList's answer from snap
// or with listErr; nil without [cluster].
func (g *Gateway) fleetStatus(devs []Device, snap *fleetSnapshot, listErr error) *FleetStatus {
	if g.fleetStore() == nil {
		return nil
	}
	self := g.cfg.Gateway.ID
	fs := &FleetStatus{Name: g.cfg.Cluster.Name, Instance: self, Devices: len(devs)}
	alive := map[string]bool{}
	switch {
	case listErr != nil:
		fs.Error = listErr.Error()
	case snap != nil:
		alive, fs.AsOf = snap.alive, snap.at.UTC()
	}
	count := map[string]int{self: 0} // every instance alive has a line, with devices or not
	for in := range alive {
		count[in] = 0
	}
	for _, d := range devs {
		count[d.Owner]++
	}
	for in, n := range count {
		fs.Instances = append(fs.Instances, FleetInstance{ID: in, Alive: alive[in], Self: in == self, Devices: n})
	}
	slices.SortFunc(fs.Instances, func(a, b FleetInstance) int { return strings.Compare(a.ID, b.ID) })
	return fs
}
