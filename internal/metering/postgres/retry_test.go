package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// faultOp is one write under a fault: setup prepares account 1, run makes
// the call once and check inspects its answer.
type faultOp struct {
	name  string
	run   func(ctx context.Context, s *Store) (any, error)
	check func(t *testing.T, answer any)
	// demo and paid are account 1's balances after one application.
	demo, paid int64
	kind       metering.EntryKind
}

// faultOps are the writes every fault test runs. Account 1 starts with
// 100 demo tokens, 50 paid tokens and a keyed debit "d" of 10 demo.
func faultOps() []faultOp {
	consume := func(key string) func(context.Context, *Store) (any, error) {
		return func(ctx context.Context, s *Store) (any, error) {
			return s.Consume(ctx, metering.ConsumeRequest{
				UserAutomationID: 1, Units: 7, UsageType: "chat", IdempotencyKey: key,
			})
		}
	}
	credit := func(key string) func(context.Context, *Store) (any, error) {
		return func(ctx context.Context, s *Store) (any, error) {
			return s.Credit(ctx, metering.CreditRequest{
				UserAutomationID: 1, Units: 5, IdempotencyKey: key,
			})
		}
	}
	original := func(t *testing.T, a any) {
		t.Helper()
		res := a.(metering.ConsumeResult)
		if !res.Accepted || res.Replayed || res.DemoDebited != 7 {
			t.Errorf("answer: got %+v, want an original debit of 7 demo", res)
		}
	}
	credited := func(t *testing.T, a any) {
		t.Helper()
		if acct := a.(metering.Account); acct.PaidTokens != 55 {
			t.Errorf("answer: got %+v, want 55 paid", acct)
		}
	}
	settle := func(units int64) func(context.Context, *Store) (any, error) {
		return func(ctx context.Context, s *Store) (any, error) {
			return s.Settle(ctx, metering.SettleRequest{
				UserAutomationID: 1, IdempotencyKey: "d", Units: units,
			})
		}
	}
	settled := func(charged, demo int64) func(*testing.T, any) {
		return func(t *testing.T, a any) {
			t.Helper()
			res := a.(metering.SettleResult)
			if res.Replayed || res.Charged != charged || res.Account.DemoTokens != demo {
				t.Errorf("answer: got %+v, want an original charging %d, %d demo left",
					res, charged, demo)
			}
		}
	}
	return []faultOp{
		{name: "keyed consume", run: consume("k"), check: original,
			demo: 83, paid: 50, kind: metering.EntryDebit},
		{name: "unkeyed consume", run: consume(""), check: original,
			demo: 83, paid: 50, kind: metering.EntryDebit},
		{name: "keyed credit", run: credit("c"), check: credited,
			demo: 90, paid: 55, kind: metering.EntryCredit},
		{name: "unkeyed credit", run: credit(""), check: credited,
			demo: 90, paid: 55, kind: metering.EntryCredit},
		{name: "refund", demo: 100, paid: 50, kind: metering.EntryRefund,
			run: func(ctx context.Context, s *Store) (any, error) {
				return s.Refund(ctx,
					metering.RefundRequest{UserAutomationID: 1, IdempotencyKey: "d"})
			},
			check: func(t *testing.T, a any) {
				if acct := a.(metering.Account); acct.DemoTokens != 100 {
					t.Errorf("answer: got %+v, want 100 demo", acct)
				}
			}},
		{name: "settle up", run: settle(15), check: settled(15, 85),
			demo: 85, paid: 50, kind: metering.EntrySettle},
		{name: "settle down", run: settle(4), check: settled(4, 96),
			demo: 96, paid: 50, kind: metering.EntrySettle},
		{name: "reconcile", demo: 70, paid: 40, kind: metering.EntryReconcile,
			run: func(ctx context.Context, s *Store) (any, error) {
				return s.Reconcile(ctx, metering.ReconcileRequest{
					UserAutomationID: 1, DemoTokens: 70, PaidTokens: 40,
				})
			},
			check: func(t *testing.T, a any) {
				if acct := a.(metering.Account); acct.DemoTokens != 70 || acct.PaidTokens != 40 {
					t.Errorf("answer: got %+v, want 70 demo, 40 paid", acct)
				}
			}},
		{name: "provision", demo: 90, paid: 50, kind: metering.EntryProvision,
			run: func(ctx context.Context, s *Store) (any, error) {
				return s.Provision(ctx, metering.ProvisionRequest{UserAutomationID: 2,
					DemoTokens: ptr(3)})
			},
			check: func(t *testing.T, a any) {
				res := a.(metering.ProvisionResult)
				if !res.Created || res.Account.DemoTokens != 3 {
					t.Errorf("answer: got %+v, want created with 3 demo", res)
				}
			}},
	}
}

