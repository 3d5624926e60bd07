package outbox

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Defaults of PostgresOptions.
const (
	DefaultTable        = "sidecar_outbox"
	DefaultRecountEvery = time.Second
)

// PostgresOptions configure a PostgresStore.
type PostgresOptions struct {
	// Table is the outbox table's name, created in the first schema of
	// the connection's search_path; empty means DefaultTable. Lowercase
	// letters, digits and '_', at most 50 characters.
	Table string
	// Max bounds the items stored; zero means DefaultMax. See
	// PostgresStore for how replicas share it.
	Max int
	// RecountEvery is how old the store's item count may get before
	// Add or Claim counts the table again; zero means
	// DefaultRecountEvery.
	RecountEvery time.Duration
}

// tableName is what PostgresOptions.Table accepts.
var tableName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,49}$`)

// PostgresStore is a Store in one PostgreSQL table that sidecar replicas
// share. Each item is delivered by one replica: Claim takes due rows
// with FOR UPDATE SKIP LOCKED and marks them claimed until a deadline,
// after which a crashed replica's items come back to the others (a
// consume that may have been sent comes back as unknown instead). The
// claim times come from the deliverers' clocks, so replicas need clocks
// that agree to well within the claim duration.
//
// The bound is kept with a count of the table in memory, refreshed at
// most every RecountEvery and adjusted by this store's own writes: a
// store refuses what would take its count past Max, so one replica alone
// keeps the bound, but replicas adding at once may together pass Max by
// what the others added since the last count (at most one RecountEvery
// of their traffic).
//
// The store uses the pool it is given and never closes it.
type PostgresStore struct {
	pool         *pgxpool.Pool
	sql          pgQueries
	max          int
	recountEvery time.Duration

	count     atomic.Int64 // items in the table, as last counted and adjusted since
	reserved  atomic.Int64 // room held by Adds under way
	countedAt atomic.Int64 // Unix nanoseconds of the last count
	recountMu sync.Mutex   // one recount at a time
	closed    atomic.Bool
}

var _ Store = (*PostgresStore)(nil)

// OpenPostgres creates the outbox table and its indexes if they do not
// exist (under an advisory lock, so replicas starting together do not
// collide) and returns a store on it.
func OpenPostgres(ctx context.Context, pool *pgxpool.Pool, opts PostgresOptions) (
	*PostgresStore, error,
) {
	if pool == nil {
		return nil, errors.New("open outbox: nil pool")
	}
	if opts.Table == "" {
		opts.Table = DefaultTable
	}
	if !tableName.MatchString(opts.Table) {
		return nil, fmt.Errorf("open outbox: table name %q: want lowercase letters, "+
			"digits and '_', at most 50", opts.Table)
	}
	if opts.Max < 0 || opts.RecountEvery < 0 {
		return nil, errors.New("open outbox: negative max or recount interval")
	}
	s := &PostgresStore{
		pool:         pool,
		sql:          newPgQueries(opts.Table),
		max:          cmp.Or(opts.Max, DefaultMax),
		recountEvery: cmp.Or(opts.RecountEvery, DefaultRecountEvery),
	}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, s.sql.lock, opts.Table); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		if _, err := tx.Exec(ctx, s.sql.create); err != nil {
			return fmt.Errorf("create table: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open outbox table %s: %w", opts.Table, err)
	}
	if err := s.recount(ctx); err != nil {
		return nil, fmt.Errorf("open outbox table %s: %w", opts.Table, err)
	}
	return s, nil
}

// cmp0 returns v, or def when v is zero.
func cmp0[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// Add implements Store. It writes the items in one INSERT.
func (s *PostgresStore) Add(ctx context.Context, items []Item) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := checkNew(items); err != nil {
		return err
	}
	if len(items) == 0 {
		return nil
	}
	if err := s.maybeRecount(ctx); err != nil {
		return fmt.Errorf("outbox: add items: %w", err)
	}
	n := len(items)
	if !s.reserve(n) {
		return ErrFull
	}
	defer s.reserved.Add(-int64(n))
	ids, kinds, states := make([]string, n), make([]string, n), make([]string, n)
	dues, created := make([]time.Time, n), make([]time.Time, n)
	records := make([]string, n)
	for i, it := range items {
		raw, err := json.Marshal(it.Record)
		if err != nil {
			return fmt.Errorf("outbox: encode record: %w", err)
		}
		ids[i], kinds[i], states[i] = it.ID, string(it.Kind), string(it.State)
		dues[i], created[i], records[i] = it.NextAttempt, it.CreatedAt, string(raw)
	}
	tag, err := s.pool.Exec(ctx, s.sql.add, ids, kinds, states, dues, created, records)
	if err != nil {
		return fmt.Errorf("outbox: add items: %w", err)
	}
	s.count.Add(tag.RowsAffected())
	return nil
}

// reserve holds room for n items unless that would pass the bound.
func (s *PostgresStore) reserve(n int) bool {
	if s.reserved.Add(int64(n))+s.count.Load() > int64(s.max) {
		s.reserved.Add(-int64(n))
		return false
	}
	return true
}

// Full implements Store: the count kept in memory, with the room that
// Adds under way hold, is at Max.
func (s *PostgresStore) Full() bool {
	return s.count.Load()+s.reserved.Load() >= int64(s.max)
}

// Count implements Store.
func (s *PostgresStore) Count() int { return int(s.count.Load()) }

// Claim implements Store.
func (s *PostgresStore) Claim(ctx context.Context, c Claim) ([]Item, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if c.Limit <= 0 || c.Owner == "" {
		return nil, errors.New("claim: owner and a positive limit are required")
	}
	if err := s.maybeRecount(ctx); err != nil {
		return nil, fmt.Errorf("outbox: claim items: %w", err)
	}
	if _, err := s.pool.Exec(ctx, s.sql.parkLapsed, c.Now, lapseNote); err != nil {
		return nil, fmt.Errorf("outbox: park lapsed consumes: %w", err)
	}
	rows, err := s.pool.Query(ctx, s.sql.claim, c.Now, c.Owner, c.Until, c.Limit)
	if err != nil {
		return nil, fmt.Errorf("outbox: claim items: %w", err)
	}
	items, err := pgx.CollectRows(rows, scanItem)
	if err != nil {
		return nil, fmt.Errorf("outbox: claim items: %w", err)
	}
	slices.SortFunc(items, func(a, b Item) int { return a.NextAttempt.Compare(b.NextAttempt) })
	return items, nil
}

// Begin implements Store.
func (s *PostgresStore) Begin(ctx context.Context, c Claim, ids []string) ([]string, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, s.sql.begin, c.Owner, c.Now, c.Until, ids)
	if err != nil {
		return nil, fmt.Errorf("outbox: begin items: %w", err)
	}
	held, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("outbox: begin items: %w", err)
	}
	return held, nil
}

// Finish implements Store: one transaction deletes the done items and
// updates the others.
func (s *PostgresStore) Finish(ctx context.Context, owner string, outcomes []Outcome) error {
	if s.closed.Load() {
		return ErrClosed
	}
	var done, ids, states, errs []string
	var nexts []time.Time
	for _, o := range outcomes {
		if err := checkOutcome(o); err != nil {
			return err
		}
		if o.Done {
			done = append(done, o.ID)
			continue
		}
		ids, states = append(ids, o.ID), append(states, string(o.State))
		nexts, errs = append(nexts, o.Next), append(errs, clampError(o.Error))
	}
	var removed int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		removed = 0
		if len(done) > 0 {
			tag, err := tx.Exec(ctx, s.sql.remove, done)
			if err != nil {
				return err
			}
			removed = tag.RowsAffected()
		}
		if len(ids) > 0 {
			_, err := tx.Exec(ctx, s.sql.finish, owner, ids, states, nexts, errs)
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("outbox: finish items: %w", err)
	}
	s.count.Add(-removed)
	return nil
}

// List implements Store.
func (s *PostgresStore) List(ctx context.Context, f Filter) ([]Item, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	rows, err := s.pool.Query(ctx, s.sql.list, string(f.Kind), string(f.State), listLimit(f))
	if err != nil {
		return nil, fmt.Errorf("outbox: list items: %w", err)
	}
	items, err := pgx.CollectRows(rows, scanItem)
	if err != nil {
		return nil, fmt.Errorf("outbox: list items: %w", err)
	}
	return items, nil
}

// Stats implements Store.
func (s *PostgresStore) Stats(ctx context.Context) (Stats, error) {
	if s.closed.Load() {
		return Stats{}, ErrClosed
	}
	st := Stats{Max: s.max}
	rows, err := s.pool.Query(ctx, s.sql.stats)
	if err != nil {
		return Stats{}, fmt.Errorf("outbox: count items: %w", err)
	}
	var kind, state string
	var n int
	var oldest time.Time
	_, err = pgx.ForEachRow(rows, []any{&kind, &state, &n, &oldest}, func() error {
		st.counts(Kind(kind)).add(State(state), n)
		st.Total += n
		if State(state) == StatePending &&
			(st.OldestPending.IsZero() || oldest.Before(st.OldestPending)) {
			st.OldestPending = oldest
		}
		return nil
	})
	if err != nil {
		return Stats{}, fmt.Errorf("outbox: count items: %w", err)
	}
	s.setCount(int64(st.Total))
	return st, nil
}

// Resolve implements Store.
func (s *PostgresStore) Resolve(ctx context.Context, id string, a Action, now time.Time) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if a != ActionRequeue && a != ActionDrop {
		return fmt.Errorf("resolve %s: unknown action %q", id, a)
	}
	removed := false
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var state string
		err := tx.QueryRow(ctx, s.sql.lockItem, id).Scan(&state)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return ErrNotFound
		case err != nil:
			return err
		case State(state) == StatePending:
			return ErrNotParked
		case a == ActionDrop:
			removed = true
			_, err = tx.Exec(ctx, s.sql.remove, []string{id})
			return err
		}
		_, err = tx.Exec(ctx, s.sql.requeue, id, now)
		return err
	})
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrNotParked):
		return err
	case err != nil:
		return fmt.Errorf("outbox: resolve %s: %w", id, err)
	}
	if removed {
		s.count.Add(-1)
	}
	return nil
}

// Close implements Store. It does not close the pool.
func (s *PostgresStore) Close() error {
	s.closed.Store(true)
	return nil
}

// maybeRecount counts the table when the count is older than
// recountEvery, unless another call is counting it.
func (s *PostgresStore) maybeRecount(ctx context.Context) error {
	if time.Now().UnixNano()-s.countedAt.Load() < int64(s.recountEvery) {
		return nil
	}
	if !s.recountMu.TryLock() {
		return nil
	}
	defer s.recountMu.Unlock()
	return s.recount(ctx)
}

// recount counts the table.
func (s *PostgresStore) recount(ctx context.Context) error {
	var n int64
	if err := s.pool.QueryRow(ctx, s.sql.count).Scan(&n); err != nil {
		return fmt.Errorf("count items: %w", err)
	}
	s.setCount(n)
	return nil
}

// setCount stores a fresh count.
func (s *PostgresStore) setCount(n int64) {
	s.count.Store(n)
	s.countedAt.Store(time.Now().UnixNano())
}

// scanItem reads a row of the item columns.
func scanItem(row pgx.CollectableRow) (Item, error) {
	var it Item
	var kind, state string
	var raw []byte
	err := row.Scan(&it.ID, &kind, &state, &it.Attempts, &it.LastError, &it.NextAttempt,
		&it.Claimed, &it.CreatedAt, &raw)
	if err != nil {
		return Item{}, err
	}
	it.Kind, it.State = Kind(kind), State(state)
	if err := json.Unmarshal(raw, &it.Record); err != nil {
		return Item{}, fmt.Errorf("decode record of %s: %w", it.ID, err)
	}
	return it, nil
}

// pgQueries are the statements on one table.
type pgQueries struct {
	lock, create, add, parkLapsed, claim, begin, remove, finish string
	list, stats, lockItem, requeue, count                       string
}

// itemColumns are the columns scanItem reads, in order.
const itemColumns = `id, kind, state, attempts, last_error, due, owner <> '', ` +
	`created_at, record`

// newPgQueries builds the statements for table (already checked).
func newPgQueries(table string) pgQueries {
	t := pgx.Identifier{table}.Sanitize()
	f := func(format string) string { return fmt.Sprintf(format, t) }
	return pgQueries{
		lock: `SELECT pg_advisory_xact_lock(` +
			`hashtextextended('zimmer-sidecar outbox ' || current_schema() || '.' || $1, 0))`,
		create: fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %[1]s (
	id         text        PRIMARY KEY,
	kind       text        NOT NULL CHECK (kind IN ('report', 'consume')),
	state      text        NOT NULL CHECK (state IN ('pending', 'unknown', 'failed')),
	due        timestamptz NOT NULL,
	owner      text        NOT NULL DEFAULT '',
	sent       boolean     NOT NULL DEFAULT false,
	attempts   integer     NOT NULL DEFAULT 0,
	last_error text        NOT NULL DEFAULT '',
	created_at timestamptz NOT NULL,
	record     jsonb       NOT NULL
);
CREATE INDEX IF NOT EXISTS %[2]s ON %[1]s (due) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS %[3]s ON %[1]s (due) WHERE sent;
CREATE INDEX IF NOT EXISTS %[4]s ON %[1]s (created_at)`,
			t, pgx.Identifier{table + "_due"}.Sanitize(),
			pgx.Identifier{table + "_sent"}.Sanitize(),
			pgx.Identifier{table + "_created"}.Sanitize()),
		add: f(`INSERT INTO %s (id, kind, state, due, created_at, record)
SELECT u.id, u.kind, u.state, u.due, u.created_at, u.record::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
	$6::text[]) AS u(id, kind, state, due, created_at, record)
ON CONFLICT (id) DO NOTHING`),
		parkLapsed: f(`UPDATE %[1]s SET state = 'unknown', owner = '', sent = false,
	last_error = $2, due = $1
WHERE id IN (SELECT id FROM %[1]s WHERE state = 'pending' AND sent AND due <= $1
	FOR UPDATE SKIP LOCKED)`),
		claim: f(`UPDATE %[1]s t SET owner = $2, due = $3
FROM (SELECT id FROM %[1]s WHERE state = 'pending' AND NOT sent AND due <= $1
	ORDER BY due, id LIMIT $4 FOR UPDATE SKIP LOCKED) c
WHERE t.id = c.id
RETURNING t.id, t.kind, t.state, t.attempts, t.last_error, t.due, t.owner <> '',
	t.created_at, t.record`),
		begin: f(`UPDATE %s SET sent = true, due = $3
WHERE id = ANY($4) AND kind = 'consume' AND state = 'pending' AND owner = $1 AND due > $2
RETURNING id`),
		remove: f(`DELETE FROM %s WHERE id = ANY($1)`),
		finish: f(`UPDATE %s t SET state = u.state, due = u.due, last_error = u.err,
	owner = '', sent = false, attempts = t.attempts + 1
FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::text[]) AS u(id, state, due, err)
WHERE t.id = u.id AND t.owner = $1 AND t.state = 'pending'`),
		list: f(`SELECT ` + itemColumns + ` FROM %s
WHERE ($1 = '' OR kind = $1) AND ($2 = '' OR state = $2)
ORDER BY created_at, id LIMIT $3`),
		stats:    f(`SELECT kind, state, count(*), min(created_at) FROM %s GROUP BY kind, state`),
		lockItem: f(`SELECT state FROM %s WHERE id = $1 FOR UPDATE`),
		requeue: f(`UPDATE %s SET state = 'pending', due = $2, owner = '', sent = false
WHERE id = $1`),
		count: f(`SELECT count(*) FROM %s`),
	}
}
