package ratelimit

import (
	"net/http"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
)

// DetailLimited is the message of the 429 answer.
const DetailLimited = "Too many requests"

// Middleware serves next to requests that get a token and answers the
// rest with 429 {"detail":"Too many requests"} and Retry-After in whole
// seconds, rounded up and at least 1. The client is the connection peer
// (httpx.ClientAddr); the bucket comes from Options.Classify. A refused
// request's body is never read. With limiting off, or a nil Limiter,
// every request goes to next.
func (l *Limiter) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !l.Enabled() {
			next.ServeHTTP(w, r)
			return
		}
		name, limited := "", true
		if l.classify != nil {
			name, limited = l.classify(r)
		}
		if !limited {
			next.ServeHTTP(w, r)
			return
		}
		wait, ok := l.Allow(name, httpx.ClientAddr(r))
		if ok {
			next.ServeHTTP(w, r)
			return
		}
		if l.onLimit != nil {
			l.onLimit(r, wait)
		}
		w.Header().Set("Retry-After", httpx.RetryAfter(wait))
		httpx.Error(w, http.StatusTooManyRequests, DetailLimited)
	})
}
