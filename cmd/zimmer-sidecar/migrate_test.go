package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMigrateBolt(t *testing.T) {
	t.Parallel()
	cfg := configFile(t, "127.0.0.1:0", "127.0.0.1:0", "http://127.0.0.1:8000")
	stdout, _, err := runCmd(t, "migrate", "-config", cfg)
	if err != nil || !strings.Contains(stdout, "is up to date") {
		t.Fatalf("got %v, stdout %q; want nil and the store up to date", err, stdout)
	}
	// A second run finds the file already current.
	if _, _, err := runCmd(t, "migrate", "-config", cfg); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
}

func TestMigrateArguments(t *testing.T) {
	t.Parallel()
	if _, _, err := runCmd(t, "migrate", "extra"); err != errUsage {
		t.Errorf("got %v, want errUsage", err)
	}
}

// TestMigratePostgres migrates a fresh schema of the local PostgreSQL
// through the command, with the DSN from the environment.
func TestMigratePostgres(t *testing.T) {
	const server = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, server)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL is required in CI: %v", err)
		}
		t.Skipf("no PostgreSQL at 127.0.0.1:5432 (CI=true makes this a failure): %v", err)
	}
	defer conn.Close(context.Background())
	schema := fmt.Sprintf("cmd_migrate_%d", time.Now().UnixNano())
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = conn.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
	})

	cfg := configFile(t, "127.0.0.1:0", "127.0.0.1:0", "http://127.0.0.1:8000")
	data, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pg := strings.Replace(string(data), "[ledger]\n",
		"[ledger]\nbackend = \"postgres\"\ndsn = \"env:MIGRATE_TEST_DSN\"\n", 1)
	if err := os.WriteFile(cfg, []byte(pg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MIGRATE_TEST_DSN", server+"&search_path="+schema)

	stdout, stderr, err := runCmd(t, "migrate", "-config", cfg)
	if err != nil || !strings.Contains(stdout, "schema version") {
		t.Fatalf("got %v, stdout %q, stderr %q; want the schema version", err, stdout, stderr)
	}
	var n int
	err = conn.QueryRow(ctx, "SELECT count(*) FROM information_schema.tables "+
		"WHERE table_schema = $1 AND table_name = 'accounts'", schema).Scan(&n)
	if err != nil || n != 1 {
		t.Fatalf("accounts table in %s: got %d, %v; want 1", schema, n, err)
	}
}
