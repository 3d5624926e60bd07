package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// Each step runs inside one attempt's transaction (see write): it reads
// and decides first, returning a refusal sentinel as its error, and only
// then writes. Steps are rerun whole on a retry.

const (
	accountCols = `user_automation_id, user_id, demo_tokens, paid_tokens,
		bot_token_given, provisioned_at`

	sqlLockAccount = `SELECT ` + accountCols + `, created_call
		FROM accounts WHERE user_automation_id = $1 FOR UPDATE`

	sqlCreateAccount = `INSERT INTO accounts (` + accountCols + `, created_call)
		VALUES ($1, $2, $3, 0, $4, $5, $6)
		ON CONFLICT (user_automation_id) DO NOTHING`

	sqlRefreshAccount = `UPDATE accounts SET user_id = $2, bot_token_given = $3
		WHERE user_automation_id = $1`

	sqlSetBalances = `UPDATE accounts SET demo_tokens = $2, paid_tokens = $3
		WHERE user_automation_id = $1`

	// sqlAppendEntry takes the journal lock in shared mode before the
	// sequence hands out seq (the FROM clause runs first).
	sqlAppendEntry = `INSERT INTO journal (at, kind, user_automation_id,
			demo_delta, paid_delta, usage_type, idempotency_key, reason)
		SELECT $2::timestamptz, $3::text, $4::bigint, $5::bigint, $6::bigint,
			$7::text, $8::text, $9::text
		FROM pg_advisory_xact_lock_shared($1::bigint)`

	// sqlClaim stores a key's record; with $9 it links the journal entry
	// just appended in this transaction.
	sqlClaim = `INSERT INTO idempotency (key, kind, fingerprint,
			user_automation_id, internal, call_id, created_at, result, debit_seq)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
			CASE WHEN $9::boolean THEN currval('journal_seq_seq') END)`

	sqlGetClaim = `SELECT kind, fingerprint, user_automation_id, internal,
			call_id, result, coalesce(debit_seq, 0), refund_seq IS NOT NULL, settle
		FROM idempotency WHERE key = $1`

	sqlGetEntry = `SELECT demo_delta, paid_delta, usage_type FROM journal WHERE seq = $1`

	sqlMarkRefunded = `UPDATE idempotency SET refund_seq = currval('journal_seq_seq')
		WHERE key = $1`
)

// claim is what a key holds: the request's fingerprint, the call that
// made it and its first answer.
type claim struct {
	kind        metering.EntryKind
	fingerprint []byte
	id          int64
	internal    bool
	call        []byte
	result      []byte
	debitSeq    int64 // the journal entry of an accepted debit, else 0
	refunded    bool
	settle      []byte // the debit's settle as JSON, nil until settled
}

// matches reports whether c was claimed by a request of this kind and
// fingerprint.
func (c claim) matches(kind metering.EntryKind, fp metering.Fingerprint) bool {
	return c.kind == kind && bytes.Equal(c.fingerprint, fp[:])
}

// ownedBy reports whether call made c (an earlier attempt of this call).
func (c claim) ownedBy(call callID) bool { return bytes.Equal(c.call, call[:]) }

// getClaim reads the record of key; ok is false when the key is free. With
// forUpdate it locks the record until the transaction ends.
func getClaim(ctx context.Context, tx pgx.Tx, key string, forUpdate bool) (claim, bool, error) {
	q := sqlGetClaim
	if forUpdate {
		q += " FOR UPDATE"
	}
	var c claim
	var kind string
	err := tx.QueryRow(ctx, q, key).Scan(&kind, &c.fingerprint, &c.id, &c.internal,
		&c.call, &c.result, &c.debitSeq, &c.refunded, &c.settle)
	if errors.Is(err, pgx.ErrNoRows) {
		return claim{}, false, nil
	}
	if err != nil {
		return claim{}, false, fmt.Errorf("read idempotency record: %w", err)
	}
	c.kind = metering.EntryKind(kind)
	return c, true, nil
}

