package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// migrationFiles are the schema's versions: migrations/NNNN_name.sql,
// numbered from 1 without gaps. A released file is never edited; a change
// is a new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one numbered schema change.
type migration struct {
	version int
	name    string
	sql     string
}

// errSchemaNewer: the database was migrated by a newer binary.
var errSchemaNewer = errors.New("ledger schema is newer than this binary")

// errNotMigrated: the schema is missing or behind and Open was told not to
// migrate it.
var errNotMigrated = errors.New("ledger schema is not migrated")

// migrations is the parsed, checked content of migrationFiles.
var migrations = mustLoadMigrations(migrationFiles)

// SchemaVersion is the schema version this binary writes and expects: the
// number of its last migration.
func SchemaVersion() int { return migrations[len(migrations)-1].version }

// Migrate applies the pending embedded migrations to the schema that dsn
// selects (the first schema of its search_path, usually "public") and
// returns once the schema is at SchemaVersion. It is what the
// "zimmer-sidecar migrate" command runs, and what Open does unless told
// not to.
//
// Migrate is safe to run from several processes at once: a session
// advisory lock, keyed by the schema name, lets one of them apply the
// migrations while the others wait and then find nothing to do. Each
// migration runs in its own transaction together with its row in
// schema_migrations, so a failure leaves the schema at the last version
// that applied fully. It fails, changing nothing, when the schema is
// newer than this binary. Errors never contain the DSN.
func Migrate(ctx context.Context, dsn string) error {
	cfg, err := parseDSN(dsn, PoolOptions{})
	if err != nil {
		return fmt.Errorf("migrate ledger: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return fmt.Errorf("migrate ledger: connect: %w", err)
	}
	defer closeConn(conn)
	if err := migrate(ctx, conn, migrations); err != nil {
		return fmt.Errorf("migrate ledger: %w", err)
	}
	return nil
}

// migrate applies the pending ms on conn while it holds the schema's
// migration lock.
func migrate(ctx context.Context, conn *pgx.Conn, ms []migration) (err error) {
	key, err := lockKey(ctx, conn, "migrate")
	if err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", key); err != nil {
		return fmt.Errorf("take migration lock: %w", err)
	}
	defer func() {
		// A lost connection releases the lock by itself.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, uerr := conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", key)
		if uerr != nil && err == nil {
			err = fmt.Errorf("release migration lock: %w", uerr)
		}
	}()

	const create = `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer     PRIMARY KEY,
		name       text        NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`
	if _, err := conn.Exec(ctx, create); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	current, err := appliedVersion(ctx, conn)
	if err != nil {
		return err
	}
	latest := ms[len(ms)-1].version
	if current > latest {
		return fmt.Errorf("version %d, this binary knows %d: %w", current, latest, errSchemaNewer)
	}
	for _, m := range ms[current:] {
		if err := applyMigration(ctx, conn, m); err != nil {
			return err
		}
	}
	return nil
}

// applyMigration runs one migration and records it in one transaction.
func applyMigration(ctx context.Context, conn *pgx.Conn, m migration) error {
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return err
		}
		_, err := tx.Exec(ctx,
			"INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name)
		return err
	})
	if err != nil {
		return fmt.Errorf("apply migration %04d_%s: %w", m.version, m.name, err)
	}
	return nil
}

// querier is what both a connection and a pool can do.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// appliedVersion is the highest version in schema_migrations, 0 for none.
func appliedVersion(ctx context.Context, q querier) (int, error) {
	var v int
	err := q.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}

// checkVersion fails unless the schema is exactly at SchemaVersion.
func checkVersion(ctx context.Context, q querier) error {
	var exists bool
	err := q.QueryRow(ctx, "SELECT to_regclass('schema_migrations') IS NOT NULL").Scan(&exists)
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if !exists {
		return fmt.Errorf("no schema_migrations table: run the migrate command: %w", errNotMigrated)
	}
	v, err := appliedVersion(ctx, q)
	if err != nil {
		return err
	}
	switch want := SchemaVersion(); {
	case v > want:
		return fmt.Errorf("version %d, this binary knows %d: %w", v, want, errSchemaNewer)
	case v < want:
		return fmt.Errorf("version %d, want %d: run the migrate command: %w",
			v, want, errNotMigrated)
	}
	return nil
}

// lockKey derives an advisory lock key for purpose from the current
// schema's name, so ledgers in different schemas of one database do not
// share locks. It fails when no schema is selected.
func lockKey(ctx context.Context, q querier, purpose string) (int64, error) {
	var schema *string
	if err := q.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return 0, fmt.Errorf("read current schema: %w", err)
	}
	if schema == nil {
		return 0, errors.New("no schema selected: the search_path names no existing schema")
	}
	var key int64
	err := q.QueryRow(ctx, "SELECT hashtextextended($1, 0)",
		"zimmer-sidecar ledger "+purpose+" "+*schema).Scan(&key)
	if err != nil {
		return 0, fmt.Errorf("derive %s lock key: %w", purpose, err)
	}
	return key, nil
}

// mustLoadMigrations loads the embedded migrations; a malformed set is a
// build mistake, caught by any test.
func mustLoadMigrations(fsys fs.FS) []migration {
	ms, err := loadMigrations(fsys, "migrations")
	if err != nil {
		panic(fmt.Sprintf("postgres ledger migrations: %v", err))
	}
	return ms
}

// loadMigrations reads dir's .sql files, sorted by version. Versions
// must run 1, 2, 3... without gaps or repeats, and no file may be empty.
func loadMigrations(fsys fs.FS, dir string) ([]migration, error) {
	names, err := fs.Glob(fsys, path.Join(dir, "*.sql"))
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, name := range names {
		version, label, err := parseMigrationName(path.Base(name))
		if err != nil {
			return nil, err
		}
		raw, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		if strings.TrimSpace(string(raw)) == "" {
			return nil, fmt.Errorf("%s is empty", name)
		}
		ms = append(ms, migration{version: version, name: label, sql: string(raw)})
	}
	slices.SortFunc(ms, func(a, b migration) int { return a.version - b.version })
	if len(ms) == 0 {
		return nil, fmt.Errorf("no migrations in %s", dir)
	}
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %04d_%s: want version %d (no gaps or repeats)",
				m.version, m.name, i+1)
		}
	}
	return ms, nil
}

// parseMigrationName splits "0001_init.sql" into 1 and "init". The
// version is 4 to 9 digits and positive; the name is lowercase letters,
// digits and underscores.
func parseMigrationName(file string) (int, string, error) {
	base, ok := strings.CutSuffix(file, ".sql")
	digits, name, found := strings.Cut(base, "_")
	if !ok || !found || len(digits) < 4 || len(digits) > 9 || name == "" {
		return 0, "", fmt.Errorf("migration file %q: want NNNN_name.sql", file)
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, "", fmt.Errorf("migration file %q: version is not a number", file)
		}
	}
	for _, c := range name {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return 0, "", fmt.Errorf("migration file %q: name wants [a-z0-9_]", file)
		}
	}
	v, err := strconv.Atoi(digits)
	if err != nil || v == 0 {
		return 0, "", fmt.Errorf("migration file %q: version must be positive", file)
	}
	return v, name, nil
}
