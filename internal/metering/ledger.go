// Package metering keeps the per-user ledger of demo and paid tokens that
// stands behind the Zimmer /provision and /usage/consume endpoints.
//
// The package defines the Ledger contract and its domain types; storage
// backends live in sub-packages (bolt for the embedded default) and are
// checked by the storage-agnostic conformance suite in ledgertest. The
// package does no HTTP: decoding requests and encoding answers is the
// zimmer package's job.
//
// Every balance change is a journal entry written with it: the first
// provision's demo grant, a debit (Consume), a credit (Credit) and a
// refund (Refund), which gives one accepted debit's tokens back to the
// balances they came from. A refund names its debit by the idempotency
// key the debit was made with, so only keyed debits can be refunded; the
// proxy gives every metered call a key for that reason and refunds the
// charge when the app answers 5xx or not at all.
//
// A keyed debit may also be settled (Settle): a reservation made before
// the real cost was known becomes a charge of the real units, giving back
// what was held too much or taking the extra, never below zero. Reconcile
// sets an account's balances to what an authoritative ledger answered.
// Both are journaled like every other balance change.
package metering

import (
	"context"
	"errors"
	"time"
)

// Errors callers branch on. Backends wrap them with context; use errors.Is.
var (
	// ErrUnknownAccount: no account exists for the user_automation_id.
	ErrUnknownAccount = errors.New("unknown user_automation_id")

	// ErrIdempotencyConflict: an idempotency key was reused with a request
	// that differs from the one that first claimed it.
	ErrIdempotencyConflict = errors.New("idempotency key reused with a different request")

	// ErrInvalidUnits: units are zero, negative or above the configured bound.
	ErrInvalidUnits = errors.New("invalid units")

	// ErrClosed: the ledger was closed.
	ErrClosed = errors.New("ledger closed")

	// ErrInvalidIdempotencyKey: a non-empty idempotency key is longer than
	// MaxIdempotencyKeyLen bytes or holds bytes outside printable ASCII.
	// An empty key means "no idempotency" to the ledger; rejecting an
	// empty but present header is the HTTP layer's job.
	ErrInvalidIdempotencyKey = errors.New("invalid idempotency key")

	// ErrUnknownDebit: Refund or Settle named no accepted debit of that
	// account: the key is empty, free, or holds a refusal, a credit or
	// another account's debit. Settle also answers it for a debit that was
	// refunded.
	ErrUnknownDebit = errors.New("no accepted debit with that idempotency key")
)

// Options are the rules every backend applies. The zero value is usable:
// see each field for what zero means.
type Options struct {
	// DefaultDemoTokens are granted by a first Provision whose DemoTokens
	// is nil. Zero grants none; negative values are invalid.
	DefaultDemoTokens int64

	// MaxUnits bounds one Consume. Zero means DefaultMaxUnits; negative
	// values are invalid. Credits are not bounded by it.
	MaxUnits int64

	// DemoRule splits a consume between demo and paid tokens. Empty means
	// DemoWhole, the platform's rule.
	DemoRule DemoRule

	// Now stamps accounts and journal entries. Nil means time.Now.
	Now func() time.Time
}

// DemoRule says how a consume is split between demo and paid tokens.
type DemoRule string

const (
	// DemoWhole is the platform's rule: while any demo tokens remain they
	// must cover the whole request (no spill-over into paid tokens); paid
	// tokens are used only once the demo balance is zero.
	DemoWhole DemoRule = "whole"

	// DemoSpill takes what the demo balance has and the rest from paid
	// tokens, accepting only when the two together cover the request.
	DemoSpill DemoRule = "spill"
)

// Account is one user_automation_id's balances and provisioning facts.
type Account struct {
	UserAutomationID int64     `json:"user_automation_id"`
	UserID           int64     `json:"user_id"`
	DemoTokens       int64     `json:"demo_tokens"`
	PaidTokens       int64     `json:"paid_tokens"`
	BotTokenGiven    bool      `json:"bot_token_given"`
	ProvisionedAt    time.Time `json:"provisioned_at"`
}

// ProvisionRequest creates an account or, when it exists, leaves its
// balances alone (no second demo grant) and refreshes UserID and
// BotTokenGiven.
type ProvisionRequest struct {
	UserAutomationID int64
	UserID           int64
	// DemoTokens granted on first provisioning; nil means the ledger's
	// configured default. A negative grant is ErrInvalidUnits.
	DemoTokens    *int64
	BotTokenGiven bool
}