// lockAccount reads and locks one account; ok is false when it does not
// exist. created is the call id that created it.
func lockAccount(
	ctx context.Context,
	tx pgx.Tx,
	id int64,
) (a metering.Account, created []byte, ok bool, err error) {
	a, err = scanAccount(tx.QueryRow(ctx, sqlLockAccount, id), &created)
	if errors.Is(err, pgx.ErrNoRows) {
		return metering.Account{}, nil, false, nil
	}
	if err != nil {
		return metering.Account{}, nil, false, fmt.Errorf("read account %d: %w", id, err)
	}
	return a, created, true, nil
}

// scanAccount scans accountCols, then extra.
func scanAccount(row pgx.Row, extra ...any) (metering.Account, error) {
	var a metering.Account
	dest := append([]any{&a.UserAutomationID, &a.UserID, &a.DemoTokens, &a.PaidTokens,
		&a.BotTokenGiven, &a.ProvisionedAt}, extra...)
	if err := row.Scan(dest...); err != nil {
		return metering.Account{}, err
	}
	a.ProvisionedAt = a.ProvisionedAt.UTC()
	return a, nil
}

// entryArgs are sqlAppendEntry's arguments for e under lock key.
func entryArgs(lock int64, e metering.Entry) []any {
	return []any{lock, e.Time, string(e.Kind), e.UserAutomationID, e.DemoDelta,
		e.PaidDelta, e.UsageType, e.IdempotencyKey, e.Reason}
}

