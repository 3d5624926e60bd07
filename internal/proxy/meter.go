package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// Client-facing messages of the meter step.
const (
	msgBadUser        = "Missing or invalid user_automation_id"
	msgBadKey         = "Invalid Idempotency-Key"
	msgNoTokens       = "Insufficient tokens"
	msgUnknownAccount = "Unknown user_automation_id"
	msgKeyConflict    = "Idempotency-Key reused with a different request"
	msgLedgerDown     = "Metering unavailable"
	msgMeterBroken    = "Metering misconfigured"
)

// maxIdempotencyKey bounds a client's Idempotency-Key.
const maxIdempotencyKey = 255

// insufficient is the 402 answer.
type insufficient struct {
	Detail        string `json:"detail"`
	RemainingDemo int64  `json:"remaining_demo_tokens"`
	RemainingPaid int64  `json:"remaining_paid_tokens"`
}

// meterHandler charges the route's units before calling next.
//
// Answers of its own: 400 for a missing, repeated or non-positive
// user_automation_id or a bad Idempotency-Key; 402 when the balance
// cannot cover the units; 404 for an account that was never provisioned
// (as the platform's own consume answers); 409 for an idempotency key
// reused with another request; 503 (500 for a units bound the ledger
// rejects) when the ledger fails. Nothing is forwarded in those cases.
func (p *Proxy) meterHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := stateOf(r)
		m := st.route.meter
		user, ok := userOf(r, st)
		if !ok {
			httpx.Error(w, http.StatusBadRequest, msgBadUser)
			return
		}
		key, ok := idempotencyKey(r, st.route.pattern, user)
		if !ok {
			httpx.Error(w, http.StatusBadRequest, msgBadKey)
			return
		}
		res, err := p.ledger.Consume(r.Context(), metering.ConsumeRequest{
			UserAutomationID: user,
			Units:            m.Units,
			UsageType:        m.UsageType,
			IdempotencyKey:   key,
		})
		if err != nil {
			p.meterError(w, r, err)
			return
		}
		if !res.Accepted {
			httpx.WriteJSON(w, http.StatusPaymentRequired, insufficient{
				Detail:        msgNoTokens,
				RemainingDemo: res.RemainingDemo,
				RemainingPaid: res.RemainingPaid,
			})
			return
		}
		// TODO(zimmer-sidecar): a charge is not undone when the app then
		// fails (502/504); the Ledger has no refund. A client retrying
		// with the same Idempotency-Key is at least not charged twice.
		st.charged, st.user, st.replay = true, user, res.Replayed
		st.demo, st.paid = res.RemainingDemo, res.RemainingPaid
		next.ServeHTTP(w, r)
	})
}

// meterError answers a failed consume.
func (p *Proxy) meterError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, metering.ErrUnknownAccount):
		httpx.Error(w, http.StatusNotFound, msgUnknownAccount)
		return
	case errors.Is(err, metering.ErrIdempotencyConflict):
		httpx.Error(w, http.StatusConflict, msgKeyConflict)
		return
	}
	if p.onError != nil {
		p.onError(r, fmt.Errorf("meter: %w", err))
	}
	if errors.Is(err, metering.ErrInvalidUnits) {
		httpx.Error(w, http.StatusInternalServerError, msgMeterBroken)
		return
	}
	httpx.Error(w, http.StatusServiceUnavailable, msgLedgerDown)
}

// userOf reads the user_automation_id from the route's source. Exactly
// one value must be present (two could let the app read another one than
// was charged) and it must be a positive decimal integer.
func userOf(r *http.Request, st *reqState) (int64, bool) {
	src := st.route.meter.User
	var vals []string
	switch src.From {
	case FromHeader:
		vals = r.Header.Values(src.Name)
	case FromQuery:
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			return 0, false
		}
		vals = q[src.Name]
	case FromPath:
		vals = []string{st.route.param(src.Name, st.params)}
	}
	if len(vals) != 1 {
		return 0, false
	}
	return positiveInt(vals[0])
}

// positiveInt parses digits only (no sign, no spaces) into an int64 > 0.
func positiveInt(s string) (int64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n > 0
}

// idempotencyKey returns the ledger key for the client's Idempotency-Key,
// "" when none was sent. The key is scoped by route and user so it cannot
// collide with another route's, another user's or a /usage/consume key.
// A present but empty, repeated, overlong or non-printable key is bad.
func idempotencyKey(r *http.Request, pattern string, user int64) (string, bool) {
	vals := r.Header.Values(IdempotencyKeyHeader)
	switch {
	case len(vals) == 0:
		return "", true
	case len(vals) > 1:
		return "", false
	}
	k := vals[0]
	if k == "" || len(k) > maxIdempotencyKey {
		return "", false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < ' ' || k[i] > '~' {
			return "", false
		}
	}
	return "route " + pattern + " user " + strconv.FormatInt(user, 10) +
		" key " + k, true
}
