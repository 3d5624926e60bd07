package sidecar

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/config"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/health"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/proxy"
)

// This file wires the app's circuit breaker: it is long-lived state,
// built once in New and shared by every proxy a reload builds, so a
// reload neither closes an open breaker nor forgets the failures it
// counted; app.breaker changes need a restart.

// BreakerCheck names the breaker's entry in /health's checks.
const BreakerCheck = config.ReservedCheckName

// breakerName names the breaker in metrics.
const breakerName = "app"

// initBreaker builds the breaker that [app.breaker] describes (none when
// disabled) and registers its /health check.
func (s *Sidecar) initBreaker(c config.Breaker) error {
	if !c.Enabled {
		return nil
	}
	b, err := proxy.NewBreaker(breakerOptions(c, s.breakerChanged))
	if err != nil {
		return fmt.Errorf("app breaker: %w", err)
	}
	if err := s.monitor.Register(BreakerCheck, breakerHealth(b, c.Required)); err != nil {
		return fmt.Errorf("app breaker: %w", err)
	}
	s.breaker = b
	s.metrics.rec.Breaker(breakerName, string(proxy.BreakerClosed))
	return nil
}

// breakerOptions converts [app.breaker].
func breakerOptions(c config.Breaker, onChange func(from, to proxy.BreakerState),
) proxy.BreakerOptions {
	return proxy.BreakerOptions{
		ConsecutiveFailures: c.ConsecutiveFailures,
		FailureRatio:        c.FailureRatio,
		MinRequests:         c.MinRequests,
		Interval:            c.Interval,
		OpenFor:             c.OpenFor,
		HalfOpenRequests:    c.HalfOpenRequests,
		OnStateChange:       onChange,
	}
}

// breakerHealth is the breaker's /health check, read at verdict time
// (never pushed from a state change, which gobreaker announces under its
// lock): closed is up; half-open is degraded; open is down when the app
// is required (the verdict turns down, 503) and degraded otherwise.
func breakerHealth(b *proxy.Breaker, required bool) func() health.CheckResult {
	return func() health.CheckResult {
		res := health.CheckResult{State: health.StateUp, Required: required}
		switch b.State() {
		case proxy.BreakerHalfOpen:
			res.State = health.StateDegraded
			res.Error = "circuit half-open: probing the app"
		case proxy.BreakerOpen:
			res.State = health.StateDegraded
			if required {
				res.State = health.StateDown
			}
			res.Error = "circuit open: app calls refused"
		}
		return res
	}
}

// breakerChanged records a state change in the metrics and logs it:
// opening at warn level, the rest at info.
func (s *Sidecar) breakerChanged(from, to proxy.BreakerState) {
	s.metrics.rec.Breaker(breakerName, string(to))
	lvl := slog.LevelInfo
	if to == proxy.BreakerOpen {
		lvl = slog.LevelWarn
	}
	s.log.Log(context.Background(), lvl, "app circuit breaker "+string(to),
		slog.String("from", string(from)), slog.String("to", string(to)))
}