// ProvisionResult tells whether this call created the account. Account
// holds the balances after the call.
type ProvisionResult struct {
	Account Account
	Created bool
}

// ConsumeRequest debits units from one account. Units must be in
// [1, Options.MaxUnits], else ErrInvalidUnits.
type ConsumeRequest struct {
	UserAutomationID int64
	Units            int64
	UsageType        string
	// IdempotencyKey, when not empty, is committed in the same transaction
	// as the debit; a later request with the same key gets the first
	// answer back without a second debit, whether that answer was an
	// acceptance or a refusal, and even after the debit was refunded. The
	// same key with a different account, units or usage type is
	// ErrIdempotencyConflict. Keys share one namespace with CreditRequest
	// keys. Only a keyed debit can be refunded (see Ledger.Refund).
	IdempotencyKey string
}

// ConsumeResult is the outcome of a consume. A refusal is not an error:
// Accepted is false and the balances are unchanged.
type ConsumeResult struct {
	Accepted      bool   `json:"accepted"`
	RemainingDemo int64  `json:"remaining_demo_tokens"`
	RemainingPaid int64  `json:"remaining_paid_tokens"`
	DemoDebited   int64  `json:"demo_debited"`
	PaidDebited   int64  `json:"paid_debited"`
	Message       string `json:"message"`
	// Replayed is true when the answer came from an earlier request with
	// the same idempotency key.
	Replayed bool `json:"-"`
	// Refunded is true on a replay whose accepted debit has since been
	// refunded: the tokens are back and nothing is charged for the key
	// any more. The other fields still hold the first answer.
	Refunded bool `json:"-"`
}

// CreditRequest adds paid tokens to an account. Units must be positive
// and must not overflow the balance, else ErrInvalidUnits; MaxUnits does
// not apply. A replayed IdempotencyKey returns the account as the first
// call answered it, without a second credit.
type CreditRequest struct {
	UserAutomationID int64
	Units            int64
	Reason           string
	IdempotencyKey   string
}

// EntryKind names what a journal entry records.
type EntryKind string

const (
	// EntryProvision is the demo grant of an account's first Provision
	// (DemoDelta may be zero); later provisions write no entry.
	EntryProvision EntryKind = "provision"
	// EntryDebit is an accepted Consume (negative deltas).
	EntryDebit EntryKind = "debit"
	// EntryCredit is a Credit (positive PaidDelta).
	EntryCredit EntryKind = "credit"
	// EntryRefund is a Refund: the refunded debit's deltas negated, with
	// its usage type and idempotency key and the refund's reason.
	EntryRefund EntryKind = "refund"
	// EntrySettle is a Settle: what went back to the balances (positive
	// deltas) or the extra charged (negative deltas), with the debit's
	// usage type and idempotency key and the settle's reason. A settle at
	// the debit's own units journals zero deltas.
	EntrySettle EntryKind = "settle"
	// EntryReconcile is a Reconcile that changed the balances: the new
	// balances less the old, with the reconcile's reason.
	EntryReconcile EntryKind = "reconcile"
)

// SettleRequest fixes the accepted debit made with IdempotencyKey on
// UserAutomationID at Units (>= 0, else ErrInvalidUnits), which may be
// more or less than the debit. Reason is journaled as it is; a replay's
// Reason is not compared.
type SettleRequest struct {
	UserAutomationID int64
	IdempotencyKey   string
	Units            int64
	Reason           string
}

// SettleResult is the outcome of a Settle.
type SettleResult struct {
	// Account holds the balances after the settle (on a replay: as the
	// first settle answered them).
	Account Account
	// Charged is the debit's final units: Units, or less when the
	// balances could not cover the extra.
	Charged int64
	// Replayed is true when an earlier Settle of this debit answered.
	Replayed bool
}

// ReconcileRequest sets an account's balances, for instance to what the
// platform's ledger answered. Both must be >= 0, else ErrInvalidUnits.
type ReconcileRequest struct {
	UserAutomationID       int64
	DemoTokens, PaidTokens int64
	Reason                 string
}

// RefundRequest gives back the tokens of one accepted debit, named by the
// idempotency key it was made with. Reason is journaled as it is.
type RefundRequest struct {
	UserAutomationID int64
	IdempotencyKey   string
	Reason           string
}

