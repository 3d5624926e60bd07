package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// journalChunk is how many entries Journal reads per query.
const journalChunk = 256

// Journal implements metering.Ledger. It visits entries up to the horizon
// read when it starts (see the package doc), in chunks, and calls fn
// outside any transaction, so fn may call the Store. Entries appended
// after the horizon was read are not visited.
func (s *Store) Journal(
	ctx context.Context,
	after uint64,
	limit int,
	fn func(metering.Entry) error,
) error {
	horizon, err := s.horizon(ctx)
	if err != nil {
		return err
	}
	visited := 0
	for after < horizon {
		n := journalChunk
		if limit > 0 && limit-visited < n {
			n = limit - visited
		}
		chunk, err := s.readJournal(ctx, after, horizon, n)
		if err != nil {
			return err
		}
		for _, e := range chunk {
			if err := fn(e); err != nil {
				return err
			}
			after = e.Seq
		}
		visited += len(chunk)
		if len(chunk) < n || (limit > 0 && visited >= limit) {
			return nil
		}
	}
	return nil
}

// horizon waits until no journal append is in flight, by taking the
// journal lock exclusively, and returns the last sequence number handed
// out: every entry at or below it is now committed or gone for good.
func (s *Store) horizon(ctx context.Context) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if !s.enter() {
		return 0, metering.ErrClosed
	}
	defer s.leave()
	var last int64
	var called bool
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", s.journalLock); err != nil {
			return err
		}
		return tx.QueryRow(ctx,
			"SELECT last_value, is_called FROM journal_seq_seq").Scan(&last, &called)
	})
	if err != nil {
		return 0, fmt.Errorf("journal horizon: %w", err)
	}
	if !called || last < 0 {
		return 0, nil
	}
	return uint64(last), nil
}

// readJournal returns up to n entries with after < Seq <= horizon, in
// order.
func (s *Store) readJournal(
	ctx context.Context,
	after, horizon uint64,
	n int,
) ([]metering.Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !s.enter() {
		return nil, metering.ErrClosed
	}
	defer s.leave()
	const q = `SELECT seq, at, kind, user_automation_id, demo_delta, paid_delta,
			usage_type, idempotency_key, reason
		FROM journal WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3`
	rows, err := s.pool.Query(ctx, q, int64(after), int64(horizon), n)
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (metering.Entry, error) {
		var e metering.Entry
		var seq int64
		var kind string
		err := row.Scan(&seq, &e.Time, &kind, &e.UserAutomationID, &e.DemoDelta,
			&e.PaidDelta, &e.UsageType, &e.IdempotencyKey, &e.Reason)
		e.Seq, e.Kind, e.Time = uint64(seq), metering.EntryKind(kind), e.Time.UTC()
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	return out, nil
}
