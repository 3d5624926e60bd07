package sidecar

import (
	"net/http"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/proxy"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/status"
)

// mountStatus serves the human-readable status page at /status on the
// admin mux, wrapped like the ledger API (authentication off loopback).
func (s *Sidecar) mountStatus(mux *http.ServeMux, wrap func(http.Handler) http.Handler) {
	src := status.Source{
		Version:   s.cfg.Automation.Version,
		Started:   s.started,
		Health:    s.monitor.Handler(),
		Verdict:   s.monitor.Verdict,
		Probes:    s.monitor.Probes,
		Endpoints: s.stats.Endpoints,
	}
	if s.breaker != nil {
		src.Breakers = s.breakerStates
	}
	if s.egress != nil {
		src.Keys = s.egress.keyStates
		src.Outbox = s.egress.outboxDepth
	}
	var h http.Handler = status.Handler(src)
	if wrap != nil {
		h = wrap(h)
	}
	mux.Handle("/status", h)
}

// breakerStates reports the app's circuit breaker for the status page.
func (s *Sidecar) breakerStates() []status.BreakerState {
	st := s.breaker.State()
	out := status.BreakerState{Name: "app", State: string(st)}
	switch st {
	case proxy.BreakerOpen:
		out.Detail = "the app is not called; requests get 503"
	case proxy.BreakerHalfOpen:
		out.Detail = "probing the app with a few requests"
	}
	return []status.BreakerState{out}
}

// observeAll feeds the status page's statistics and, when metrics are on,
// the request metrics from the public listener's access hook.
func (s *Sidecar) observeAll() func(endpoint string, code int, d time.Duration) {
	prom := s.observe()
	if prom == nil {
		return s.stats.Observe
	}
	return func(endpoint string, code int, d time.Duration) {
		s.stats.Observe(endpoint, code, d)
		prom(endpoint, code, d)
	}
}
