package metering

import (
	"context"
	"time"
)

// The interfaces below are optional: a backend implements those that fit
// it, and callers find them with a type assertion on the Ledger.

// KeyHolder is implemented by a Ledger that several processes share (the
// PostgreSQL one), so that a key can be held for a call in flight in all
// of them at once. The proxy holds a client's idempotency key from the
// charge until the call is settled, so that two calls never share one
// debit; in one process an in-memory set does that, and a Ledger only one
// process can open (bolt) does not implement KeyHolder.
//
// Holds are not idempotency records: they are never journaled, never
// change a balance and are gone once released or lapsed.
type KeyHolder interface {
	// HoldKey claims key for ttl (> 0) unless another hold has it and has
	// not lapsed. held is false when another call holds the key, in this
	// process or another; token names this hold for ReleaseKey. A hold
	// lapses by itself ttl after it was taken, so one left by a process
	// that died is free again by then; choose ttl above the longest the
	// call may take. On an error the key is not held: the caller must
	// act as if another call held it, or fail.
	HoldKey(ctx context.Context, key string, ttl time.Duration) (token string, held bool, err error)

	// ReleaseKey frees key if the hold token names still has it. A hold
	// that lapsed and was taken by another call is left alone, and
	// releasing twice is harmless. On an error the hold lapses after its
	// ttl.
	ReleaseKey(ctx context.Context, key, token string) error
}

// Pruner is implemented by a Ledger that can forget old idempotency
// records, so that they do not grow forever. Both backends implement it.
type Pruner interface {
	// PruneIdempotency deletes the records of callers' idempotency keys
	// (those of Consume and Credit, refusals included) created before
	// before, and returns how many it deleted. A pruned key is free
	// again: a request with it is a new request, and a Refund or Settle
	// naming it is ErrUnknownDebit. So before must be older than any
	// retry a client may still send and any refund or settle still to
	// come. Balances and the journal are never touched.
	//
	// It works in bounded batches, each its own short transaction, so
	// other writes wait at most for one batch. It stops between batches
	// when ctx ends, returning what it deleted so far and ctx's error.
	PruneIdempotency(ctx context.Context, before time.Time) (int64, error)
}
