package auth

import (
	"fmt"
	"time"
)

// Outcome names how a request was decided.
type Outcome int

const (
	// OutcomeOK: a configured token matched.
	OutcomeOK Outcome = iota
	// OutcomeMissing: no token was presented.
	OutcomeMissing
	// OutcomeInvalid: a token was presented and none matched, or several
	// candidate tokens were presented at once. Counted by the Limiter.
	OutcomeInvalid
	// OutcomeRateLimited: the client had spent its failed attempts and
	// its token, if any, passed none of the cheap checks (digests and the
	// bcrypt cache); bcrypt was not tried. Not counted again.
	OutcomeRateLimited
	// OutcomeAborted: the request's context ended while it waited for a
	// bcrypt slot.
	OutcomeAborted
)

// String returns a short lowercase name fit for a metric label.
func (o Outcome) String() string {
	switch o {
	case OutcomeOK:
		return "ok"
	case OutcomeMissing:
		return "missing"
	case OutcomeInvalid:
		return "invalid"
	case OutcomeRateLimited:
		return "rate_limited"
	case OutcomeAborted:
		return "aborted"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Result describes one decision for Options.OnResult. It never holds the
// presented or the configured token.
type Result struct {
	Outcome Outcome
	// ClientAddr is the connection peer's IP (httpx.ClientAddr).
	ClientAddr string
	// Token is the position, in the list given to New, of the token that
	// matched, or -1. During a rotation it tells whether callers still use
	// the old token.
	Token int
	// Bearer reports that the token came from Authorization: Bearer.
	Bearer bool
	// Cached reports that a bcrypt token matched from the cache.
	Cached bool
	// RetryAfter is set for OutcomeRateLimited.
	RetryAfter time.Duration
}
