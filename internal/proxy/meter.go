package proxy

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

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
	msgKeyBusy        = "A request with this Idempotency-Key is in progress"
	msgKeySpent       = "Idempotency-Key used by too many failed calls; send a new one"
	msgLedgerDown     = "Metering unavailable"
	msgMeterBroken    = "Metering misconfigured"
)

// msgKeyUsed answers a retry of a call whose charge stands: the sidecar
// keeps no copy of the app's answer to replay.
const msgKeyUsed = "Idempotency-Key was already used for a completed call; " +
	"use a new key for a new call"

// ErrRefundFailed wraps, in an OnError cause, a refund the ledger did not
// make: the client stays charged for a call the app failed. The journal
// shows the debit; an operator may make it good with a credit.
var ErrRefundFailed = errors.New("refund of a failed call")

// ErrShutdown is the cause the sidecar cancels request contexts with when
// its drain runs out of time. A metered call cut that way was cut by the
// sidecar, not abandoned by its client, so its charge is refunded.
var ErrShutdown = errors.New("sidecar shut down before the call finished")

// errKeySpent: a client key was charged maxCharges times, each refunded.
var errKeySpent = errors.New("idempotency key spent on failed calls")

const (
	// maxCharges bounds the debits one client key makes: the first and
	// those of retries after a refund.
	maxCharges = 8
	// retrySuffix and a number name the ledger key of a retry's debit.
	retrySuffix = " retry "
	// maxBaseKey leaves room for a retry suffix in a ledger key.
	maxBaseKey = metering.MaxIdempotencyKeyLen - len(retrySuffix) - 4

	// refundTimeout bounds the refund of a failed call.
	refundTimeout = 10 * time.Second
	// releaseTimeout bounds the release of a shared key hold.
	releaseTimeout = 5 * time.Second
	// holdMargin is what a shared key hold outlives the app's timeouts
	// by (see keyHoldTTL).
	holdMargin = time.Minute
)

// insufficient is the 402 answer.
type insufficient struct {
	Detail        string `json:"detail"`
	RemainingDemo int64  `json:"remaining_demo_tokens"`
	RemainingPaid int64  `json:"remaining_paid_tokens"`
}

// meterHandler charges the route's units, calls next, and refunds the
// charge when the app failed the call.
//
// Every charge has a ledger idempotency key (see ledgerKey), so it can be
// refunded: when the app gives no answer (dial or TLS failure, timeout,
// the app's connection dropping, a body over the limit: the ErrorHandler
// path) or answers 5xx, the debit this request made is refunded before
// the client sees the answer (see settle); any other answer keeps it, and
// so does a client that went away before the app answered (the app may
// have done the work). A failed refund goes to OnError wrapped in
// ErrRefundFailed; the client's answer is decided by then.
//
// A client key that already paid for a call whose charge stands is not
// forwarded again: the sidecar keeps no copy of the app's answer, so it
// cannot replay it, and forwarding would have the app redo the work for
// free. Such a retry gets 409. A key whose debit was refunded is charged
// again under a retry key derived from the client's, so a failed call
// never makes its retries free; a key makes at most maxCharges debits.
// While a call with a client key is in flight, another with the same key
// is refused, so two calls never share one debit: in this process by the
// KeyGuard and, when the ledger is shared by several sidecars (it
// implements metering.KeyHolder, as the PostgreSQL one does), in every
// replica by a hold in the ledger. A ledger that cannot take the hold
// fails the call like a failed charge.
//
// While the app's breaker is open the call is refused with 503 and
// Retry-After before anything is charged (a call the breaker refuses
// later, in half-open, is refunded like any unanswered call).
//
// Answers of its own: 400 for a missing, repeated (in any spelling of a
// header name) or non-positive user_automation_id or a bad
// Idempotency-Key; 402 when the balance cannot cover the units; 404 for
// an account that was never provisioned (as the platform's own consume
// answers); 409 for an idempotency key reused with another request,
// already used for a completed call, in use by a call in flight, or spent
// on maxCharges failed calls; 503 (500 for a units bound the ledger
// rejects) when the ledger fails. Nothing is forwarded in those cases.
func (p *Proxy) meterHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := stateOf(r)
		m := st.route.meter

		// Who pays, under which ledger key.
		user, ok := userOf(r, st)
		if !ok {
			httpx.Error(w, http.StatusBadRequest, msgBadUser)
			return
		}
		key, client, ok := ledgerKey(r, st.route.pattern, user)
		if !ok {
			httpx.Error(w, http.StatusBadRequest, msgBadKey)
			return
		}

		// While the breaker is open the call could not reach the app:
		// refuse it before charging, so no refund is needed.
		if p.breaker != nil {
			if wait, open := p.breaker.rejecting(); open {
				circuitOpen(w, wait)
				return
			}
		}

		// One call at a time per client key, held until the call settles.
		// A call that ends with no answer noted (a panic before one) is
		// settled as unanswered here.
		if client && !p.holdKey(w, r, st, key) {
			return
		}
		defer p.settle(r, st, 0)

		// Charge; refusals and ledger failures are answered here.
		res, key, err := p.charge(r.Context(), metering.ConsumeRequest{
			UserAutomationID: user,
			Units:            m.Units,
			UsageType:        m.UsageType,
			IdempotencyKey:   key,
		})
		if err != nil {
			// The debit may have committed though the answer was lost;
			// nothing is forwarded, so settle refunds whatever is there.
			if key != "" && mayHaveCommitted(err) {
				st.user, st.debit, st.uncertain = user, key, true
			}
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
		if res.Replayed {
			httpx.Error(w, http.StatusConflict, msgKeyUsed)
			return
		}

		// Forward; this request's own debit is refunded if the app fails.
		st.charged, st.user, st.debit = true, user, key
		st.demo, st.paid = res.RemainingDemo, res.RemainingPaid
		next.ServeHTTP(w, r)
	})
}