// sendAll runs queued statements in one round trip and returns the first
// error.
func sendAll(ctx context.Context, tx pgx.Tx, b *pgx.Batch) error {
	if b.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// provisionStep creates the account with its demo grant and journal
// entry, or refreshes an existing account's UserID and BotTokenGiven.
// Created is true when this call made the account, also when an earlier
// attempt of the call committed it.
func (s *Store) provisionStep(
	ctx context.Context,
	tx pgx.Tx,
	req metering.ProvisionRequest,
	grant int64,
	call callID,
	now time.Time,
) (metering.ProvisionResult, error) {
	id := req.UserAutomationID

	// Create, unless it exists; a racing creator's row is waited for.
	tag, err := tx.Exec(ctx, sqlCreateAccount,
		id, req.UserID, grant, req.BotTokenGiven, now, call[:])
	if err != nil {
		return metering.ProvisionResult{}, fmt.Errorf("create account: %w", err)
	}
	if tag.RowsAffected() == 1 {
		e := metering.Entry{Time: now, Kind: metering.EntryProvision,
			UserAutomationID: id, DemoDelta: grant}
		if _, err := tx.Exec(ctx, sqlAppendEntry, entryArgs(s.journalLock, e)...); err != nil {
			return metering.ProvisionResult{}, fmt.Errorf("append journal: %w", err)
		}
		acct := metering.Account{UserAutomationID: id, UserID: req.UserID,
			DemoTokens: grant, BotTokenGiven: req.BotTokenGiven, ProvisionedAt: now}
		return metering.ProvisionResult{Account: acct, Created: true}, nil
	}

	// Known account: refresh the facts, never the balances.
	acct, created, _, err := lockAccount(ctx, tx, id)
	if err != nil {
		return metering.ProvisionResult{}, err
	}
	if acct.UserID != req.UserID || acct.BotTokenGiven != req.BotTokenGiven {
		acct.UserID, acct.BotTokenGiven = req.UserID, req.BotTokenGiven
		if _, err := tx.Exec(ctx, sqlRefreshAccount, id, acct.UserID,
			acct.BotTokenGiven); err != nil {
			return metering.ProvisionResult{}, fmt.Errorf("refresh account: %w", err)
		}
	}
	own := bytes.Equal(created, call[:])
	return metering.ProvisionResult{Account: acct, Created: own}, nil
}

// priorClaim returns the claim an earlier call made on key, if any, for a
// request of kind with fingerprint fp; a claim made by another request is
// ErrIdempotencyConflict. A fresh internal key can be claimed only by an
// earlier attempt of this call, so it is looked up only on a retry.
func priorClaim(ctx context.Context, tx pgx.Tx, key string, internal, retried bool,
	kind metering.EntryKind, fp [32]byte) (claim, bool, error) {
	if internal && !retried {
		return claim{}, false, nil
	}
	c, ok, err := getClaim(ctx, tx, key, false)
	if err != nil || !ok {
		return claim{}, false, err
	}
	if !c.matches(kind, fp) {
		return claim{}, false, metering.ErrIdempotencyConflict
	}
	return c, true, nil
}

// consumeStep answers a claimed key with its first answer, else applies
// the demo rule to the locked account and writes the debit, its journal
// entry and the key's claim together. A keyed refusal claims its key too,
// so replays are refused alike; an unkeyed refusal writes nothing.
func (s *Store) consumeStep(
	ctx context.Context,
	tx pgx.Tx,
	req metering.ConsumeRequest,
	call callID,
	retried bool,
	now time.Time,
) (metering.ConsumeResult, error) {
	id := req.UserAutomationID
	fp := req.Fingerprint()
	key, internal := claimKey(req.IdempotencyKey, call)

	// A claimed key answers as it first did, or conflicts.
	c, ok, err := priorClaim(ctx, tx, key, internal, retried, metering.EntryDebit, fp)
	if err != nil {
		return metering.ConsumeResult{}, err
	}
	if ok {
		res, err := decodeConsume(c.result)
		if err != nil {
			return metering.ConsumeResult{}, err
		}
		res.Replayed, res.Refunded = !c.ownedBy(call), c.refunded
		return res, nil
	}

	// Decide on the locked balances.
	acct, _, ok, err := lockAccount(ctx, tx, id)
	if err != nil {
		return metering.ConsumeResult{}, err
	}
	if !ok {
		return metering.ConsumeResult{}, metering.ErrUnknownAccount
	}
	res := metering.Decide(s.opts.DemoRule, acct.DemoTokens, acct.PaidTokens, req.Units)
	if !res.Accepted && internal {
		return res, nil
	}

	// Write: the debit with its journal entry, then the key's claim.
	b := &pgx.Batch{}
	if res.Accepted {
		b.Queue(sqlSetBalances, id, res.RemainingDemo, res.RemainingPaid)
		b.Queue(sqlAppendEntry, entryArgs(s.journalLock, metering.Entry{
			Time: now, Kind: metering.EntryDebit, UserAutomationID: id,
			DemoDelta: -res.DemoDebited, PaidDelta: -res.PaidDebited,
			UsageType: req.UsageType, IdempotencyKey: req.IdempotencyKey,
		})...)
	}
	raw, err := encodeResult(res)
	if err != nil {
		return metering.ConsumeResult{}, err
	}
	b.Queue(sqlClaim, key, string(metering.EntryDebit), fp[:], id, internal, call[:],
		now, raw, res.Accepted)
	if err := sendAll(ctx, tx, b); err != nil {
		return metering.ConsumeResult{}, err
	}
	return res, nil
}

// creditStep answers a claimed key with the account as first answered,
// else adds paid tokens with a journal entry and claims the key.
func (s *Store) creditStep(
	ctx context.Context,
	tx pgx.Tx,
	req metering.CreditRequest,
	call callID,
	retried bool,
	now time.Time,
) (metering.Account, error) {
	id := req.UserAutomationID
	fp := req.Fingerprint()
	key, internal := claimKey(req.IdempotencyKey, call)

	// A claimed key answers as it first did, or conflicts.
	c, ok, err := priorClaim(ctx, tx, key, internal, retried, metering.EntryCredit, fp)
	if err != nil {
		return metering.Account{}, err
	}
	if ok {
		return decodeAccount(c.result)
	}

	// Check the locked account and that the credit fits.
	acct, _, ok, err := lockAccount(ctx, tx, id)
	if err != nil {
		return metering.Account{}, err
	}
	if !ok {
		return metering.Account{}, metering.ErrUnknownAccount
	}
	if err := metering.CheckCredit(acct.PaidTokens, req.Units); err != nil {
		return metering.Account{}, err
	}

	// Write: the credit with its journal entry, then the key's claim.
	acct.PaidTokens += req.Units
	raw, err := encodeResult(acct)
	if err != nil {
		return metering.Account{}, err
	}
	b := &pgx.Batch{}
	b.Queue(sqlSetBalances, id, acct.DemoTokens, acct.PaidTokens)
	b.Queue(sqlAppendEntry, entryArgs(s.journalLock, metering.Entry{
		Time: now, Kind: metering.EntryCredit, UserAutomationID: id,
		PaidDelta: req.Units, Reason: req.Reason, IdempotencyKey: req.IdempotencyKey,
	})...)
	b.Queue(sqlClaim, key, string(metering.EntryCredit), fp[:], id, internal, call[:],
		now, raw, false)
	if err := sendAll(ctx, tx, b); err != nil {
		return metering.Account{}, err
	}
	return acct, nil
}

// refundStep gives back the tokens of the accepted debit that key
// claimed on the account (as settled, once it was), once: the record is locked, and a refunded
// record answers with the account as it is now.
func (s *Store) refundStep(
	ctx context.Context,
	tx pgx.Tx,
	req metering.RefundRequest,
	now time.Time,
) (metering.Account, error) {
	id := req.UserAutomationID

	// Only an accepted debit of this account can be refunded.
	c, ok, err := getClaim(ctx, tx, req.IdempotencyKey, true)
	if err != nil {
		return metering.Account{}, err
	}
	if !ok || c.internal || c.kind != metering.EntryDebit || c.id != id || c.debitSeq == 0 {
		return metering.Account{}, metering.ErrUnknownDebit
	}
	acct, _, ok, err := lockAccount(ctx, tx, id)
	if err != nil {
		return metering.Account{}, err
	}
	if !ok {
		return metering.Account{}, metering.ErrUnknownAccount // not reachable: debits keep accounts
	}
	if c.refunded {
		return acct, nil
	}

	// What the debit holds goes back: as its own entry debited it, or
	// as it was settled.
	demo, paid, usage, err := held(ctx, tx, c)
	if err != nil {
		return metering.Account{}, err
	}
	if acct.DemoTokens > math.MaxInt64-demo || acct.PaidTokens > math.MaxInt64-paid {
		return metering.Account{}, fmt.Errorf("balance would overflow: %w",
			metering.ErrInvalidUnits)
	}

	// Write: the balances, the journal entry and the record's mark.
	acct.DemoTokens += demo
	acct.PaidTokens += paid
	b := &pgx.Batch{}
	b.Queue(sqlSetBalances, id, acct.DemoTokens, acct.PaidTokens)
	b.Queue(sqlAppendEntry, entryArgs(s.journalLock, metering.Entry{
		Time: now, Kind: metering.EntryRefund, UserAutomationID: id,
		DemoDelta: demo, PaidDelta: paid, UsageType: usage,
		IdempotencyKey: req.IdempotencyKey, Reason: req.Reason,
	})...)
	b.Queue(sqlMarkRefunded, req.IdempotencyKey)
	if err := sendAll(ctx, tx, b); err != nil {
		return metering.Account{}, err
	}
	return acct, nil
}

// held reads what the accepted debit c holds now, and its usage type:
// the debit entry's tokens, or the settle's split once it was settled.
func held(ctx context.Context, tx pgx.Tx, c claim) (demo, paid int64, usage string, err error) {
	err = tx.QueryRow(ctx, sqlGetEntry, c.debitSeq).Scan(&demo, &paid, &usage)
	if err != nil {
		return 0, 0, "", fmt.Errorf("read debit entry %d: %w", c.debitSeq, err)
	}
	demo, paid = -demo, -paid
	if demo < 0 || paid < 0 {
		return 0, 0, "", fmt.Errorf("debit entry %d: %w", c.debitSeq, errCorrupt)
	}
	if c.settle != nil {
		st, err := decodeSettle(c.settle)
		if err != nil {
			return 0, 0, "", err
		}
		demo, paid = st.Demo, st.Paid
	}
	return demo, paid, usage, nil
}
