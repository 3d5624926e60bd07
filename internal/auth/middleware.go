package auth

import (
	"errors"
	"net/http"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
)

// Messages of the JSON error bodies, in the shape FastAPI gives.
const (
	detailMissing     = "Missing service token"
	detailInvalid     = "Invalid service token"
	detailRateLimited = "Too many failed authentication attempts"
	detailAborted     = "Authentication unavailable"
)

// Require serves next only to requests that pass Check, with the token
// removed first: the X-Zimmer-Service-Token header and, when AcceptBearer,
// any Authorization: Bearer credential (see Options). Others get
//
//   - 401 {"detail":"Missing service token"} or
//     {"detail":"Invalid service token"}, with a WWW-Authenticate challenge
//     as RFC 9110 asks of every 401: the scheme is the header's name,
//     "X-Zimmer-Service-Token realm=\"zimmer\"", plus a Bearer challenge
//     when AcceptBearer (nothing on the platform reads either);
//   - 429 {"detail":"Too many failed authentication attempts"} with
//     Retry-After in whole seconds, rounded up;
//   - 503 {"detail":"Authentication unavailable"} when the request ended
//     while waiting for bcrypt.
//
// Require never reads the request body, so a refused request with
// "Expect: 100-continue" gets its answer without a 100 Continue.
func (v *Verifier) Require(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res, err := v.check(r)
		v.report(res)
		if err == nil {
			stripToken(r.Header, v.acceptBearer)
			next.ServeHTTP(w, r)
			return
		}
		v.refuse(w, err)
	})
}

// refuse answers a failed Check.
func (v *Verifier) refuse(w http.ResponseWriter, err error) {
	var limited *RateLimitError
	switch {
	case errors.As(err, &limited):
		w.Header().Set("Retry-After", httpx.RetryAfter(limited.RetryAfter))
		httpx.Error(w, http.StatusTooManyRequests, detailRateLimited)
	case errors.Is(err, ErrMissingToken):
		v.challenge(w)
		httpx.Error(w, http.StatusUnauthorized, detailMissing)
	case errors.Is(err, ErrInvalidToken):
		v.challenge(w)
		httpx.Error(w, http.StatusUnauthorized, detailInvalid)
	default:
		httpx.Error(w, http.StatusServiceUnavailable, detailAborted)
	}
}

// challenge sets the WWW-Authenticate header of a 401.
func (v *Verifier) challenge(w http.ResponseWriter) {
	h := w.Header()
	h.Add("WWW-Authenticate", HeaderName+` realm="zimmer"`)
	if v.acceptBearer {
		h.Add("WWW-Authenticate", `Bearer realm="zimmer"`)
	}
}
