package sidecar

import (
	"net/http"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/config"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/logging"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/ratelimit"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/zimmer"
)

// healthBucket is the rate-limit bucket of the public /health endpoint.
const healthBucket = "health"

// endpointRateLimited labels refused requests in the access log and the
// request metrics.
const endpointRateLimited = "rate_limited"

// limitRate wraps the public router with the per-client request limit of
// listen.requests_per_second and listen.burst (off while the rate is 0).
// The limits follow the applied configuration, so a reload that changes
// them takes effect on the next request; buckets survive it.
//
// /health stays limited, but draws from a bucket of its own with the same
// rate and burst. The platform checks health from the same address that
// sends provision and consume, and treats any non-200 from /health as a
// final "unhealthy": its own busy traffic must not spend the health
// check's budget. Kubernetes probes the admin listener's /livez and
// /readyz, which no rate limit covers, so they never see a 429.
func (s *Sidecar) limitRate(next http.Handler) http.Handler {
	l := ratelimit.New(ratelimit.Options{
		Classify: s.rateBucket,
		OnLimit: func(r *http.Request, _ time.Duration) {
			logging.FromContext(r.Context()).SetEndpoint(endpointRateLimited)
		},
	})
	limited := l.Middleware(next)

	// inForce is the configuration whose limits l holds.
	var inForce atomic.Pointer[config.Config]
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cfg := s.applied(); inForce.Load() != cfg {
			inForce.Store(cfg)
			l.SetLimits(float64(cfg.Listen.RequestsPerSecond), cfg.Listen.Burst)
		}
		limited.ServeHTTP(w, r)
	})
}

// rateBucket names the bucket of a public request: healthBucket for the
// health endpoint under any configured prefix, the default for the rest.
func (s *Sidecar) rateBucket(r *http.Request) (string, bool) {
	p := zimmer.CleanPath(r.URL.Path)
	if path.Base(strings.TrimSuffix(p, "/")) != string(zimmer.EndpointHealth) {
		return "", true
	}
	// A Zimmer path is a prefix followed by an endpoint name, and only
	// the health endpoint's name ends in a "health" segment.
	if _, ok := s.current.Load().api.Lookup(p); ok {
		return healthBucket, true
	}
	return "", true
}
