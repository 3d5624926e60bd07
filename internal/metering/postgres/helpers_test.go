package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// testServer is the local PostgreSQL the tests use (trust auth). Each
// test gets a schema of its own in its database.
const testServer = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// admin is a small pool on testServer for creating and dropping schemas
// and for killing backends; adminErr is why it is nil.
var (
	adminOnce sync.Once
	admin     *pgxpool.Pool
	adminErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if admin != nil {
		admin.Close()
	}
	os.Exit(code)
}

// adminPool connects once. When the server is unreachable the test is
// skipped, except in CI (CI set), where a missing service must fail.
func adminPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	adminOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cfg, err := pgxpool.ParseConfig(testServer)
		if err != nil {
			adminErr = err
			return
		}
		cfg.MaxConns = 4
		cfg.ConnConfig.ConnectTimeout = 3 * time.Second
		p, err := pgxpool.NewWithConfig(ctx, cfg)
		if err == nil {
			err = p.Ping(ctx)
		}
		if err != nil {
			if p != nil {
				p.Close()
			}
			adminErr = err
			return
		}
		admin = p
	})
	if adminErr != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("PostgreSQL at 127.0.0.1:5432 (database test) is required in CI: %v",
				adminErr)
		}
		tb.Skipf("PostgreSQL at 127.0.0.1:5432 (database test) unreachable, "+
			"skipping (CI=true makes this a failure): %v", adminErr)
	}
	return admin
}

// freshDSN creates an empty schema, dropped when tb ends, and returns a
// DSN whose search_path selects it.
func freshDSN(tb testing.TB) string {
	tb.Helper()
	p := adminPool(tb)
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "ledger_test_" + hex.EncodeToString(b[:])
	ctx := context.Background()
	if _, err := p.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		tb.Fatalf("create schema: %v", err)
	}
	tb.Cleanup(func() {
		if _, err := p.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return testServer + "&search_path=" + schema
}

// openStore opens a Store on dsn and closes it when tb ends.
func openStore(
	tb testing.TB,
	dsn string,
	opts metering.Options,
	popts PoolOptions,
) *Store {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, dsn, opts, popts)
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// ptr returns a pointer to v.
func ptr(v int64) *int64 { return &v }

// mustProvision creates account id with demo and paid tokens.
func mustProvision(tb testing.TB, l metering.Ledger, id, demo, paid int64) {
	tb.Helper()
	ctx := context.Background()
	_, err := l.Provision(ctx, metering.ProvisionRequest{
		UserAutomationID: id,
		DemoTokens:       ptr(demo),
	})
	if err != nil {
		tb.Fatalf("provision %d: %v", id, err)
	}
	if paid > 0 {
		_, err := l.Credit(ctx, metering.CreditRequest{UserAutomationID: id, Units: paid})
		if err != nil {
			tb.Fatalf("credit %d: %v", id, err)
		}
	}
}

// journalOf reads the whole journal.
func journalOf(tb testing.TB, l metering.Ledger) []metering.Entry {
	tb.Helper()
	var out []metering.Entry
	err := l.Journal(context.Background(), 0, 0, func(e metering.Entry) error {
		out = append(out, e)
		return nil
	})
	if err != nil {
		tb.Fatalf("journal: %v", err)
	}
	return out
}

// checkBalances fails unless each account's journal sums equal its
// balances and no balance is negative.
func checkBalances(tb testing.TB, l metering.Ledger, ids ...int64) {
	tb.Helper()
	demo, paid := map[int64]int64{}, map[int64]int64{}
	for _, e := range journalOf(tb, l) {
		demo[e.UserAutomationID] += e.DemoDelta
		paid[e.UserAutomationID] += e.PaidDelta
	}
	for _, id := range ids {
		a, err := l.Account(context.Background(), id)
		if err != nil {
			tb.Fatalf("account %d: %v", id, err)
		}
		if a.DemoTokens < 0 || a.PaidTokens < 0 {
			tb.Errorf("account %d: negative balance %+v", id, a)
		}
		if demo[id] != a.DemoTokens || paid[id] != a.PaidTokens {
			tb.Errorf("account %d: journal sums demo %d paid %d, balances demo %d paid %d",
				id, demo[id], paid[id], a.DemoTokens, a.PaidTokens)
		}
	}
}

// terminate ends the backend pid from the admin pool and waits until it
// is gone.
func terminate(ctx context.Context, tb testing.TB, pid uint32) error {
	var ok bool
	err := adminPool(tb).
		QueryRow(ctx, "SELECT pg_terminate_backend($1, 5000)", int32(pid)).
		Scan(&ok)
	if err != nil {
		return fmt.Errorf("terminate backend %d: %w", pid, err)
	}
	if !ok {
		return fmt.Errorf("terminate backend %d: not terminated", pid)
	}
	return nil
}

// isPgCode reports whether err is a server error with code.
func isPgCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}
