package postgres

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// Key holds (metering.KeyHolder) are rows of key_holds: one INSERT takes
// a key, one DELETE frees it, and a hold lapses at its expires_at, on the
// database's clock, so a replica that died holding keys blocks them no
// longer than the ttl it asked for.

const (
	// sqlHoldKey takes key for token unless another token holds it and
	// that hold has not lapsed: one row written means held. A retry of a
	// hold whose reply was lost finds its own token and takes the key
	// again, so it never refuses itself.
	sqlHoldKey = `INSERT INTO key_holds AS h (key, token, expires_at)
		VALUES ($1, $2, now() + $3 * interval '1 millisecond')
		ON CONFLICT (key) DO UPDATE
			SET token = EXCLUDED.token, expires_at = EXCLUDED.expires_at
			WHERE h.expires_at <= now() OR h.token = EXCLUDED.token`

	// sqlReleaseKey frees key only while token holds it.
	sqlReleaseKey = `DELETE FROM key_holds WHERE key = $1 AND token = $2`

	// dropTimeout bounds the clean-up of a hold that failed.
	dropTimeout = 2 * time.Second
)

var _ metering.KeyHolder = (*Store)(nil)

// HoldKey implements metering.KeyHolder on the key_holds table, which
// every Store on the schema shares. key must be a valid, non-empty
// idempotency key (metering.CheckIdempotencyKey). Transient failures are
// retried like writes; when the hold fails for good, the row it may have
// written is deleted if the database still answers, and lapses after ttl
// if not.
func (s *Store) HoldKey(ctx context.Context, key string, ttl time.Duration) (string, bool, error) {
	if err := metering.CheckIdempotencyKey(key); err != nil || key == "" {
		return "", false, fmt.Errorf("hold key: %w", metering.ErrInvalidIdempotencyKey)
	}
	if ttl <= 0 {
		return "", false, fmt.Errorf("hold key: ttl %s: must be positive", ttl)
	}
	ms := max(ttl.Milliseconds(), 1)
	token := newToken()
	var held bool
	err := s.retry(ctx, func(ctx context.Context) error {
		tag, err := s.exec(ctx, sqlHoldKey, key, token, ms)
		held = err == nil && tag.RowsAffected() == 1
		return err
	})
	if err != nil {
		if !errors.Is(err, metering.ErrClosed) {
			s.dropHold(ctx, key, token)
		}
		return "", false, fmt.Errorf("hold key: %w", err)
	}
	return token, held, nil
}

// ReleaseKey implements metering.KeyHolder. Transient failures are
// retried like writes; deleting is harmless to repeat.
func (s *Store) ReleaseKey(ctx context.Context, key, token string) error {
	err := s.retry(ctx, func(ctx context.Context) error {
		_, err := s.exec(ctx, sqlReleaseKey, key, token)
		return err
	})
	if err != nil {
		return fmt.Errorf("release key hold: %w", err)
	}
	return nil
}

// dropHold deletes the hold a failed HoldKey may have left, once and
// bounded in time even when ctx is done.
func (s *Store) dropHold(ctx context.Context, key, token string) {
	if !s.enter() {
		return
	}
	defer s.leave()
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dropTimeout)
	defer cancel()
	_, _ = s.pool.Exec(dctx, sqlReleaseKey, key, token)
}

// exec runs one statement on a pooled connection, outside a transaction
// (it commits when it ends; the afterCommit test hook runs then). A
// connection whose server no longer takes writes is closed, so that a
// retry connects again and follows the DSN to the new primary.
func (s *Store) exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return pgconn.CommandTag{}, fmt.Errorf("connect: %w", err)
	}
	defer conn.Release()
	tag, err := conn.Exec(ctx, sql, args...)
	if err != nil && readOnly(err) {
		closeConn(conn.Conn())
	}
	if h := s.hooks.afterCommit; err == nil && h != nil {
		err = h()
	}
	return tag, err
}

// newToken draws a random hold token.
func newToken() string {
	var b [16]byte
	_, _ = crand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}
