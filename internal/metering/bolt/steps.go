package bolt

import (
	"fmt"
	"math"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// Each step below reads and decides first, returning any refusal as its
// answer, and only then writes; a failed write is returned as abort (see
// step). On success the step fills *out with the caller's result.

// provisionStep creates the account with grant demo tokens and one journal
// entry, or refreshes an existing account's UserID and BotTokenGiven
// without touching its balances or the journal.
func provisionStep(
	tx *bbolt.Tx,
	req metering.ProvisionRequest,
	grant int64,
	now time.Time,
	out *metering.ProvisionResult,
) (answer, abort error) {
	acct, ok, err := getAccount(tx, req.UserAutomationID)
	if err != nil {
		return fmt.Errorf("provision: %w", err), nil
	}

	// Known account: refresh the facts, never the balances.
	if ok {
		if acct.UserID != req.UserID || acct.BotTokenGiven != req.BotTokenGiven {
			acct.UserID = req.UserID
			acct.BotTokenGiven = req.BotTokenGiven
			if err := putAccount(tx, acct); err != nil {
				return nil, err
			}
		}
		*out = metering.ProvisionResult{Account: acct}
		return nil, nil
	}

	// New account: the one demo grant, journaled once.
	acct = metering.Account{
		UserAutomationID: req.UserAutomationID,
		UserID:           req.UserID,
		DemoTokens:       grant,
		BotTokenGiven:    req.BotTokenGiven,
		ProvisionedAt:    now,
	}
	if err := putAccount(tx, acct); err != nil {
		return nil, err
	}
	err = appendEntry(tx, metering.Entry{
		Time:             now,
		Kind:             metering.EntryProvision,
		UserAutomationID: acct.UserAutomationID,
		DemoDelta:        grant,
	})
	if err != nil {
		return nil, err
	}
	*out = metering.ProvisionResult{Account: acct, Created: true}
	return nil, nil
}

// consumeStep answers a replayed key with its first answer (marked
// Refunded once its debit was refunded), else applies rule to the account
// and stores the debit, its journal entry and the key's claim together. A
// refusal claims the key too, so its replays are refused alike; an
// unknown account claims nothing.
func consumeStep(
	tx *bbolt.Tx,
	req metering.ConsumeRequest,
	rule metering.DemoRule,
	now time.Time,
	out *metering.ConsumeResult,
) (answer, abort error) {
	id := req.UserAutomationID
	fp := req.Fingerprint()

	// A claimed key answers as it first did, or conflicts.
	rec, err := priorClaim(tx, req.IdempotencyKey, metering.EntryDebit, fp)
	if err != nil {
		return fmt.Errorf("consume %d: %w", id, err), nil
	}
	if rec != nil {
		*out = *rec.Consume
		out.Replayed = true
		out.Refunded = rec.RefundedAt != nil
		return nil, nil
	}

	// Decide on the balances as this transaction sees them, which
	// includes every earlier write of the batch.
	acct, ok, err := getAccount(tx, id)
	if err != nil {
		return fmt.Errorf("consume: %w", err), nil
	}
	if !ok {
		return fmt.Errorf("consume %d: %w", id, metering.ErrUnknownAccount), nil
	}
	res := metering.Decide(rule, acct.DemoTokens, acct.PaidTokens, req.Units)

	// Write: the debit with its journal entry, then the key's claim.
	if res.Accepted {
		acct.DemoTokens, acct.PaidTokens = res.RemainingDemo, res.RemainingPaid
		if err := putAccount(tx, acct); err != nil {
			return nil, err
		}
		err := appendEntry(tx, metering.Entry{
			Time:             now,
			Kind:             metering.EntryDebit,
			UserAutomationID: id,
			DemoDelta:        -res.DemoDebited,
			PaidDelta:        -res.PaidDebited,
			UsageType:        req.UsageType,
			IdempotencyKey:   req.IdempotencyKey,
		})
		if err != nil {
			return nil, err
		}
	}
	if req.IdempotencyKey != "" {
		rec := idemRecord{
			Kind:        metering.EntryDebit,
			Fingerprint: fp[:],
			At:          now,
			UsageType:   req.UsageType,
			Consume:     &res,
		}
		if err := putIdem(tx, req.IdempotencyKey, rec); err != nil {
			return nil, err
		}
	}
	*out = res
	return nil, nil
}

// creditStep answers a replayed key with the account as first answered,
// else adds paid tokens with a journal entry and claims the key.
func creditStep(
	tx *bbolt.Tx,
	req metering.CreditRequest,
	now time.Time,
	out *metering.Account,
) (answer, abort error) {
	id := req.UserAutomationID
	fp := req.Fingerprint()

	// A claimed key answers as it first did, or conflicts.
	rec, err := priorClaim(tx, req.IdempotencyKey, metering.EntryCredit, fp)
	if err != nil {
		return fmt.Errorf("credit %d: %w", id, err), nil
	}
	if rec != nil {
		*out = *rec.Account
		return nil, nil
	}

	// Check the account and that the credit fits.
	acct, ok, err := getAccount(tx, id)
	if err != nil {
		return fmt.Errorf("credit: %w", err), nil
	}
	if !ok {
		return fmt.Errorf("credit %d: %w", id, metering.ErrUnknownAccount), nil
	}
	if err := metering.CheckCredit(acct.PaidTokens, req.Units); err != nil {
		return fmt.Errorf("credit %d: %w", id, err), nil
	}

	// Write: the credit with its journal entry, then the key's claim.
	acct.PaidTokens += req.Units
	if err := putAccount(tx, acct); err != nil {
		return nil, err
	}
	err = appendEntry(tx, metering.Entry{
		Time:             now,
		Kind:             metering.EntryCredit,
		UserAutomationID: id,
		PaidDelta:        req.Units,
		Reason:           req.Reason,
		IdempotencyKey:   req.IdempotencyKey,
	})
	if err != nil {
		return nil, err
	}
	if req.IdempotencyKey != "" {
		rec := idemRecord{Kind: metering.EntryCredit, Fingerprint: fp[:], At: now, Account: &acct}
		if err := putIdem(tx, req.IdempotencyKey, rec); err != nil {
			return nil, err
		}
	}
	*out = acct
	return nil, nil
}

// refundStep gives an accepted debit's tokens (as settled, once it was)
// back to the balances they came from, journals the refund and marks the
// debit's record refunded, all in the batch's transaction; a debit
// refunded before is answered with the account as it is, changing
// nothing. The debit may have been made earlier in the same batch: this
// transaction sees it.
func refundStep(
	tx *bbolt.Tx,
	req metering.RefundRequest,
	now time.Time,
	out *metering.Account,
) (answer, abort error) {
	id := req.UserAutomationID

	// The key must hold an accepted debit of this very account.
	rec, ok, err := getIdem(tx, req.IdempotencyKey)
	if err != nil {
		return fmt.Errorf("refund %d: %w", id, err), nil
	}
	if !ok || !rec.debitOf(id) {
		return fmt.Errorf("refund %d: %w", id, metering.ErrUnknownDebit), nil
	}
	acct, ok, err := getAccount(tx, id)
	if err != nil {
		return fmt.Errorf("refund: %w", err), nil
	}
	if !ok {
		return fmt.Errorf("refund %d: %w", id, metering.ErrUnknownAccount), nil
	}

	// Refunded before: the answer is the account, nothing changes.
	if rec.RefundedAt != nil {
		*out = acct
		return nil, nil
	}

	// What the debit holds goes back: as debited, or as settled. Either
	// balance may have been credited or reconciled since, so both are
	// checked for overflow.
	demo, paid := rec.held()
	if acct.DemoTokens > math.MaxInt64-demo || acct.PaidTokens > math.MaxInt64-paid {
		err := fmt.Errorf("refund %d: balance would overflow: %w", id, metering.ErrInvalidUnits)
		return err, nil
	}

	// Write: the balances with the journal entry, then the mark.
	acct.DemoTokens += demo
	acct.PaidTokens += paid
	if err := putAccount(tx, acct); err != nil {
		return nil, err
	}
	err = appendEntry(tx, metering.Entry{
		Time:             now,
		Kind:             metering.EntryRefund,
		UserAutomationID: id,
		DemoDelta:        demo,
		PaidDelta:        paid,
		UsageType:        rec.UsageType,
		IdempotencyKey:   req.IdempotencyKey,
		Reason:           req.Reason,
	})
	if err != nil {
		return nil, err
	}
	rec.RefundedAt = &now
	if err := putIdem(tx, req.IdempotencyKey, rec); err != nil {
		return nil, err
	}
	*out = acct
	return nil, nil
}

// priorClaim looks up key's claim: nil when key is empty or unclaimed, the
// record when the same kind of request with fingerprint fp claimed it, and
// ErrIdempotencyConflict when another request did.
func priorClaim(
	tx *bbolt.Tx,
	key string,
	kind metering.EntryKind,
	fp metering.Fingerprint,
) (*idemRecord, error) {
	if key == "" {
		return nil, nil
	}
	rec, ok, err := getIdem(tx, key)
	if err != nil || !ok {
		return nil, err
	}
	if !rec.matches(kind, fp) {
		return nil, metering.ErrIdempotencyConflict
	}
	return &rec, nil
}