// setupFault opens a store with account 1 as faultOps expect it.
func setupFault(t *testing.T, popts PoolOptions) *Store {
	t.Helper()
	popts.RetryBackoff = time.Millisecond
	s := openStore(t, freshDSN(t), metering.Options{}, popts)
	mustProvision(t, s, 1, 100, 50)
	_, err := s.Consume(context.Background(), metering.ConsumeRequest{
		UserAutomationID: 1, Units: 10, IdempotencyKey: "d",
	})
	if err != nil {
		t.Fatalf("setup debit: %v", err)
	}
	return s
}

// wantApplied fails unless op changed account 1 once and wrote one entry
// of its kind beyond the setup's.
func wantApplied(t *testing.T, s *Store, op faultOp) {
	t.Helper()
	a, err := s.Account(context.Background(), 1)
	if err != nil {
		t.Fatalf("account: %v", err)
	}
	if a.DemoTokens != op.demo || a.PaidTokens != op.paid {
		t.Errorf("account 1: got demo %d paid %d, want demo %d paid %d (applied once)",
			a.DemoTokens, a.PaidTokens, op.demo, op.paid)
	}
	setup := map[metering.EntryKind]int{metering.EntryProvision: 1,
		metering.EntryCredit: 1, metering.EntryDebit: 1}
	n := 0
	for _, e := range journalOf(t, s) {
		if e.Kind == op.kind {
			n++
		}
	}
	if want := setup[op.kind] + 1; n != want {
		t.Errorf("%s entries: got %d, want %d", op.kind, n, want)
	}
	checkBalances(t, s, 1)
}

// TestRetryAfterTerminatedBackend kills the transaction's backend with
// pg_terminate_backend just before COMMIT: the attempt fails, is rolled
// back by the server, and the retry applies the write exactly once.
func TestRetryAfterTerminatedBackend(t *testing.T) {
	for _, op := range faultOps() {
		t.Run(op.name, func(t *testing.T) {
			s := setupFault(t, PoolOptions{})
			var attempts atomic.Int32
			s.hooks.beforeCommit = func(ctx context.Context, pid uint32) error {
				if attempts.Add(1) == 1 {
					return terminate(ctx, t, pid)
				}
				return nil
			}
			answer, err := op.run(context.Background(), s)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if n := attempts.Load(); n != 2 {
				t.Errorf("attempts: got %d, want 2", n)
			}
			op.check(t, answer)
			wantApplied(t, s, op)
		})
	}
}

// TestAmbiguousCommit loses COMMIT's reply after the server committed:
// the retry finds the call's own record and answers it as the original,
// without applying the write again.
func TestAmbiguousCommit(t *testing.T) {
	for _, op := range faultOps() {
		t.Run(op.name, func(t *testing.T) {
			s := setupFault(t, PoolOptions{})
			var commits atomic.Int32
			s.hooks.afterCommit = func() error {
				if commits.Add(1) == 1 {
					return &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
				}
				return nil
			}
			answer, err := op.run(context.Background(), s)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if n := commits.Load(); n != 2 {
				t.Errorf("commits: got %d, want 2 (the retry only reads)", n)
			}
			op.check(t, answer)
			wantApplied(t, s, op)
		})
	}
}

// TestAmbiguousWithoutRetry: with retries off the lost reply is the
// caller's error; the caller's own retry with the key replays.
func TestAmbiguousWithoutRetry(t *testing.T) {
	s := setupFault(t, PoolOptions{Retries: -1})
	var lost atomic.Bool
	lost.Store(true)
	s.hooks.afterCommit = func() error {
		if lost.Swap(false) {
			return io.ErrUnexpectedEOF
		}
		return nil
	}
	req := metering.ConsumeRequest{UserAutomationID: 1, Units: 7, IdempotencyKey: "k"}
	if _, err := s.Consume(context.Background(), req); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("first call: got %v, want the lost reply", err)
	}
	res, err := s.Consume(context.Background(), req)
	if err != nil || !res.Replayed || res.DemoDebited != 7 {
		t.Errorf("caller's retry: got %+v, %v, want a replay of the debit", res, err)
	}
	wantApplied(t, s, faultOps()[0])
}

