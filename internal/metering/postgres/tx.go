package postgres

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// callID identifies one call to a write method across its attempts.
type callID [16]byte

// newCallID draws a random call id.
func newCallID() callID {
	var c callID
	_, _ = crand.Read(c[:]) // never fails (crypto/rand)
	return c
}

// internalKeyPrefix starts every internal key. 0x01 is outside the
// printable ASCII that metering.CheckIdempotencyKey allows in a caller's
// key, so the two never collide.
const internalKeyPrefix = "\x01call:"

// claimKey is the key a write claims: the caller's, or the call's own.
func claimKey(callerKey string, call callID) (key string, internal bool) {
	if callerKey != "" {
		return callerKey, false
	}
	return internalKeyPrefix + hex.EncodeToString(call[:]), true
}

// txFunc is one attempt's work inside its transaction. It must be safe to
// run again after a failed attempt and set its results on every run.
type txFunc func(ctx context.Context, tx pgx.Tx) error

// write runs fn in a transaction, retrying transient failures (see the
// package doc). It returns fn's error, a database error or ErrClosed.
func (s *Store) write(ctx context.Context, fn txFunc) error {
	return s.retry(ctx, func(ctx context.Context) error { return s.attempt(ctx, fn) })
}

// retry runs one attempt after another until one succeeds, fails for
// good, or s.retries retries were spent, waiting backoff between them.
// attempt must be safe to run again after it failed. It returns the last
// attempt's error or ErrClosed.
func (s *Store) retry(ctx context.Context, attempt func(ctx context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !s.enter() {
		return metering.ErrClosed
	}
	defer s.leave()
	for n := 0; ; n++ {
		err := attempt(ctx)
		if err == nil || n >= s.retries || !retryable(err) || ctx.Err() != nil {
			return err
		}
		if werr := sleep(ctx, backoff(s.backoff, n)); werr != nil {
			return fmt.Errorf("%w (gave up retrying: %w)", err, werr)
		}
	}
}

// attempt runs fn in one transaction and commits it.
func (s *Store) attempt(ctx context.Context, fn txFunc) (err error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil && readOnly(err) {
			// The server was demoted: drop this connection so the retry
			// connects again, following the DSN to the new primary.
			closeTxConn(ctx, tx)
		}
		if err != nil {
			rollback(ctx, tx)
		}
	}()
	if err := fn(ctx, tx); err != nil {
		return err
	}
	if h := s.hooks.beforeCommit; h != nil {
		if err := h(ctx, tx.Conn().PgConn().PID()); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if h := s.hooks.afterCommit; h != nil {
		if err := h(); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
	}
	return nil
}

// rollback ends a failed transaction, bounded in time even when ctx is
// done; a broken connection is discarded by the pool.
func rollback(ctx context.Context, tx pgx.Tx) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = tx.Rollback(rctx)
}

// readOnly reports whether err says the server no longer takes writes.
func readOnly(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "25006"
}

// closeTxConn closes the transaction's connection; the pool discards it
// when it is released.
func closeTxConn(ctx context.Context, tx pgx.Tx) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = tx.Conn().Close(cctx)
}

// SQLSTATE codes that mark a transient failure.
var transientCodes = map[string]bool{
	"40001": true, // serialization_failure
	"40P01": true, // deadlock_detected
	"57P01": true, // admin_shutdown: the backend was terminated
	"57P02": true, // crash_shutdown
	"57P03": true, // cannot_connect_now: starting up or in recovery
	"25006": true, // read_only_sql_transaction: a demoted primary
}

// retryable reports whether a failed attempt may be tried again. Every
// write claims a key or is harmless to repeat (package doc), so any
// failure that is not a definite answer qualifies; a context's end never
// does.
func retryable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case transientCodes[pgErr.Code]:
			return true
		case pgErr.Code == "23505":
			// Another call claimed the same key or created the same
			// account first; the retry reads its answer.
			return pgErr.ConstraintName == "idempotency_pkey" ||
				pgErr.ConstraintName == "accounts_pkey"
		}
		return len(pgErr.Code) == 5 && pgErr.Code[:2] == "08" // connection exception
	}
	var netErr net.Error
	var connectErr *pgconn.ConnectError
	return pgconn.SafeToRetry(err) ||
		errors.Is(err, pgconn.ErrConnClosed) ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) ||
		errors.As(err, &netErr) ||
		errors.As(err, &connectErr)
}

// backoff is the wait before retry attempt+1: base doubled attempt times,
// capped, with the upper half jittered so replicas do not retry in step.
func backoff(base time.Duration, attempt int) time.Duration {
	d := base
	for range attempt {
		if d >= maxRetryBackoff/2 {
			d = maxRetryBackoff
			break
		}
		d *= 2
	}
	d = min(d, maxRetryBackoff)
	return d/2 + rand.N(d/2+1)
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
