package e2etest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresServer is the local PostgreSQL the end-to-end tests share:
// trust authentication, database test, user postgres.
const PostgresServer = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// pgTimeout bounds each statement the helpers run (including connecting).
const pgTimeout = 30 * time.Second

// PGSchema is a schema of its own on PostgresServer, for one test.
type PGSchema struct {
	Name string
	// DSN is PostgresServer with a search_path that selects the schema,
	// the value a sidecar's ledger.dsn resolves to.
	DSN string
}

// NewPGSchema creates an empty schema named prefix plus a random suffix
// and drops it, with everything in it, in t.Cleanup. Create it before
// starting the processes that use it, so that their cleanups (which kill
// them) run before the drop. When the server is unreachable t is
// skipped, unless the CI variable is set: then a missing server fails t.
func NewPGSchema(t testing.TB, prefix string) *PGSchema {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := prefix + "_" + hex.EncodeToString(b[:])
	conn := pgConnect(t, PostgresServer, true)
	defer closePG(conn)

	ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
	defer cancel()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatalf("create schema %s: %v", name, err)
	}
	t.Cleanup(func() {
		conn := pgConnect(t, PostgresServer, false)
		defer closePG(conn)
		ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
		defer cancel()
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+name+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", name, err)
		}
	})
	return &PGSchema{Name: name, DSN: PostgresServer + "&search_path=" + name}
}

// Version returns the highest schema migration applied in s (the
// ledger's schema_migrations table), 0 when none is.
func (s *PGSchema) Version(t testing.TB) int {
	t.Helper()
	conn := pgConnect(t, s.DSN, false)
	defer closePG(conn)
	ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
	defer cancel()
	var exists bool
	err := conn.QueryRow(ctx,
		"SELECT to_regclass('schema_migrations') IS NOT NULL").Scan(&exists)
	if err != nil {
		t.Fatalf("schema %s: look for schema_migrations: %v", s.Name, err)
	}
	if !exists {
		return 0
	}
	var v int
	err = conn.QueryRow(ctx,
		"SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&v)
	if err != nil {
		t.Fatalf("schema %s: read version: %v", s.Name, err)
	}
	return v
}

// pgConnect opens one connection to dsn. With skip, an unreachable server
// skips t (fails it when CI is set); otherwise it fails t.
func pgConnect(t testing.TB, dsn string, skip bool) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	switch {
	case err == nil:
		return conn
	case skip && os.Getenv("CI") == "":
		t.Skipf("PostgreSQL at 127.0.0.1:5432 (database test) is unreachable, "+
			"skipping (with CI set this fails): %v", err)
	case skip:
		t.Fatalf("PostgreSQL at 127.0.0.1:5432 (database test) is required in CI: %v", err)
	default:
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	return nil
}

// closePG closes conn, bounded so a dead server cannot hang a cleanup.
func closePG(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// MigrateLedger runs `zimmer-sidecar migrate -config config` with env
// added to the environment (as for a sidecar: the ledger's DSN, the
// service token) and returns its stdout; a non-zero exit fails t with
// both streams.
func MigrateLedger(t testing.TB, config string, env ...string) string {
	t.Helper()
	cmd := exec.Command(Binary(t), "migrate", "-config", config)
	cmd.Env = append(append(cleanEnv(), "GORACE=atexit_sleep_ms=0"), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("zimmer-sidecar migrate: %v\nstdout: %s\nstderr: %s",
			err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.String()
}