// TestRetriesBounded: a fault on every attempt ends after 1+Retries
// attempts with the fault's error, and nothing is applied.
func TestRetriesBounded(t *testing.T) {
	s := setupFault(t, PoolOptions{Retries: 2})
	var attempts atomic.Int32
	s.hooks.beforeCommit = func(context.Context, uint32) error {
		attempts.Add(1)
		return &pgconn.PgError{Code: "40001", Message: "injected"}
	}
	_, err := s.Consume(context.Background(),
		metering.ConsumeRequest{UserAutomationID: 1, Units: 1})
	if !isPgCode(err, "40001") {
		t.Errorf("got %v, want the serialization failure", err)
	}
	if n := attempts.Load(); n != 3 {
		t.Errorf("attempts: got %d, want 3", n)
	}
	s.hooks.beforeCommit = nil
	if a, _ := s.Account(context.Background(), 1); a.DemoTokens != 90 {
		t.Errorf("account: got %+v, want 90 demo (nothing applied)", a)
	}
}

// TestReadOnlyReconnects: a server that turned read-only (a demoted
// primary) costs its connection, so the retry runs on a new one.
func TestReadOnlyReconnects(t *testing.T) {
	s := setupFault(t, PoolOptions{MaxConns: 1})
	var pids []uint32
	s.hooks.beforeCommit = func(_ context.Context, pid uint32) error {
		pids = append(pids, pid)
		if len(pids) == 1 {
			return &pgconn.PgError{Code: "25006", Message: "injected"}
		}
		return nil
	}
	_, err := s.Consume(context.Background(),
		metering.ConsumeRequest{UserAutomationID: 1, Units: 7})
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	if len(pids) != 2 || pids[0] == pids[1] {
		t.Errorf("backends of the attempts: got %v, want two different ones", pids)
	}
	wantApplied(t, s, faultOps()[1])
}

// TestRetryStopsWithContext: a context that ends during the backoff ends
// the retries with an error that wraps both causes.
func TestRetryStopsWithContext(t *testing.T) {
	s := setupFault(t, PoolOptions{Retries: 5})
	s.backoff = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	s.hooks.beforeCommit = func(context.Context, uint32) error {
		cancel()
		return &pgconn.PgError{Code: "40P01", Message: "injected"}
	}
	_, err := s.Credit(ctx, metering.CreditRequest{UserAutomationID: 1, Units: 1})
	if !isPgCode(err, "40P01") {
		t.Errorf("got %v, want the deadlock error", err)
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"serialization failure", &pgconn.PgError{Code: "40001"}, true},
		{"deadlock", &pgconn.PgError{Code: "40P01"}, true},
		{"terminated", fmt.Errorf("commit: %w", &pgconn.PgError{Code: "57P01"}), true},
		{"in recovery", &pgconn.PgError{Code: "57P03"}, true},
		{"read only", &pgconn.PgError{Code: "25006"}, true},
		{"connection failure", &pgconn.PgError{Code: "08006"}, true},
		{"key race", &pgconn.PgError{Code: "23505", ConstraintName: "idempotency_pkey"}, true},
		{"account race", &pgconn.PgError{Code: "23505", ConstraintName: "accounts_pkey"}, true},
		{"other unique", &pgconn.PgError{Code: "23505", ConstraintName: "x_key"}, false},
		{"check violation", &pgconn.PgError{Code: "23514"}, false},
		{"syntax", &pgconn.PgError{Code: "42601"}, false},
		{"eof", fmt.Errorf("read: %w", io.EOF), true},
		{"unexpected eof", io.ErrUnexpectedEOF, true},
		{"reset", &net.OpError{Op: "read", Err: syscall.ECONNRESET}, true},
		{"conn closed", pgconn.ErrConnClosed, true},
		{"canceled", context.Canceled, false},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), false},
		{"canceled on a dead conn", errors.Join(io.EOF, context.Canceled), false},
		{"refusal", metering.ErrUnknownAccount, false},
		{"corrupt", errCorrupt, false},
	}
	for _, tt := range tests {
		if got := retryable(tt.err); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	base := 10 * time.Millisecond
	for attempt := range 12 {
		want := min(base<<attempt, maxRetryBackoff)
		for range 50 {
			got := backoff(base, attempt)
			if got < want/2 || got > want {
				t.Fatalf("attempt %d: got %s, want in [%s, %s]", attempt, got, want/2, want)
			}
		}
	}
}
