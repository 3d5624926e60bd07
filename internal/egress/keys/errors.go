package keys

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinels callers branch on with errors.Is.
var (
	// ErrNoKey: no key can serve the call now. Every such error is a
	// *NoKeyError, which says why and when to retry.
	ErrNoKey = errors.New("no usable OpenAI key")
	// ErrPlatformUnavailable: the lease platform did not answer, answered
	// 5xx or 429, or its circuit breaker is open.
	ErrPlatformUnavailable = errors.New("lease platform unavailable")
	// ErrPlatformRefused: the lease platform answered but refused the
	// lease (401, 403, 404, another 4xx, or "success": false).
	ErrPlatformRefused = errors.New("lease platform refused")
	// ErrBadLease: the lease platform's answer could not be used
	// (malformed JSON, missing key, missing or past expiry).
	ErrBadLease = errors.New("malformed lease answer")
	// ErrClosed: the pool was closed; it hands out no more keys.
	ErrClosed = errors.New("key pool closed")
)

// NoKeyError is returned by Acquire when no key can serve a call. It
// matches ErrNoKey and unwraps to Cause.
type NoKeyError struct {
	// Keys is the number of keys known (static keys, or valid leases).
	Keys int
	// Disabled, Exhausted, Cooling, RateLimited and TokenLimited count the
	// known keys by the reason they cannot serve: rejected by the
	// upstream (401/403), out of quota for the day, in a 429 cooldown, at
	// their requests-per-minute limit, without enough of their daily
	// token limit left for the call.
	Disabled, Exhausted, Cooling, RateLimited, TokenLimited int
	// RetryAfter is how long until the first key may serve again; 0 when
	// no key is expected back (all disabled, or none known).
	RetryAfter time.Duration
	// Cause is why no new lease could be had (leased pools only), or nil.
	Cause error
}

func (e *NoKeyError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v (%d keys", ErrNoKey, e.Keys)
	counts := []struct {
		n    int
		what string
	}{
		{e.Disabled, "disabled"},
		{e.Exhausted, "exhausted"},
		{e.Cooling, "cooling down"},
		{e.RateLimited, "at their rpm limit"},
		{e.TokenLimited, "at their daily token limit"},
	}
	for _, c := range counts {
		if c.n > 0 {
			fmt.Fprintf(&b, ", %d %s", c.n, c.what)
		}
	}
	b.WriteString(")")
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, ", retry after %s", e.RetryAfter)
	}
	if e.Cause != nil {
		fmt.Fprintf(&b, ": %v", e.Cause)
	}
	return b.String()
}

// Is makes a NoKeyError match ErrNoKey.
func (e *NoKeyError) Is(target error) bool { return target == ErrNoKey }

// Unwrap returns Cause.
func (e *NoKeyError) Unwrap() error { return e.Cause }
