// Package metering keeps the per-user ledger of demo and paid tokens that
// stands behind the Zimmer /provision and /usage/consume endpoints.
//
// The package defines the Ledger contract and its domain types; storage
// backends live in sub-packages (bolt for the embedded default) and are
// checked by the storage-agnostic conformance suite in ledgertest. The
// package does no HTTP: decoding requests and encoding answers is the
// zimmer package's job.
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
)

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
	// configured default.
	DemoTokens    *int64
	BotTokenGiven bool
}

// ProvisionResult tells whether this call created the account.
type ProvisionResult struct {
	Account Account
	Created bool
}

// ConsumeRequest debits units from one account.
type ConsumeRequest struct {
	UserAutomationID int64
	Units            int64
	UsageType        string
	// IdempotencyKey, when not empty, is committed in the same transaction
	// as the debit; a later request with the same key gets the first
	// answer back without a second debit.
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
}

// CreditRequest adds paid tokens to an account.
type CreditRequest struct {
	UserAutomationID int64
	Units            int64
	Reason           string
	IdempotencyKey   string
}

// EntryKind names what a journal entry records.
type EntryKind string

const (
	EntryProvision EntryKind = "provision"
	EntryDebit     EntryKind = "debit"
	EntryCredit    EntryKind = "credit"
)

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
// use; every method is atomic and durable when it returns nil.
type Ledger interface {
	Provision(ctx context.Context, req ProvisionRequest) (ProvisionResult, error)
	Consume(ctx context.Context, req ConsumeRequest) (ConsumeResult, error)
	Credit(ctx context.Context, req CreditRequest) (Account, error)
	Account(ctx context.Context, userAutomationID int64) (Account, error)
	// Journal calls fn for each entry with Seq > after, in order, until fn
	// returns an error or limit entries were visited (limit <= 0: all).
	Journal(ctx context.Context, after uint64, limit int, fn func(Entry) error) error
	Close() error
}
