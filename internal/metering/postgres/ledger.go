package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

var _ metering.Ledger = (*Store)(nil)

// Provision implements metering.Ledger.
func (s *Store) Provision(
	ctx context.Context,
	req metering.ProvisionRequest,
) (metering.ProvisionResult, error) {
	grant, err := metering.GrantFor(req, s.opts.DefaultDemoTokens)
	if err != nil {
		return metering.ProvisionResult{}, fmt.Errorf("provision %d: %w", req.UserAutomationID, err)
	}
	call, now := newCallID(), s.now()
	var res metering.ProvisionResult
	err = s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		res, err = s.provisionStep(ctx, tx, req, grant, call, now)
		return err
	})
	if err != nil {
		return metering.ProvisionResult{}, fmt.Errorf("provision %d: %w", req.UserAutomationID, err)
	}
	return res, nil
}

// Consume implements metering.Ledger.
func (s *Store) Consume(
	ctx context.Context,
	req metering.ConsumeRequest,
) (metering.ConsumeResult, error) {
	id := req.UserAutomationID
	if err := metering.CheckUnits(req.Units, s.opts.MaxUnits); err != nil {
		return metering.ConsumeResult{}, fmt.Errorf("consume %d: %w", id, err)
	}
	if err := metering.CheckIdempotencyKey(req.IdempotencyKey); err != nil {
		return metering.ConsumeResult{}, fmt.Errorf("consume %d: %w", id, err)
	}
	call, now := newCallID(), s.now()
	var res metering.ConsumeResult
	attempts := 0
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		attempts++
		res, err = s.consumeStep(ctx, tx, req, call, attempts > 1, now)
		return err
	})
	if err != nil {
		return metering.ConsumeResult{}, fmt.Errorf("consume %d: %w", id, err)
	}
	return res, nil
}

// Credit implements metering.Ledger.
func (s *Store) Credit(ctx context.Context, req metering.CreditRequest) (metering.Account, error) {
	id := req.UserAutomationID
	if err := metering.CheckIdempotencyKey(req.IdempotencyKey); err != nil {
		return metering.Account{}, fmt.Errorf("credit %d: %w", id, err)
	}
	if req.Units <= 0 {
		return metering.Account{}, fmt.Errorf("credit %d: %w", id,
			metering.CheckCredit(0, req.Units))
	}
	call, now := newCallID(), s.now()
	var acct metering.Account
	attempts := 0
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		attempts++
		acct, err = s.creditStep(ctx, tx, req, call, attempts > 1, now)
		return err
	})
	if err != nil {
		return metering.Account{}, fmt.Errorf("credit %d: %w", id, err)
	}
	return acct, nil
}

// Refund implements metering.Ledger. An empty key names no debit
// (ErrUnknownDebit); a malformed one is ErrInvalidIdempotencyKey.
func (s *Store) Refund(ctx context.Context, req metering.RefundRequest) (metering.Account, error) {
	id := req.UserAutomationID
	if err := metering.CheckIdempotencyKey(req.IdempotencyKey); err != nil {
		return metering.Account{}, fmt.Errorf("refund %d: %w", id, err)
	}
	if req.IdempotencyKey == "" {
		return metering.Account{}, fmt.Errorf("refund %d: empty key: %w", id,
			metering.ErrUnknownDebit)
	}
	now := s.now()
	var acct metering.Account
	err := s.write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		acct, err = s.refundStep(ctx, tx, req, now)
		return err
	})
	if err != nil {
		return metering.Account{}, fmt.Errorf("refund %d: %w", id, err)
	}
	return acct, nil
}

// Account implements metering.Ledger.
func (s *Store) Account(ctx context.Context, userAutomationID int64) (metering.Account, error) {
	if err := ctx.Err(); err != nil {
		return metering.Account{}, err
	}
	if !s.enter() {
		return metering.Account{}, metering.ErrClosed
	}
	defer s.leave()
	const q = `SELECT ` + accountCols + ` FROM accounts WHERE user_automation_id = $1`
	a, err := scanAccount(s.pool.QueryRow(ctx, q, userAutomationID))
	if errors.Is(err, pgx.ErrNoRows) {
		return metering.Account{}, fmt.Errorf("account %d: %w",
			userAutomationID, metering.ErrUnknownAccount)
	}
	if err != nil {
		return metering.Account{}, fmt.Errorf("account %d: %w", userAutomationID, err)
	}
	return a, nil
}