// charge consumes under key. When the key's debit was refunded (the app
// failed the call it paid for), the call is charged again under the next
// retry key, whose own replays are then refused; after maxCharges debits the
// key is spent (errKeySpent). It returns the answer and the key it is
// under.
func (p *Proxy) charge(
	ctx context.Context,
	req metering.ConsumeRequest,
) (metering.ConsumeResult, string, error) {
	base := req.IdempotencyKey
	for n := range maxCharges {
		if n > 0 {
			req.IdempotencyKey = base + retrySuffix + strconv.Itoa(n)
		}
		res, err := p.ledger.Consume(ctx, req)
		if err != nil || !res.Refunded {
			return res, req.IdempotencyKey, err
		}
	}
	return metering.ConsumeResult{}, "", errKeySpent
}

// settle ends a call's metering once its outcome is known: status is the
// app's answer, 0 for none. It refunds the request's own debit, if any,
// when the app answered 5xx, or gave no answer while the client was still
// there; it releases the client key in every case. A client that went
// away first (its request context canceled) keeps the charge: the app may
// have done the work, and a refund would make every call free to a
// client that hangs up before the answer. Only the first call per request
// acts: the proxy settles when the app's answer arrives (noteAnswer) or
// fails (handleError), before anything reaches the client, and
// meterHandler settles whatever is left as unanswered. The refund
// outlives the client but not refundTimeout.
func (p *Proxy) settle(r *http.Request, st *reqState, status int) {
	if st == nil || st.settled {
		return
	}
	st.settled = true
	if st.held != "" {
		defer p.releaseKey(r, st)
	}
	if st.debit == "" || (status > 0 && status < 500) {
		return
	}
	if status == 0 && clientGone(r) && !st.uncertain &&
		!errors.Is(context.Cause(r.Context()), ErrShutdown) {
		return
	}

	reason := "app gave no answer"
	if status > 0 {
		reason = "app answered " + strconv.Itoa(status)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), refundTimeout)
	defer cancel()
	if st.uncertain {
		reason = "charge outcome unknown; nothing forwarded"
	}
	_, err := p.ledger.Refund(ctx, metering.RefundRequest{
		UserAutomationID: st.user,
		IdempotencyKey:   st.debit,
		Reason:           reason,
	})
	if st.uncertain && errors.Is(err, metering.ErrUnknownDebit) {
		return // the failed charge did not commit: nothing to give back
	}
	if err != nil && p.onError != nil {
		p.onError(r, fmt.Errorf("meter: %w: %w", ErrRefundFailed, err))
	}
}

