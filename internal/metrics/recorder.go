package metrics

import "time"

// Recorder receives every measurement. Implementations are safe for
// concurrent use and never block: every method is called on a request's
// goroutine. Arguments outside the documented vocabularies are counted
// under "other" (or, for numbers, clamped at 0), never rejected.
type Recorder interface {
	// Request records one answered request on the public listener.
	// endpoint is a bounded name chosen by the handler (a Zimmer endpoint,
	// "route:<pattern>", "proxy"), "" when none was set.
	Request(endpoint string, status int, d time.Duration)

	// Auth records one service-token decision: one of the Auth*
	// outcomes, which match auth.Outcome's names.
	Auth(outcome string)

	// LedgerOp records one ledger call: op is one of the Op* names,
	// outcome one of the Outcome* names (see LedgerOutcome).
	LedgerOp(op, outcome string, d time.Duration)

	// Breaker records that the named circuit breaker is now in state
	// (BreakerClosed, BreakerHalfOpen, BreakerOpen; gobreaker's
	// "half-open" spelling is accepted). Call it once when the breaker is
	// built and on every change.
	Breaker(name, state string)

	// Lease records one upstream key lease event (the Lease* names).
	Lease(event string)

	// ActiveLeases sets how many key leases are held now.
	ActiveLeases(n int)

	// Keys sets how many upstream keys are in state (the Key* names).
	Keys(state string, n int)

	// Tokens adds one upstream call's token usage for model.
	Tokens(model string, prompt, completion int)

	// OutboxDepth sets how many usage reports wait to be sent.
	OutboxDepth(n int)
}

// Auth outcomes, as auth.Outcome.String spells them.
const (
	AuthOK          = "ok"
	AuthMissing     = "missing"
	AuthInvalid     = "invalid"
	AuthRateLimited = "rate_limited"
	AuthAborted     = "aborted"
)

// Ledger operations: one per metering.Ledger method.
const (
	OpProvision = "provision"
	OpConsume   = "consume"
	OpCredit    = "credit"
	OpAccount   = "account"
	OpJournal   = "journal"
	OpRefund    = "refund"
	OpSettle    = "settle"
	OpReconcile = "reconcile"
	OpClose     = "close"
)

// Ledger outcomes. LedgerOutcome maps an error to one of them.
const (
	OutcomeOK             = "ok"
	OutcomeRefused        = "refused"  // a consume the balance could not cover
	OutcomeReplayed       = "replayed" // a consume answered from its idempotency key
	OutcomeStopped        = "stopped"  // Journal's callback returned an error
	OutcomeUnknownAccount = "unknown_account"
	OutcomeInvalidUnits   = "invalid_units"
	OutcomeInvalidKey     = "invalid_key"
	OutcomeConflict       = "conflict"
	OutcomeUnknownDebit   = "unknown_debit"
	OutcomeClosed         = "closed"
	OutcomeCanceled       = "canceled"
	OutcomeDeadline       = "deadline"
	OutcomeError          = "error" // anything else: the store failed
)

// Circuit breaker states.
const (
	BreakerClosed   = "closed"
	BreakerHalfOpen = "half_open"
	BreakerOpen     = "open"
)

// Upstream key lease events.
const (
	LeaseAcquired = "acquired"
	LeaseRenewed  = "renewed"
	LeaseReleased = "released"
	LeaseExpired  = "expired"
	LeaseRefused  = "refused" // the platform or key source had no key
	LeaseFailed   = "failed"  // the lease request itself failed
)

// Upstream key states, after the platform's key manager: a key answering
// 429 cools down, one at its daily limit is exhausted, one answering
// 401/403 is disabled.
const (
	KeyActive    = "active"
	KeyCooling   = "cooling"
	KeyExhausted = "exhausted"
	KeyDisabled  = "disabled"
)

// Other is the label value for anything outside a vocabulary or past a
// cap; Unknown stands for an empty name.
const (
	Other   = "other"
	Unknown = "unknown"
)

// statusClasses are the class labels; classOf indexes into it.
var statusClasses = [...]string{Other, "1xx", "2xx", "3xx", "4xx", "5xx"}

// classOf returns the index of status's class in statusClasses.
func classOf(status int) int {
	if status < 100 || status > 599 {
		return 0
	}
	return status / 100
}

// StatusClass returns "1xx" to "5xx" for an HTTP status, else Other.
func StatusClass(status int) string { return statusClasses[classOf(status)] }

// Nop is a Recorder that records nothing. Its methods do no work and
// allocate nothing.
type Nop struct{}

var _ Recorder = Nop{}

func (Nop) Request(string, int, time.Duration)     {}
func (Nop) Auth(string)                            {}
func (Nop) LedgerOp(string, string, time.Duration) {}
func (Nop) Breaker(string, string)                 {}
func (Nop) Lease(string)                           {}
func (Nop) ActiveLeases(int)                       {}
func (Nop) Keys(string, int)                       {}
func (Nop) Tokens(string, int, int)                {}
func (Nop) OutboxDepth(int)                        {}
