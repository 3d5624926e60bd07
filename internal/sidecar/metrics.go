package sidecar

import (
	"net/http"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/auth"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metrics"
)

// This file wires the metrics: the recorder, the instrumented ledger, the
// hooks that feed it and the /metrics route on the admin listener.

// metricsState is the sidecar's metrics. rec receives every measurement;
// prom is nil when nothing can read them (no admin listener), and rec is
// then metrics.Nop.
type metricsState struct {
	rec  metrics.Recorder
	prom *metrics.Prometheus
}

// initMetrics builds the recorder and returns l instrumented with it. The
// probe and health families are read from s.monitor at scrape time, so it
// may run before the monitor exists.
func (s *Sidecar) initMetrics(l metering.Ledger) metering.Ledger {
	if s.cfg.Listen.Admin == "" {
		s.metrics = metricsState{rec: metrics.Nop{}}
		return l
	}
	p := metrics.New(metrics.Options{
		Probes: s.probeSamples,
		Health: s.healthStatus,
	})
	s.metrics = metricsState{rec: p, prom: p}
	return metrics.WrapLedger(l, p)
}

// probeSamples converts the monitor's probes for a scrape.
func (s *Sidecar) probeSamples() []metrics.Probe {
	if s.monitor == nil {
		return nil
	}
	probes := s.monitor.Probes()
	out := make([]metrics.Probe, 0, len(probes))
	for _, p := range probes {
		out = append(out, metrics.Probe{
			Name:    p.Options.Name,
			State:   string(p.State),
			Latency: p.Latency,
			Fails:   p.Fails,
		})
	}
	return out
}

// healthStatus is the verdict /health would answer now.
func (s *Sidecar) healthStatus() string {
	if s.monitor == nil {
		return ""
	}
	return s.monitor.Verdict().Status
}

// observe is the access middleware's hook on the public listener: one
// request per endpoint label (a Zimmer endpoint, a route, "proxy"). Nil
// when metrics are off.
func (s *Sidecar) observe() func(endpoint string, status int, d time.Duration) {
	if s.metrics.prom == nil {
		return nil
	}
	return s.metrics.prom.Request
}

// onAuthResult is auth.Options.OnResult: every service-token decision,
// rate-limited and rejected ones included. Nil when metrics are off.
func (s *Sidecar) onAuthResult() func(auth.Result) {
	if s.metrics.prom == nil {
		return nil
	}
	rec := s.metrics.prom
	return func(r auth.Result) { rec.Auth(r.Outcome.String()) }
}

// mountMetrics serves GET /metrics on the admin mux, behind wrap (the
// service token) when the admin listener is not on loopback, like the
// ledger admin API. The families hold counts and states only, no user
// ids, paths or secrets.
func (s *Sidecar) mountMetrics(mux *http.ServeMux, wrap func(http.Handler) http.Handler) {
	if s.metrics.prom == nil {
		return
	}
	h := s.metrics.prom.Handler()
	if e := s.egress; e != nil {
		// The key and outbox gauges are read when scraped.
		inner := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			e.egressGauges(s.metrics.rec)
			inner.ServeHTTP(w, r)
		})
	}
	if wrap != nil {
		h = wrap(h)
	}
	mux.Handle("GET /metrics", h)
}
