package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// WrapLedger returns a metering.Ledger that forwards every call to l and
// reports its operation, outcome and latency to rec. Answers and errors
// pass through unchanged. With a nil or Nop rec it returns l itself, so
// disabled metrics cost nothing.
func WrapLedger(l metering.Ledger, rec Recorder) metering.Ledger {
	if rec == nil {
		return l
	}
	if _, ok := rec.(Nop); ok {
		return l
	}
	return &ledger{next: l, rec: rec, now: time.Now}
}

// ledger is the instrumented decorator.
type ledger struct {
	next metering.Ledger
	rec  Recorder
	now  func() time.Time // time.Now; tests inject a clock
}

var _ metering.Ledger = (*ledger)(nil)

// done reports one call that started at start.
func (l *ledger) done(op, outcome string, start time.Time) {
	l.rec.LedgerOp(op, outcome, l.now().Sub(start))
}

// Provision implements metering.Ledger.
func (l *ledger) Provision(ctx context.Context,
	req metering.ProvisionRequest) (metering.ProvisionResult, error) {
	start := l.now()
	res, err := l.next.Provision(ctx, req)
	l.done(OpProvision, LedgerOutcome(err), start)
	return res, err
}

// Consume implements metering.Ledger. Besides the errors it tells a
// refusal and a replay apart from an accepted debit.
func (l *ledger) Consume(ctx context.Context,
	req metering.ConsumeRequest) (metering.ConsumeResult, error) {
	start := l.now()
	res, err := l.next.Consume(ctx, req)
	outcome := LedgerOutcome(err)
	switch {
	case err != nil:
	case res.Replayed:
		outcome = OutcomeReplayed
	case !res.Accepted:
		outcome = OutcomeRefused
	}
	l.done(OpConsume, outcome, start)
	return res, err
}

// Credit implements metering.Ledger.
func (l *ledger) Credit(ctx context.Context,
	req metering.CreditRequest) (metering.Account, error) {
	start := l.now()
	acc, err := l.next.Credit(ctx, req)
	l.done(OpCredit, LedgerOutcome(err), start)
	return acc, err
}

// Account implements metering.Ledger.
func (l *ledger) Account(ctx context.Context, id int64) (metering.Account, error) {
	start := l.now()
	acc, err := l.next.Account(ctx, id)
	l.done(OpAccount, LedgerOutcome(err), start)
	return acc, err
}

// Journal implements metering.Ledger. The time includes fn's; an error
// fn returned is counted as "stopped", not as a ledger failure.
func (l *ledger) Journal(ctx context.Context, after uint64, limit int,
	fn func(metering.Entry) error) error {
	start := l.now()
	var fnErr error
	err := l.next.Journal(ctx, after, limit, func(e metering.Entry) error {
		fnErr = fn(e)
		return fnErr
	})
	outcome := LedgerOutcome(err)
	if err != nil && fnErr != nil && errors.Is(err, fnErr) {
		outcome = OutcomeStopped
	}
	l.done(OpJournal, outcome, start)
	return err
}

// Refund implements metering.Ledger.
func (l *ledger) Refund(ctx context.Context,
	req metering.RefundRequest) (metering.Account, error) {
	start := l.now()
	acc, err := l.next.Refund(ctx, req)
	l.done(OpRefund, LedgerOutcome(err), start)
	return acc, err
}

// Settle implements metering.Ledger. A replay is counted apart.
func (l *ledger) Settle(ctx context.Context,
	req metering.SettleRequest) (metering.SettleResult, error) {
	start := l.now()
	res, err := l.next.Settle(ctx, req)
	outcome := LedgerOutcome(err)
	if err == nil && res.Replayed {
		outcome = OutcomeReplayed
	}
	l.done(OpSettle, outcome, start)
	return res, err
}

// Reconcile implements metering.Ledger.
func (l *ledger) Reconcile(ctx context.Context,
	req metering.ReconcileRequest) (metering.Account, error) {
	start := l.now()
	acc, err := l.next.Reconcile(ctx, req)
	l.done(OpReconcile, LedgerOutcome(err), start)
	return acc, err
}

// Close implements metering.Ledger.
func (l *ledger) Close() error {
	start := l.now()
	err := l.next.Close()
	l.done(OpClose, LedgerOutcome(err), start)
	return err
}

// LedgerOutcome classifies a ledger error: OutcomeOK for nil, the named
// outcome for each metering sentinel and for a cancelled or expired
// context, OutcomeError for anything else (the store failed).
func LedgerOutcome(err error) string {
	switch {
	case err == nil:
		return OutcomeOK
	case errors.Is(err, metering.ErrUnknownAccount):
		return OutcomeUnknownAccount
	case errors.Is(err, metering.ErrInvalidUnits):
		return OutcomeInvalidUnits
	case errors.Is(err, metering.ErrInvalidIdempotencyKey):
		return OutcomeInvalidKey
	case errors.Is(err, metering.ErrIdempotencyConflict):
		return OutcomeConflict
	case errors.Is(err, metering.ErrUnknownDebit):
		return OutcomeUnknownDebit
	case errors.Is(err, metering.ErrClosed):
		return OutcomeClosed
	case errors.Is(err, context.Canceled):
		return OutcomeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return OutcomeDeadline
	}
	return OutcomeError
}
