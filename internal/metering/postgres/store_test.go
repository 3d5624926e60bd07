package postgres

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering/ledgertest"
)

func TestConformance(t *testing.T) {
	adminPool(t) // skip or fail once, before the parallel subtests
	ledgertest.Run(t, func(t *testing.T, o metering.Options) metering.Ledger {
		return openStore(t, freshDSN(t), o, PoolOptions{MaxConns: 8})
	})
}

// TestOpenErrors: bad input fails Open with a clear error that never
// shows the DSN's password, and opens nothing.
func TestOpenErrors(t *testing.T) {
	const secret = "hunter2-s3cret"
	tests := []struct {
		name  string
		dsn   string
		opts  metering.Options
		popts PoolOptions
		want  string
	}{
		{name: "empty dsn", dsn: " ", want: "dsn is empty"},
		{name: "malformed url", dsn: "postgres://u:" + secret + "@127.0.0.1:notaport/x",
			want: "not a valid PostgreSQL connection string"},
		{name: "malformed key value", dsn: "host=127.0.0.1 password='" + secret,
			want: "not a valid PostgreSQL connection string"},
		{name: "refused connection",
			dsn:   "postgres://u:" + secret + "@127.0.0.1:1/x?sslmode=disable",
			popts: PoolOptions{ConnectTimeout: 2 * time.Second}, want: "connect"},
		{name: "bad options", dsn: testServer, opts: metering.Options{MaxUnits: -1},
			want: "max units"},
		{name: "bad pool options", dsn: testServer, popts: PoolOptions{MaxConns: -1},
			want: "max conns"},
		{name: "bad backoff", dsn: testServer, popts: PoolOptions{RetryBackoff: -1},
			want: "retry backoff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := Open(ctx, tt.dsn, tt.opts, tt.popts)
			if err == nil {
				_ = s.Close()
				t.Fatalf("got a store, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error shows the password: %q", err)
			}
		})
	}
}

// TestMigrateErrorsHideDSN: Migrate's errors keep the password out too.
func TestMigrateErrorsHideDSN(t *testing.T) {
	const secret = "hunter2-s3cret"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, dsn := range []string{
		"postgres://u:" + secret + "@127.0.0.1:1/x?sslmode=disable&connect_timeout=2",
		"postgres://u:" + secret + "@[::1/x",
	} {
		err := Migrate(ctx, dsn)
		if err == nil || strings.Contains(err.Error(), secret) {
			t.Errorf("migrate: got %v, want an error without the password", err)
		}
	}
}

// TestPoolBounded: MaxConns bounds the pool, and calls beyond it wait
// rather than fail.
func TestPoolBounded(t *testing.T) {
	s := openStore(t, freshDSN(t), metering.Options{}, PoolOptions{MaxConns: 2})
	if got := s.pool.Config().MaxConns; got != 2 {
		t.Fatalf("max conns: got %d, want 2", got)
	}
	mustProvision(t, s, 1, 0, 1000)
	done := make(chan error, 20)
	for range 20 {
		go func() {
			_, err := s.Consume(context.Background(),
				metering.ConsumeRequest{UserAutomationID: 1, Units: 1})
			done <- err
		}()
	}
	for range 20 {
		if err := <-done; err != nil {
			t.Errorf("consume: %v", err)
		}
	}
	if got := s.pool.Stat().TotalConns(); got > 2 {
		t.Errorf("open connections: got %d, want at most 2", got)
	}
	checkBalances(t, s, 1)
}

// TestPruneCalls: internal records of unkeyed writes go, callers' keys
// stay and still replay.
func TestPruneCalls(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, freshDSN(t), metering.Options{}, PoolOptions{})
	mustProvision(t, s, 1, 100, 10) // one unkeyed credit
	keyed := metering.ConsumeRequest{UserAutomationID: 1, Units: 2, IdempotencyKey: "k"}
	if _, err := s.Consume(ctx, keyed); err != nil {
		t.Fatalf("consume: %v", err)
	}
	_, err := s.Consume(ctx, metering.ConsumeRequest{UserAutomationID: 1, Units: 3})
	if err != nil {
		t.Fatalf("consume: %v", err)
	}

	// A cutoff in the past keeps everything; one in the future prunes
	// the two internal records, and only them.
	if n, err := s.PruneCalls(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Errorf("prune old: got %d, %v, want 0", n, err)
	}
	if n, err := s.PruneCalls(ctx, time.Now().Add(time.Hour)); err != nil || n != 2 {
		t.Errorf("prune: got %d, %v, want 2", n, err)
	}
	res, err := s.Consume(ctx, keyed)
	if err != nil || !res.Replayed {
		t.Errorf("replay after prune: got %+v, %v, want a replay", res, err)
	}
	checkBalances(t, s, 1)
	_ = s.Close()
	if _, err := s.PruneCalls(ctx, time.Now()); !errors.Is(err, metering.ErrClosed) {
		t.Errorf("prune after close: got %v, want ErrClosed", err)
	}
}

// TestPing answers while open and ErrClosed after Close.
func TestPing(t *testing.T) {
	s := openStore(t, freshDSN(t), metering.Options{}, PoolOptions{})
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("ping: %v", err)
	}
	_ = s.Close()
	if err := s.Ping(context.Background()); !errors.Is(err, metering.ErrClosed) {
		t.Errorf("ping after close: got %v, want ErrClosed", err)
	}
}

// TestCheckConstraint: the schema itself refuses a negative balance, the
// last guard behind metering.Decide.
func TestCheckConstraint(t *testing.T) {
	s := openStore(t, freshDSN(t), metering.Options{}, PoolOptions{})
	mustProvision(t, s, 1, 5, 0)
	_, err := s.pool.Exec(context.Background(),
		"UPDATE accounts SET demo_tokens = -1 WHERE user_automation_id = 1")
	if !isPgCode(err, "23514") {
		t.Errorf("negative balance: got %v, want a check violation (23514)", err)
	}
}
