package health

import (
	"net/http"
	"sync/atomic"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
)

// Readiness answers the Kubernetes liveness and readiness probes of the
// sidecar process. It says nothing about the app: a down app reaches the
// platform through /health, and taking the sidecar out of the Service
// because the app is down would only hide that answer (and the 503s and
// JSON errors the sidecar gives in the meantime). So readiness means:
// the sidecar has finished starting and is not shutting down.
//
// The zero value is not ready. Methods are safe for concurrent use.
type Readiness struct {
	ready    atomic.Bool
	stopping atomic.Bool
}

// SetReady marks the sidecar ready (or not). It has no effect once
// SetShuttingDown was called.
func (r *Readiness) SetReady(ready bool) {
	r.ready.Store(ready)
}

// SetShuttingDown makes readiness fail from now on, for good. Call it
// first thing when shutdown starts, before draining.
func (r *Readiness) SetShuttingDown() {
	r.stopping.Store(true)
}

// Ready reports whether /readyz answers 200.
func (r *Readiness) Ready() bool {
	return r.ready.Load() && !r.stopping.Load()
}

// statusBody is the small JSON answer of /livez and /readyz.
type statusBody struct {
	Status string `json:"status"`
}

// LivezHandler answers 200 {"status":"alive"} whenever the process can
// serve, shutting down included: liveness failing would get the sidecar
// killed in the middle of its drain.
func (r *Readiness) LivezHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !allowGetHead(w, req) {
			return
		}
		httpx.WriteJSON(w, http.StatusOK, statusBody{Status: "alive"})
	})
}

// ReadyzHandler answers 200 {"status":"ready"} once SetReady(true) was
// called, 503 {"status":"starting"} before, and 503
// {"status":"shutting_down"} from SetShuttingDown on.
func (r *Readiness) ReadyzHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !allowGetHead(w, req) {
			return
		}
		switch {
		case r.stopping.Load():
			httpx.WriteJSON(w, http.StatusServiceUnavailable,
				statusBody{Status: "shutting_down"})
		case !r.ready.Load():
			httpx.WriteJSON(w, http.StatusServiceUnavailable,
				statusBody{Status: "starting"})
		default:
			httpx.WriteJSON(w, http.StatusOK, statusBody{Status: "ready"})
		}
	})
}

// allowGetHead answers 405 with Allow for any method but GET and HEAD
// and reports whether the request may go on.
func allowGetHead(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	httpx.Error(w, http.StatusMethodNotAllowed, "Method Not Allowed")
	return false
}