// Entry is one journal line. The journal is append-only: every balance
// change has exactly one entry, written in the same transaction.
type Entry struct {
	Seq              uint64    `json:"seq"`
	Time             time.Time `json:"time"`
	Kind             EntryKind `json:"kind"`
	UserAutomationID int64     `json:"user_automation_id"`
	DemoDelta        int64     `json:"demo_delta"`
	PaidDelta        int64     `json:"paid_delta"`
	UsageType        string    `json:"usage_type,omitempty"`
	IdempotencyKey   string    `json:"idempotency_key,omitempty"`
	Reason           string    `json:"reason,omitempty"`
}

// Ledger is the storage contract. Implementations are safe for concurrent
// use; every method is atomic and durable when it returns nil. A write
// that returns an error other than a refusal sentinel (ErrUnknownAccount,
// ErrInvalidUnits, ErrInvalidIdempotencyKey, ErrIdempotencyConflict,
// ErrUnknownDebit) may be retried with the same idempotency key: a failed
// write claims nothing. After Close every method returns ErrClosed.
type Ledger interface {
	// Provision creates the account or refreshes it (see ProvisionRequest).
	Provision(ctx context.Context, req ProvisionRequest) (ProvisionResult, error)
	// Consume debits units or refuses with Accepted false and a nil error.
	// ErrUnknownAccount when the account does not exist.
	Consume(ctx context.Context, req ConsumeRequest) (ConsumeResult, error)
	// Credit adds paid tokens and returns the account after the credit.
	Credit(ctx context.Context, req CreditRequest) (Account, error)
	// Account reads one account; ErrUnknownAccount when it does not exist.
	Account(ctx context.Context, userAutomationID int64) (Account, error)
	// Journal calls fn for each entry with Seq > after, in order, until fn
	// returns an error or limit entries were visited (limit <= 0: all).
	// fn's error is returned as is. fn may call the Ledger.
	Journal(ctx context.Context, after uint64, limit int, fn func(Entry) error) error
	// Refund reverses the accepted debit made with req.IdempotencyKey on
	// req.UserAutomationID: its demo and paid tokens return to the
	// balances they came from, journaled as one EntryRefund in the same
	// transaction. Refunding a debit again changes nothing (it is
	// idempotent) and returns the account. ErrUnknownDebit when that key
	// holds no accepted debit of that account (a refusal, a credit, another
	// account's debit, or nothing; an empty key names nothing), and
	// ErrInvalidIdempotencyKey for a key Consume would refuse.
	// ErrInvalidUnits when the paid balance would overflow (credits since
	// the debit brought it near math.MaxInt64); nothing changes then.
	// A replay of the refunded Consume still answers its first answer,
	// with Refunded set, and debits nothing.
	//
	// Refund after Settle gives back what the debit holds after the
	// settle (the settled units, split as settled).
	Refund(ctx context.Context, req RefundRequest) (Account, error)
	// Settle fixes the accepted debit made with req.IdempotencyKey on
	// req.UserAutomationID at req.Units, in one transaction journaled as
	// one EntrySettle. Units below the debit give the difference back to
	// the balances it came from, paid tokens first, then demo. Units
	// above it take the extra from the balance the debit used (paid when
	// it took any paid tokens, else demo), then from the other, never
	// below zero: Charged is then less than Units.
	//
	// Settle is idempotent per debit: a second Settle with the same
	// Units changes nothing and answers the first result with Replayed
	// set; with other Units it is ErrIdempotencyConflict. ErrUnknownDebit
	// as for Refund, and also for a refunded debit (settled or not);
	// ErrInvalidIdempotencyKey for a key Consume would refuse;
	// ErrInvalidUnits for negative Units, or when giving back would
	// overflow a balance (nothing changes then). A replay of the settled
	// Consume still answers its first answer.
	Settle(ctx context.Context, req SettleRequest) (SettleResult, error)
	// Reconcile sets the account's balances to req's and returns the
	// account after it, journaling one EntryReconcile with the deltas
	// when they are not both zero (an unchanged account writes nothing,
	// so a repeated Reconcile is harmless). Debits held for later
	// Settle or Refund are not adjusted: the new balances are taken as
	// they are. ErrUnknownAccount when the account does not exist,
	// ErrInvalidUnits for a negative balance.
	Reconcile(ctx context.Context, req ReconcileRequest) (Account, error)
	// Close stops accepting calls, waits for writes in flight and
	// releases the store. It is idempotent.
	Close() error
}
