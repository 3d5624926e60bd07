package status

import (
	"net/http"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/health"
)

// t0 is the fake clock's start: a minute boundary.
var t0 = time.Date(2025, 3, 14, 15, 0, 0, 0, time.UTC)

// clock is a settable fake clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

// Probe names and endpoint labels of fakeSource; one name holds markup
// that must reach the page as text.
const (
	probeApp     = "app"
	probeSearch  = "search-index"
	probeHostile = `<script>alert("x")</script>`
)

var fakeEndpoints = []string{"health", "provision", "route:/chat/*", "proxy"}

// healthAnswer returns a /health handler answering code and body.
func healthAnswer(code int, body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = w.Write([]byte(body))
	})
}

// results returns n probe results ending at end, one every 10 s; those
// whose index is in fail failed.
func results(end time.Time, n int, lat time.Duration, fail map[int]string) []health.Result {
	out := make([]health.Result, n)
	for i := range out {
		at := end.Add(-time.Duration(n-1-i) * 10 * time.Second)
		out[i] = health.Result{At: at, OK: true, Latency: lat}
		if msg, ok := fail[i]; ok {
			out[i] = health.Result{At: at, Latency: lat, Error: msg}
		}
	}
	return out
}

// fakeSource is a sidecar whose required app probe is down: the verdict
// is down and the platform would say unhealthy. Every section is
// supplied. It records traffic in a Stats on the clock c.
func fakeSource(t *testing.T, c *clock) Source {
	t.Helper()
	now := c.now()
	stats := NewStats(c.now)
	for i := range 200 {
		stats.Observe("health", 200, time.Duration(1+i%3)*time.Millisecond)
		stats.Observe("proxy", 200, 40*time.Millisecond)
	}
	stats.Observe("provision", 200, 120*time.Millisecond)
	stats.Observe("provision", 502, 2*time.Second)
	stats.Observe("route:/chat/*", 200, 300*time.Millisecond)
	stats.Observe("route:/chat/*", 404, 3*time.Millisecond)

	probes := []health.ProbeStatus{
		{
			Options: health.ProbeOptions{Name: probeApp, Method: "GET",
				Path: "/healthz", Required: true, SlowAfter: time.Second},
			State: health.StateDown, Fails: 4, Error: "connection refused",
			Since: now.Add(-2 * time.Minute),
			Recent: results(now, 20, 3*time.Millisecond,
				map[int]string{16: "connection refused", 17: "connection refused",
					18: "connection refused", 19: "connection refused"}),
		},
		{
			Options: health.ProbeOptions{Name: probeSearch, Method: "GET",
				Path: "/search/health", SlowAfter: 50 * time.Millisecond},
			State: health.StateSlow, Passes: 9, Latency: 80 * time.Millisecond,
			Since:  now.Add(-90 * time.Second),
			Recent: results(now, 9, 80*time.Millisecond, nil),
		},
		{
			Options: health.ProbeOptions{Name: probeHostile, Method: "GET",
				Path: "/x?a=1&b=<i>"},
			State: health.StateFailing, Fails: 1,
			Error:  `"><img src=x onerror=alert(1)>`,
			Since:  now.Add(-10 * time.Second),
			Recent: results(now, 1, 0, map[int]string{0: `"><b>bold</b>`}),
		},
	}
	verdict := health.Verdict{Status: health.StatusDown, Checks: map[string]health.CheckStatus{}}
	for _, p := range probes {
		verdict.Checks[p.Options.Name] = health.CheckStatus{
			State: p.State, Required: p.Options.Required, Probe: true,
			Latency: p.Latency, Error: p.Error, Since: p.Since,
		}
	}
	verdict.Checks["breaker"] = health.CheckStatus{State: health.StateUp, Since: now}

	return Source{
		Version: "1.2.3",
		Started: now.Add(-26 * time.Hour),
		Now:     c.now,
		Health: healthAnswer(503, `{"status":"down","version":"1.2.3",`+
			`"uptime":93600,"checks":{}}`),
		Verdict:   func() health.Verdict { return verdict },
		Probes:    func() []health.ProbeStatus { return probes },
		Endpoints: stats.Endpoints,
		Breakers: func() []BreakerState {
			return []BreakerState{{Name: "app", State: BreakerOpen,
				ConsecutiveFailures: 5, Since: now.Add(-time.Minute),
				Detail: "next probe in 20s"}}
		},
		Keys: func() []KeyState {
			return []KeyState{{ID: "key-7f3a", Source: "file", State: "active",
				TokensToday: 1200, DailyLimit: 100000}}
		},
		Outbox: func() (int, bool) { return 17, true },
	}
}
