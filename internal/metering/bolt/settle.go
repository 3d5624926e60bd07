package bolt

import (
	"context"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// Settle implements metering.Ledger. Like the other writes it goes
// through the writer, so a settle queued behind its debit in one batch
// sees that debit.
func (s *Store) Settle(
	ctx context.Context,
	req metering.SettleRequest,
) (metering.SettleResult, error) {
	if err := metering.CheckSettle(req); err != nil {
		return metering.SettleResult{}, fmt.Errorf("settle %d: %w", req.UserAutomationID, err)
	}
	var res metering.SettleResult
	err := s.submit(ctx, func(tx *bbolt.Tx) (error, error) {
		return settleStep(tx, req, s.now(), &res)
	})
	if err != nil {
		return metering.SettleResult{}, err
	}
	return res, nil
}

// Reconcile implements metering.Ledger.
func (s *Store) Reconcile(
	ctx context.Context,
	req metering.ReconcileRequest,
) (metering.Account, error) {
	if err := metering.CheckReconcile(req); err != nil {
		return metering.Account{}, fmt.Errorf("reconcile %d: %w", req.UserAutomationID, err)
	}
	var acct metering.Account
	err := s.submit(ctx, func(tx *bbolt.Tx) (error, error) {
		return reconcileStep(tx, req, s.now(), &acct)
	})
	if err != nil {
		return metering.Account{}, err
	}
	return acct, nil
}

// settleStep fixes an accepted debit at req.Units: it moves the
// difference between the balances and the debit, journals it and records
// the settle in the debit's idempotency record, all in the batch's
// transaction. A settled debit answers its first settle, or conflicts; a
// refunded one cannot be settled.
func settleStep(
	tx *bbolt.Tx,
	req metering.SettleRequest,
	now time.Time,
	out *metering.SettleResult,
) (answer, abort error) {
	id := req.UserAutomationID

	// The key must hold an accepted, unrefunded debit of this account.
	rec, ok, err := getIdem(tx, req.IdempotencyKey)
	if err != nil {
		return fmt.Errorf("settle %d: %w", id, err), nil
	}
	if !ok || !rec.debitOf(id) {
		return fmt.Errorf("settle %d: %w", id, metering.ErrUnknownDebit), nil
	}
	if rec.RefundedAt != nil {
		return fmt.Errorf("settle %d: debit refunded: %w", id, metering.ErrUnknownDebit), nil
	}

	// Settled before: the first answer, or a conflict.
	if st := rec.Settle; st != nil {
		if st.Units != req.Units {
			return fmt.Errorf("settle %d at %d, settled at %d: %w",
				id, req.Units, st.Units, metering.ErrIdempotencyConflict), nil
		}
		*out = st.result()
		out.Replayed = true
		return nil, nil
	}

	acct, ok, err := getAccount(tx, id)
	if err != nil {
		return fmt.Errorf("settle: %w", err), nil
	}
	if !ok {
		return fmt.Errorf("settle %d: %w", id, metering.ErrUnknownAccount), nil
	}
	heldDemo, heldPaid := rec.held()
	plan, err := metering.PlanSettle(heldDemo, heldPaid,
		acct.DemoTokens, acct.PaidTokens, req.Units)
	if err != nil {
		return fmt.Errorf("settle %d: %w", id, err), nil
	}

	// Write: the balances with the journal entry, then the record.
	acct.DemoTokens += plan.DemoDelta
	acct.PaidTokens += plan.PaidDelta
	if err := putAccount(tx, acct); err != nil {
		return nil, err
	}
	err = appendEntry(tx, metering.Entry{
		Time:             now,
		Kind:             metering.EntrySettle,
		UserAutomationID: id,
		DemoDelta:        plan.DemoDelta,
		PaidDelta:        plan.PaidDelta,
		UsageType:        rec.UsageType,
		IdempotencyKey:   req.IdempotencyKey,
		Reason:           req.Reason,
	})
	if err != nil {
		return nil, err
	}
	rec.Settle = &settleRecord{
		Units: req.Units, Demo: plan.HeldDemo, Paid: plan.HeldPaid, Account: acct, At: now,
	}
	if err := putIdem(tx, req.IdempotencyKey, rec); err != nil {
		return nil, err
	}
	*out = rec.Settle.result()
	return nil, nil
}

// reconcileStep sets the account's balances, journaling the change when
// there is one.
func reconcileStep(
	tx *bbolt.Tx,
	req metering.ReconcileRequest,
	now time.Time,
	out *metering.Account,
) (answer, abort error) {
	id := req.UserAutomationID
	acct, ok, err := getAccount(tx, id)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err), nil
	}
	if !ok {
		return fmt.Errorf("reconcile %d: %w", id, metering.ErrUnknownAccount), nil
	}
	demoDelta := req.DemoTokens - acct.DemoTokens
	paidDelta := req.PaidTokens - acct.PaidTokens
	if demoDelta == 0 && paidDelta == 0 {
		*out = acct
		return nil, nil
	}

	// Write: the balances with the journal entry.
	acct.DemoTokens, acct.PaidTokens = req.DemoTokens, req.PaidTokens
	if err := putAccount(tx, acct); err != nil {
		return nil, err
	}
	err = appendEntry(tx, metering.Entry{
		Time:             now,
		Kind:             metering.EntryReconcile,
		UserAutomationID: id,
		DemoDelta:        demoDelta,
		PaidDelta:        paidDelta,
		Reason:           req.Reason,
	})
	if err != nil {
		return nil, err
	}
	*out = acct
	return nil, nil
}