// clientGone reports whether r's client went away: the server cancels the
// request context when the connection closes. A deadline is not the
// client leaving (the app was too slow for it).
func clientGone(r *http.Request) bool {
	return errors.Is(r.Context().Err(), context.Canceled)
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
	case errors.Is(err, errKeySpent):
		httpx.Error(w, http.StatusConflict, msgKeySpent)
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
// was charged) and it must be a positive decimal integer. A header counts
// in every spelling an app server reads as its name (X_Tenant for
// X-Tenant, see sameHeaderName).
func userOf(r *http.Request, st *reqState) (int64, bool) {
	src := st.route.meter.User
	var vals []string
	switch src.From {
	case FromHeader:
		vals = headerValues(r.Header, src.Name)
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

// ledgerKey returns the ledger key of a metered call and whether the
// client chose it. With the client's Idempotency-Key, the key is scoped by
// route and user, so it cannot collide with another route's, another
// user's or a /usage/consume key; without one, it is fresh and random, so
// that every charge can be refunded. A present client key must be
// non-empty, single and valid for metering.CheckIdempotencyKey (the
// ledger's own rule), else it is bad (ok false). The key always leaves
// room for a retry suffix (see boundKey).
func ledgerKey(r *http.Request, pattern string, user int64) (key string, client, ok bool) {
	scope := "route " + pattern + " user " + strconv.FormatInt(user, 10)
	vals := r.Header.Values(IdempotencyKeyHeader)
	switch {
	case len(vals) == 0:
		return boundKey(scope + " call " + rand.Text()), false, true
	case len(vals) > 1 || vals[0] == "" ||
		metering.CheckIdempotencyKey(vals[0]) != nil:
		return "", false, false
	}
	return boundKey(scope + " key " + vals[0]), true, true
}

// boundKey returns k when the ledger accepts it with a retry suffix
// added, else a digest of it: the same k always gives the same key, and
// two keys collide only if SHA-256 does.
func boundKey(k string) string {
	if len(k) <= maxBaseKey && metering.CheckIdempotencyKey(k) == nil {
		return k
	}
	sum := sha256.Sum256([]byte(k))
	return "route sha256 " + hex.EncodeToString(sum[:])
}

// KeyGuard holds the ledger keys of client-keyed metered calls in flight.
// The zero value is ready; it is safe for concurrent use. The sidecar
// keeps one for its lifetime and gives it to every Proxy a reload builds,
// so a reload does not forget a call in flight.
//
// It keeps two calls from sharing one debit: while a call is in flight,
// its debit may still be refunded, and a second call with the key would
// either find the charge standing (409) or refunded (charged anew) only by
// the race's luck. The guard covers one process, which is all of a bolt
// ledger (the file is locked by one process). A ledger that several
// sidecars share implements metering.KeyHolder, and the proxy then also
// holds each key there, after the KeyGuard took it and for as long (see
// keyHoldTTL for what bounds a hold that its replica never released).
type KeyGuard = inflight

type inflight struct {
	mu   sync.Mutex
	keys map[string]struct{}
}

// hold claims key, reporting false when another call holds it.
func (f *inflight) hold(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, held := f.keys[key]; held {
		return false
	}
	if f.keys == nil {
		f.keys = make(map[string]struct{})
	}
	f.keys[key] = struct{}{}
	return true
}

// release frees key.
func (f *inflight) release(key string) {
	f.mu.Lock()
	delete(f.keys, key)
	f.mu.Unlock()
}

// holdKey holds a client's ledger key for the call: in the KeyGuard and,
// when the ledger is shared, in the ledger too. When the key is busy
// (409) or the ledger fails (503, like a failed charge) it answers the
// client itself, holds nothing and reports false.
func (p *Proxy) holdKey(w http.ResponseWriter, r *http.Request, st *reqState, key string) bool {
	if !p.guard.hold(key) {
		httpx.Error(w, http.StatusConflict, msgKeyBusy)
		return false
	}
	if shared, ok := p.ledger.(metering.KeyHolder); ok {
		token, held, err := shared.HoldKey(r.Context(), key, p.holdTTL)
		if err != nil || !held {
			p.guard.release(key)
			if err != nil {
				p.meterError(w, r, err)
			} else {
				httpx.Error(w, http.StatusConflict, msgKeyBusy)
			}
			return false
		}
		st.holdToken = token
	}
	st.held = key
	return true
}

// releaseKey frees the key holdKey held for the call: the ledger's hold
// first, bounded by releaseTimeout even when the client left, then the
// KeyGuard's. A failed release goes to OnError; the ledger's hold then
// lapses by itself.
func (p *Proxy) releaseKey(r *http.Request, st *reqState) {
	defer p.guard.release(st.held)
	shared, ok := p.ledger.(metering.KeyHolder)
	if !ok || st.holdToken == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), releaseTimeout)
	defer cancel()
	if err := shared.ReleaseKey(ctx, st.held, st.holdToken); err != nil && p.onError != nil {
		p.onError(r, fmt.Errorf("meter: %w", err))
	}
}

// keyHoldTTL is how long a hold in a shared ledger lasts unless released:
// longer than a metered call can keep its key, so that only a replica
// that died (or lost the database) leaves a hold to lapse. A call keeps
// its key from the charge until the app's answer headers or failure and
// the refund: up to two connects and TLS handshakes (a refused
// connection is retried once), the response header timeout, and
// refundTimeout. holdMargin adds a minute for the ledger's own writes and
// a request body still being uploaded. With the sidecar's defaults (2 s
// connect, 10 s handshake, 60 s headers) that is about two and a half
// minutes, the longest a key stays busy after its replica died.
//
// A hold that lapses while its call still runs (an upload slower than
// the margin) only gives up what the guard adds: the ledger's
// idempotency still never charges one key twice.
func keyHoldTTL(opts Options) time.Duration {
	dial := orDefault(opts.ConnectTimeout, DefaultConnectTimeout) +
		orDefault(opts.TLSHandshakeTimeout, DefaultTLSHandshakeTimeout)
	return 2*dial + orDefault(opts.ResponseHeaderTimeout, DefaultResponseHeaderTimeout) +
		refundTimeout + holdMargin
}

// mayHaveCommitted reports whether a failed charge could still have been
// written: not when the ledger refused it for a known reason.
func mayHaveCommitted(err error) bool {
	for _, definite := range []error{
		metering.ErrClosed, metering.ErrUnknownAccount, metering.ErrInvalidUnits,
		metering.ErrIdempotencyConflict, metering.ErrInvalidIdempotencyKey, errKeySpent,
	} {
		if errors.Is(err, definite) {
			return false
		}
	}
	return true
}
