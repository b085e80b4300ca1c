package gateway

import (
	"context"
	"embed"
	"encoding/json"
	"html/template"
	"io/fs"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mqttgw/mqttgw/session"
)

// The status page (GET / on the metrics listener) is read-only: the gateway's
// state, its listeners with their counters, the message rates of the last
// minutes and the device list. It is rendered on the server with html/template
// so it shows everything without JavaScript; status.js then polls
// /status.json and /devices to keep it current, draws the rate chart and
// filters the devices. Everything is embedded: no build step, no CDN, it works
// offline.
//
//go:embed status
var statusFiles embed.FS

var statusTemplate = template.Must(template.New("index.html").Funcs(template.FuncMap{
	"since": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return time.Since(t).Round(time.Second).String() + " ago"
	},
}).ParseFS(statusFiles, "status/index.html"))

// Status is GET /status.json.
type Status struct {
	Gateway   string           `json:"gateway"`
	Started   time.Time        `json:"started"`
	Now       time.Time        `json:"now"`
	Upstream  UpstreamStatus   `json:"upstream"`
	Listeners []ListenerStatus `json:"listeners"`
	// Rates are messages per second, oldest first, one point per rateEvery.
	Rates []RatePoint `json:"rates"`
	// Fleet is the fleet's instances and their devices, with [cluster]
	// (fleetview.go).
	Fleet *FleetStatus `json:"fleet,omitempty"`
}

// UpstreamStatus is the broker connection as the status page shows it.
type UpstreamStatus struct {
	URL       string    `json:"url"`
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since"`             // when Connected last changed (or the start)
	Problem   string    `json:"problem,omitempty"` // why the last attempt failed
}

// ListenerStatus is one listener's line of the status page.
type ListenerStatus struct {
	Name      string `json:"name"`
	Type      string `json:"type"`
	Addr      string `json:"addr"`
	Uplinks   uint64 `json:"uplinks"`
	Downlinks uint64 `json:"downlinks"`
	Active    int    `json:"active"`
	Asleep    int    `json:"asleep"`
	Lost      int    `json:"lost"`
}

// RatePoint is the message rate over one interval ending at T.
type RatePoint struct {
	T         time.Time `json:"t"`
	Uplinks   float64   `json:"uplinks"`
	Downlinks float64   `json:"downlinks"`
}

const (
	rateEvery  = 10 * time.Second
	ratePoints = 60 // ten minutes
)

// statusState is what the driver samples for the page: a ring of rate points.
type statusState struct {
	mu           sync.Mutex
	started      time.Time
	nextSample   time.Time
	lastUp       uint64
	lastDown     uint64
	lastSampleAt time.Time
	rates        []RatePoint // at most ratePoints, oldest first

	fleet fleetCache // the last pass over the fleet's owner keys; its own lock
}

// sampleStatus is the driver's status step at now: every rateEvery, one rate
// point.
func (g *Gateway) sampleStatus(now time.Time) {
	st := &g.status
	up, down := g.messageTotals()
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.started.IsZero() {
		st.started = now
		st.lastSampleAt, st.lastUp, st.lastDown, st.nextSample = now, up, down, now.Add(rateEvery)
		return
	}
	if now.Before(st.nextSample) {
		return
	}
	secs := now.Sub(st.lastSampleAt).Seconds()
	if secs > 0 {
		st.rates = append(st.rates, RatePoint{T: now.UTC(), Uplinks: float64(up-st.lastUp) / secs, Downlinks: float64(down-st.lastDown) / secs})
		if len(st.rates) > ratePoints {
			st.rates = append(st.rates[:0], st.rates[len(st.rates)-ratePoints:]...)
		}
	}
	st.lastSampleAt, st.lastUp, st.lastDown, st.nextSample = now, up, down, now.Add(rateEvery)
}

func (g *Gateway) messageTotals() (up, down uint64) {
	for _, b := range g.brokers {
		up += b.uplinks.Load()
		down += b.downlinks.Load()
	}
	return up, down
}

// Status is the gateway's state for the status page. With [cluster] it
// reads the fleet's owner keys (cached, bounded by fleetWait).
func (g *Gateway) Status() Status {
	if g.fleetStore() == nil {
		return g.localStatus()
	}
	s, _ := g.statusAndDevices(context.Background())
	return s
}

// statusAndDevices is Status with GET /devices's list, whose devices the
// fleet section counts.
func (g *Gateway) statusAndDevices(ctx context.Context) (Status, []Device) {
	s := g.localStatus()
	devs, snap, err := g.deviceList(ctx, deviceQuery{})
	s.Fleet = g.fleetStatus(devs, snap, err)
	return s, devs
}

// localStatus is Status without the fleet section.
func (g *Gateway) localStatus() Status {
	s := Status{Gateway: g.cfg.Gateway.ID, Now: time.Now().UTC()}
	st := &g.status
	st.mu.Lock()
	s.Started = st.started.UTC()
	s.Rates = append([]RatePoint{}, st.rates...)
	st.mu.Unlock()
	ps := g.proxy.State()
	s.Upstream = UpstreamStatus{URL: ps.URL, Connected: ps.Connected, Since: ps.Since.UTC(), Problem: ps.Problem}
	for _, lc := range g.cfg.Listeners {
		ls := ListenerStatus{Name: lc.Name, Type: lc.Type,
			Active: g.sessions.Count(lc.Name, session.StateActive),
			Asleep: g.sessions.Count(lc.Name, session.StateAsleep),
			Lost:   g.sessions.Count(lc.Name, session.StateLost)}
		if a := g.ListenerAddr(lc.Name); a != nil {
			ls.Addr = a.String()
		}
		if b := g.brokers[lc.Name]; b != nil {
			ls.Uplinks, ls.Downlinks = b.uplinks.Load(), b.downlinks.Load()
		}
		s.Listeners = append(s.Listeners, ls)
	}
	return s
}

// maxPageDevices bounds the server-rendered device list; the script fetches
// the rest of a large fleet from /devices.
const maxPageDevices = 500

func (g *Gateway) serveStatusPage(w http.ResponseWriter, r *http.Request) {
	st, devices := g.statusAndDevices(r.Context()) // with [cluster], the fleet's devices
	more := 0
	if len(devices) > maxPageDevices {
		more, devices = len(devices)-maxPageDevices, devices[:maxPageDevices]
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:")
	if err := statusTemplate.Execute(w, struct {
		Status
		Devices []Device
		More    int
	}{st, devices, more}); err != nil {
		g.log.Debug("status page", zap.Error(err))
	}
}

func (g *Gateway) serveStatusJSON(w http.ResponseWriter, r *http.Request) {
	var st Status
	if g.fleetStore() != nil {
		st, _ = g.statusAndDevices(r.Context())
	} else {
		st = g.localStatus()
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(st)
}

// statusAssets serves status.js and status.css.
func statusAssets() http.Handler {
	sub, err := fs.Sub(statusFiles, "status")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return http.StripPrefix("/static/", http.FileServerFS(sub))
}
