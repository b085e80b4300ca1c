package gateway

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/auth"
	"github.com/mqttgw/mqttgw/mapping"
	"github.com/mqttgw/mqttgw/proxy"
	"github.com/mqttgw/mqttgw/session"
)

// sessionCreated is the registry's Created hook: a device's first contact, or
// its return after it was lost. It gives the session its class (keepalive and
// fallback will) and publishes the class's birth. It runs on the engine's
// goroutine that touched the session, and only enqueues.
func (g *Gateway) sessionCreated(s *session.Session) {
	if g.fleetCreated(s) {
		return // in a fleet the birth waits for the device's record (fleetsessions.go)
	}
	c, vars := g.applyClass(s)
	if c == nil {
		return
	}
	m, ok, err := c.Birth(vars)
	switch {
	case err != nil:
		g.log.Warn("class birth not usable for this device: not published", zap.String("class", c.Name), zapListener(s.Key.Listener), zap.String("device", s.Key.Device), zap.Error(err))
	case ok:
		if g.proxy.Enqueue(proxy.Message{Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain}) == nil {
			g.metrics.Counter("mqttgw_births_published_total", "Birth messages published on a device's first contact or return.", "listener", s.Key.Listener).Inc()
		}
	}
}

// sessionRestored is the registry's Restored hook: a session kept before (a
// restart, another instance of the fleet) gets its class again from the
// rules in force, and no birth.
func (g *Gateway) sessionRestored(s *session.Session) { g.applyClass(s) }

// applyClass gives s its class from the rules in force: its name, fallback
// will and keepalive (a session no class matches has none). It is the part of
// the Created hook a restored session gets again (sessionstore.go): not the
// birth, which the device had on first contact.
func (g *Gateway) applyClass(s *session.Session) (*mapping.Class, mapping.DeviceVars) {
	c := g.rules().Class(s.Key.Listener, s.Key.Device)
	vars := mapping.DeviceVars{Device: s.Key.Device, Listener: s.Key.Listener, Addr: s.Addr().String()}
	if c == nil {
		s.SetClass("", nil)
		return nil, vars
	}
	var will *session.Message
	if m, ok, err := c.Will(vars); err != nil {
		g.log.Warn("class will not usable for this device: no will", zap.String("class", c.Name), zapListener(s.Key.Listener), zap.String("device", s.Key.Device), zap.Error(err))
	} else if ok {
		will = &session.Message{Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain}
	}
	s.SetClass(c.Name, will)
	if c.Keepalive > 0 {
		s.SetKeepalive(c.Keepalive)
	}
	return c, vars
}

// sessionLost is the driver's step for a session silent for 1.5 keepalives: its
// will (the device's own, mapped like its publishes, else its class's) goes out
// exactly once.
func (g *Gateway) sessionLost(s *session.Session) {
	g.metrics.Counter("mqttgw_sessions_lost_total", "Sessions lost after 1.5 keepalives of silence.", "listener", s.Key.Listener).Inc()
	log := g.log.With(zapListener(s.Key.Listener), zap.String("device", s.Key.Device))
	log.Info("device lost: no traffic for 1.5 keepalives", zap.Duration("keepalive", s.Keepalive()))
	w, own := s.Will()
	if w == nil {
		return
	}
	topic := w.Topic
	if own && g.isTransparent(s.Key.Listener) {
		// The device's own broker connection carries its will: the engine
		// drops it without DISCONNECT and the broker publishes the will.
		return
	}
	if own {
		b := g.brokers[s.Key.Listener]
		if b == nil {
			return
		}
		var err error
		if topic, err = b.BrokerTopic(s.Key.Device, w.Topic); err != nil {
			log.Warn("will topic cannot be mapped to a broker topic: no will", zap.Error(err))
			return
		}
		// The device chose this topic: it may not write through its will what it
		// may not publish (a class's will is the operator's).
		if !g.acl.allowed(s.Key.Listener, s.Key.Device, topic, auth.Write) {
			return
		}
	}
	if g.proxy.Enqueue(proxy.Message{Topic: topic, Payload: w.Payload, QoS: w.QoS, Retain: w.Retain}) == nil {
		g.metrics.Counter("mqttgw_wills_published_total", "Wills published for sessions lost after 1.5 keepalives of silence.", "listener", s.Key.Listener).Inc()
	}
}

