package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// Pool and retry defaults, used where PoolOptions leave a field zero.
const (
	DefaultMaxConns       = 10
	DefaultConnectTimeout = 5 * time.Second
	DefaultRetries        = 4
	DefaultRetryBackoff   = 25 * time.Millisecond

	// maxRetryBackoff caps one wait between attempts.
	maxRetryBackoff = 2 * time.Second
)

// PoolOptions size the connection pool and bound retries. The zero value
// is usable: see each field for what zero means.
type PoolOptions struct {
	// MaxConns bounds the open connections of this Store; callers beyond
	// it wait for a free one (bounded by their context). Zero means
	// DefaultMaxConns, or pool_max_conns when the DSN sets it.
	MaxConns int32

	// ConnectTimeout bounds one connection attempt. Zero means
	// DefaultConnectTimeout, or connect_timeout when the DSN sets it.
	ConnectTimeout time.Duration

	// MaxConnLifetime closes connections older than this, so a pool
	// moves to a new primary over time. Zero means pgxpool's default
	// (one hour).
	MaxConnLifetime time.Duration

	// Retries is how many times a write whose attempt failed transiently
	// is tried again. Zero means DefaultRetries; negative means never.
	Retries int

	// RetryBackoff is the wait before the first retry; it doubles for
	// each further one, with jitter, up to two seconds. Zero means
	// DefaultRetryBackoff.
	RetryBackoff time.Duration

	// SkipMigrate makes Open check that the schema is current instead of
	// migrating it, for deployments that run Migrate (the migrate
	// command) separately, often as a more privileged role.
	SkipMigrate bool
}

// Validate reports the first invalid field. Zero values are valid.
func (p PoolOptions) Validate() error {
	switch {
	case p.MaxConns < 0:
		return fmt.Errorf("max conns %d: must not be negative", p.MaxConns)
	case p.ConnectTimeout < 0:
		return fmt.Errorf("connect timeout %s: must not be negative", p.ConnectTimeout)
	case p.MaxConnLifetime < 0:
		return fmt.Errorf("max conn lifetime %s: must not be negative", p.MaxConnLifetime)
	case p.RetryBackoff < 0:
		return fmt.Errorf("retry backoff %s: must not be negative", p.RetryBackoff)
	}
	return nil
}

// errBadDSN replaces the driver's parse error, whose text may quote the
// DSN and so its password.
var errBadDSN = errors.New("dsn is not a valid PostgreSQL connection string " +
	"(URL or key=value form; the value is not shown)")

// Store is a metering.Ledger on a PostgreSQL schema. It is safe for
// concurrent use, and several Stores, in one process or many, may share
// one schema. Close releases its pool.
type Store struct {
	pool        *pgxpool.Pool
	opts        metering.Options // after WithDefaults
	retries     int              // >= 0
	backoff     time.Duration    // > 0
	journalLock int64            // advisory lock key of the journal horizon
	pruneBatch  int              // rows one pruning statement deletes, > 0

	// mu guards closed; calls hold inflight from entry to return, so
	// Close can wait for them before closing the pool.
	mu       sync.RWMutex
	closed   bool
	inflight sync.WaitGroup

	closeOnce sync.Once

	// hooks inject faults around COMMIT; tests only, set before use.
	hooks hooks
}

// hooks are test fault injectors. beforeCommit runs after a transaction's
// writes, with its connection's backend pid; afterCommit runs after a
// successful COMMIT (or a key hold's statement) and may return an error
// as if the reply were lost.
type hooks struct {
	beforeCommit func(ctx context.Context, pid uint32) error
	afterCommit  func() error
}

// Open connects to the database dsn names, applies pending migrations (or,
// with popts.SkipMigrate, checks the schema version) and returns a Store
// that uses at most popts.MaxConns connections. dsn is a PostgreSQL URL or
// key=value string; its search_path parameter selects the schema. ctx
// bounds the connection and migration work of Open only. Errors never
// contain the DSN.
func Open(
	ctx context.Context,
	dsn string,
	opts metering.Options,
	popts PoolOptions,
) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	if err := popts.Validate(); err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	cfg, err := parseDSN(dsn, popts)
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	s := &Store{
		pool:    pool,
		opts:    opts.WithDefaults(),
		retries: retriesOf(popts.Retries),
		backoff: cmpOr(popts.RetryBackoff, DefaultRetryBackoff),

		pruneBatch: defaultPruneBatch,
	}
	if err := s.prepare(ctx, popts.SkipMigrate); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	return s, nil
}

// prepare migrates or checks the schema on one pooled connection and
// derives the journal lock key.
func (s *Store) prepare(ctx context.Context, skipMigrate bool) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Release()
	if skipMigrate {
		err = checkVersion(ctx, conn)
	} else {
		err = migrate(ctx, conn.Conn(), migrations)
	}
	if err != nil {
		return err
	}
	s.journalLock, err = lockKey(ctx, conn, "journal")
	return err
}

// parseDSN turns dsn into a pool configuration with popts applied.
func parseDSN(dsn string, popts PoolOptions) (*pgxpool.Config, error) {
	if strings.TrimSpace(dsn) == "" {
		// An empty string would make the driver fall back to PG*
		// variables and a local socket: never a deliberate choice here.
		return nil, errors.New("dsn is empty")
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, errBadDSN
	}
	if popts.MaxConns > 0 {
		cfg.MaxConns = popts.MaxConns
	} else if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = DefaultMaxConns
	}
	if popts.ConnectTimeout > 0 {
		cfg.ConnConfig.ConnectTimeout = popts.ConnectTimeout
	} else if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	if popts.MaxConnLifetime > 0 {
		cfg.MaxConnLifetime = popts.MaxConnLifetime
	}
	return cfg, nil
}

// retriesOf maps PoolOptions.Retries to a count of extra attempts.
func retriesOf(n int) int {
	switch {
	case n < 0:
		return 0
	case n == 0:
		return DefaultRetries
	}
	return n
}

// cmpOr returns d, or def when d is zero.
func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Close stops accepting calls, waits for the calls in flight to return and
// closes the pool. It is idempotent and safe to call concurrently; it
// always returns nil.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.inflight.Wait()
		s.pool.Close()
	})
	return nil
}

// Ping checks that the database answers, for readiness probes.
func (s *Store) Ping(ctx context.Context) error {
	if !s.enter() {
		return metering.ErrClosed
	}
	defer s.leave()
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping ledger: %w", err)
	}
	return nil
}

// enter admits a call unless the store is closed; the caller must leave.
func (s *Store) enter() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return false
	}
	s.inflight.Add(1)
	return true
}

// leave ends a call that entered.
func (s *Store) leave() { s.inflight.Done() }

// now is the configured clock in UTC, at the database's microsecond
// precision, so that an answer and its stored record agree.
func (s *Store) now() time.Time {
	return s.opts.Now().UTC().Truncate(time.Microsecond)
}

// closeConn closes a lone connection, bounded in time.
func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}
