package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// Pruning deletes rows in batches of at most pruneBatch, each one
// statement and so one short transaction. Rows another transaction has
// locked (a refund locks its debit's record) are skipped, not waited
// for, so pruning never queues behind a write, and several replicas
// pruning at once share the work instead of blocking each other.

// defaultPruneBatch bounds the rows one pruning statement deletes.
const defaultPruneBatch = 1000

const (
	sqlPruneCallerKeys = `DELETE FROM idempotency WHERE key IN (
		SELECT key FROM idempotency WHERE NOT internal AND created_at < $1
		LIMIT $2 FOR UPDATE SKIP LOCKED)`

	sqlPruneCalls = `DELETE FROM idempotency WHERE key IN (
		SELECT key FROM idempotency WHERE internal AND created_at < $1
		LIMIT $2 FOR UPDATE SKIP LOCKED)`

	sqlPruneHolds = `DELETE FROM key_holds WHERE key IN (
		SELECT key FROM key_holds WHERE expires_at < now()
		LIMIT $1 FOR UPDATE SKIP LOCKED)`
)

var _ metering.Pruner = (*Store)(nil)

// PruneIdempotency implements metering.Pruner: it deletes the records of
// callers' keys created before before (by the Store's clock, as they
// were stamped). Internal call records are PruneCalls' job.
func (s *Store) PruneIdempotency(ctx context.Context, before time.Time) (int64, error) {
	return s.prune(ctx, "idempotency records", sqlPruneCallerKeys, before.UTC())
}

// PruneCalls deletes the internal call records (see the package doc)
// created before before and returns how many it deleted, in batches like
// PruneIdempotency. Records of callers' idempotency keys are kept. A
// record is needed only while its call runs, so any cutoff older than the
// longest request deadline is safe; an hour ago is plenty. Any replica
// may run it, and several may at once.
func (s *Store) PruneCalls(ctx context.Context, before time.Time) (int64, error) {
	return s.prune(ctx, "call records", sqlPruneCalls, before.UTC())
}

// PruneHolds deletes key holds that lapsed (see HoldKey), left by
// replicas that stopped before releasing them, and returns how many it
// deleted. A lapsed hold blocks nothing, since the next hold of its key
// takes it over; pruning only keeps the table small.
func (s *Store) PruneHolds(ctx context.Context) (int64, error) {
	return s.prune(ctx, "key holds", sqlPruneHolds)
}

// prune runs sql, with args and the batch bound as its last argument,
// until a batch deletes less than the bound.
func (s *Store) prune(ctx context.Context, what, sql string, args ...any) (int64, error) {
	args = append(args, s.pruneBatch)
	var total int64
	for {
		n, err := s.pruneBatchOnce(ctx, sql, args)
		total += n
		if err != nil {
			return total, fmt.Errorf("prune %s: %w", what, err)
		}
		if n < int64(s.pruneBatch) {
			return total, nil
		}
	}
}

// pruneBatchOnce runs one pruning statement, unless ctx ended or the
// store is closed.
func (s *Store) pruneBatchOnce(ctx context.Context, sql string, args []any) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if !s.enter() {
		return 0, metering.ErrClosed
	}
	defer s.leave()
	tag, err := s.pool.Exec(ctx, sql, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}