// sessionGauges exports the sessions by listener and state.
func (g *Gateway) sessionGauges() {
	for _, lc := range g.cfg.Listeners {
		for _, st := range []session.State{session.StateActive, session.StateAsleep, session.StateLost} {
			g.metrics.GaugeFunc("mqttgw_sessions", "Device sessions, by listener and state.", func() float64 {
				return float64(g.sessions.Count(lc.Name, st))
			}, "listener", lc.Name, "state", st.String())
		}
	}
}

// Device is one entry of GET /devices. A device of another instance of the
// fleet (State "remote", fleetview.go) has no address, times or class: its
// session is in that instance.
type Device struct {
	Listener        string    `json:"listener"`
	Protocol        string    `json:"protocol"`
	Device          string    `json:"device"`
	Class           string    `json:"class,omitempty"`
	Addr            string    `json:"addr,omitempty"`
	FirstSeen       time.Time `json:"first_seen,omitzero"`
	LastSeen        time.Time `json:"last_seen,omitzero"`
	State           string    `json:"state"`
	QueuedDownlinks int       `json:"queued_downlinks"`
	// With [cluster]: the instance (gateway.id) serving the device, and
	// whether its live key is there (absent when not read: ?scope=local).
	Owner      string `json:"owner,omitempty"`
	OwnerAlive *bool  `json:"owner_alive,omitempty"`
}

// Devices lists this instance's sessions, sorted by listener and device;
// empty listener or state filters nothing. With [cluster] each is owned by
// this instance; GET /devices adds the fleet's view (fleetview.go).
func (g *Gateway) Devices(listener, state string) []Device {
	out := []Device{}
	owner := ""
	if g.fleetStore() != nil {
		owner = g.cfg.Gateway.ID
	}
	g.sessions.Range(func(s *session.Session) bool {
		in := s.Info()
		if (listener == "" || in.Listener == listener) && (state == "" || in.State.String() == state) {
			out = append(out, Device{Listener: in.Listener, Protocol: in.Protocol, Device: in.Device, Class: in.Class,
				Addr: in.Addr.String(), FirstSeen: in.FirstSeen.UTC(), LastSeen: in.LastSeen.UTC(), State: in.State.String(), QueuedDownlinks: in.Queued,
				Owner: owner})
		}
		return true
	})
	slices.SortFunc(out, func(a, b Device) int {
		if c := strings.Compare(a.Listener, b.Listener); c != 0 {
			return c
		}
		return strings.Compare(a.Device, b.Device)
	})
	return out
}

// serveDevices is GET /devices[?listener=NAME][&state=STATE], and with
// [cluster] [&owner=ID][&scope=local|fleet]: STATE is active, asleep or
// lost, and with [cluster] also remote or idle. When the fleet's owner keys
// cannot be read, the answer is this instance's devices, with the reason in
// the header Mqttgw-Fleet-Error.
func (g *Gateway) serveDevices(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	dq := deviceQuery{listener: q.Get("listener"), state: q.Get("state"), owner: q.Get("owner")}
	clustered := g.fleetStore() != nil
	if _, ok := session.ParseState(dq.state); dq.state != "" && !ok {
		if !clustered {
			http.Error(w, "state: want active, asleep or lost", http.StatusBadRequest)
			return
		}
		if dq.state != stateRemote && dq.state != stateIdle {
			http.Error(w, "state: want active, asleep, lost, remote or idle", http.StatusBadRequest)
			return
		}
	}
	switch scope := q.Get("scope"); {
	case !clustered && dq.owner != "":
		http.Error(w, "owner: this gateway has no [cluster]", http.StatusBadRequest)
		return
	case scope == "local":
		dq.local = true
	case scope != "" && scope != "fleet":
		http.Error(w, "scope: want local or fleet", http.StatusBadRequest)
		return
	}
	devs, _, err := g.deviceList(r.Context(), dq)
	if err != nil {
		w.Header().Set("Mqttgw-Fleet-Error", err.Error())
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(devs)
}

func zapListener(name string) zap.Field { return zap.String("listener", name) }
