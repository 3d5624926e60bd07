package postgres

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// sqlMarkSettled stores a debit's settle with its record, linking the
// journal entry just appended in this transaction.
const sqlMarkSettled = `UPDATE idempotency
	SET settle = $2, settle_seq = currval('journal_seq_seq')
	WHERE key = $1`

// Settle implements metering.Ledger. A retry after a lost COMMIT finds
// the settle its own call stored and answers it as the original.
func (s *Store) Settle(
	ctx context.Context,
	req metering.SettleRequest,
) (metering.SettleResult, error) {
	id := req.UserAutomationID
	if err := metering.CheckSettle(req); err != nil {
		return metering.SettleResult{}, fmt.Errorf("settle %d: %w", id, err)
	}
	call, now := newCallID(), s.now()
	var res metering.SettleResult
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		res, err = s.settleStep(ctx, tx, req, call, now)
		return err
	})
	if err != nil {
		return metering.SettleResult{}, fmt.Errorf("settle %d: %w", id, err)
	}
	return res, nil
}

// Reconcile implements metering.Ledger. It needs no key to be retried
// safely: a retry after a lost COMMIT finds the balances already set and
// writes nothing.
func (s *Store) Reconcile(
	ctx context.Context,
	req metering.ReconcileRequest,
) (metering.Account, error) {
	id := req.UserAutomationID
	if err := metering.CheckReconcile(req); err != nil {
		return metering.Account{}, fmt.Errorf("reconcile %d: %w", id, err)
	}
	now := s.now()
	var acct metering.Account
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		acct, err = s.reconcileStep(ctx, tx, req, now)
		return err
	})
	if err != nil {
		return metering.Account{}, fmt.Errorf("reconcile %d: %w", id, err)
	}
	return acct, nil
}

// settleStep fixes the accepted debit that key claimed on the account at
// req.Units, once: the record is locked (before the account, as Refund
// does), a settled record answers its first settle or conflicts, and a
// refunded one cannot be settled.
func (s *Store) settleStep(
	ctx context.Context,
	tx pgx.Tx,
	req metering.SettleRequest,
	call callID,
	now time.Time,
) (metering.SettleResult, error) {
	id := req.UserAutomationID

	// Only an accepted, unrefunded debit of this account can be settled.
	c, ok, err := getClaim(ctx, tx, req.IdempotencyKey, true)
	if err != nil {
		return metering.SettleResult{}, err
	}
	if !ok || c.internal || c.kind != metering.EntryDebit || c.id != id || c.debitSeq == 0 {
		return metering.SettleResult{}, metering.ErrUnknownDebit
	}
	if c.refunded {
		return metering.SettleResult{}, fmt.Errorf("debit refunded: %w", metering.ErrUnknownDebit)
	}

	// Settled before: the first answer, or a conflict.
	if c.settle != nil {
		st, err := decodeSettle(c.settle)
		if err != nil {
			return metering.SettleResult{}, err
		}
		if st.Units != req.Units {
			return metering.SettleResult{}, fmt.Errorf("settle at %d, settled at %d: %w",
				req.Units, st.Units, metering.ErrIdempotencyConflict)
		}
		res := st.result()
		res.Replayed = !bytes.Equal(st.Call, call[:])
		return res, nil
	}

	acct, _, ok, err := lockAccount(ctx, tx, id)
	if err != nil {
		return metering.SettleResult{}, err
	}
	if !ok {
		return metering.SettleResult{}, metering.ErrUnknownAccount // debits keep accounts
	}
	heldDemo, heldPaid, usage, err := held(ctx, tx, c)
	if err != nil {
		return metering.SettleResult{}, err
	}
	plan, err := metering.PlanSettle(heldDemo, heldPaid,
		acct.DemoTokens, acct.PaidTokens, req.Units)
	if err != nil {
		return metering.SettleResult{}, err
	}

	// Write: the balances, the journal entry and the record's settle.
	acct.DemoTokens += plan.DemoDelta
	acct.PaidTokens += plan.PaidDelta
	st := settleRecord{Units: req.Units, Demo: plan.HeldDemo, Paid: plan.HeldPaid,
		Account: acct, Call: call[:]}
	raw, err := encodeResult(st)
	if err != nil {
		return metering.SettleResult{}, err
	}
	b := &pgx.Batch{}
	b.Queue(sqlSetBalances, id, acct.DemoTokens, acct.PaidTokens)
	b.Queue(sqlAppendEntry, entryArgs(s.journalLock, metering.Entry{
		Time: now, Kind: metering.EntrySettle, UserAutomationID: id,
		DemoDelta: plan.DemoDelta, PaidDelta: plan.PaidDelta, UsageType: usage,
		IdempotencyKey: req.IdempotencyKey, Reason: req.Reason,
	})...)
	b.Queue(sqlMarkSettled, req.IdempotencyKey, raw)
	if err := sendAll(ctx, tx, b); err != nil {
		return metering.SettleResult{}, err
	}
	return st.result(), nil
}

// reconcileStep sets the locked account's balances, journaling the
// change when there is one.
func (s *Store) reconcileStep(
	ctx context.Context,
	tx pgx.Tx,
	req metering.ReconcileRequest,
	now time.Time,
) (metering.Account, error) {
	id := req.UserAutomationID
	acct, _, ok, err := lockAccount(ctx, tx, id)
	if err != nil {
		return metering.Account{}, err
	}
	if !ok {
		return metering.Account{}, metering.ErrUnknownAccount
	}
	demoDelta := req.DemoTokens - acct.DemoTokens
	paidDelta := req.PaidTokens - acct.PaidTokens
	if demoDelta == 0 && paidDelta == 0 {
		return acct, nil
	}

	// Write: the balances with the journal entry.
	acct.DemoTokens, acct.PaidTokens = req.DemoTokens, req.PaidTokens
	b := &pgx.Batch{}
	b.Queue(sqlSetBalances, id, acct.DemoTokens, acct.PaidTokens)
	b.Queue(sqlAppendEntry, entryArgs(s.journalLock, metering.Entry{
		Time: now, Kind: metering.EntryReconcile, UserAutomationID: id,
		DemoDelta: demoDelta, PaidDelta: paidDelta, Reason: req.Reason,
	})...)
	if err := sendAll(ctx, tx, b); err != nil {
		return metering.Account{}, err
	}
	return acct, nil
}
