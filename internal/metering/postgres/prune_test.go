package postgres

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// countRecords counts idempotency records, internal or callers'.
func countRecords(t *testing.T, s *Store, internal bool) int {
	t.Helper()
	var n int
	err := s.pool.QueryRow(context.Background(),
		"SELECT count(*) FROM idempotency WHERE internal = $1", internal).Scan(&n)
	if err != nil {
		t.Fatalf("count records: %v", err)
	}
	return n
}

// TestPruneBatches: with a batch bound far below the rows to prune, both
// prunes still delete exactly their own old rows, and neither touches the
// other's.
func TestPruneBatches(t *testing.T) {
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	s := openStore(t, freshDSN(t), metering.Options{Now: func() time.Time { return at }},
		PoolOptions{})
	s.pruneBatch = 7
	mustProvision(t, s, 1, 0, 1000)
	ctx := context.Background()
	write := func(prefix string) {
		for i := range 40 {
			req := metering.ConsumeRequest{UserAutomationID: 1, Units: 1,
				IdempotencyKey: fmt.Sprintf("%s-%02d", prefix, i)}
			if _, err := s.Consume(ctx, req); err != nil {
				t.Fatalf("consume: %v", err)
			}
			req.IdempotencyKey = "" // an internal call record
			if _, err := s.Consume(ctx, req); err != nil {
				t.Fatalf("consume: %v", err)
			}
		}
	}
	write("old")
	at = at.Add(time.Hour)
	write("new")
	cutoff := at.Add(-time.Minute)

	// 41 internal records are old: the provisioning credit's and 40.
	if n, err := s.PruneIdempotency(ctx, cutoff); err != nil || n != 40 {
		t.Errorf("prune keys: got %d, %v, want 40", n, err)
	}
	if got := countRecords(t, s, true); got != 81 {
		t.Errorf("internal records after pruning keys: got %d, want 81", got)
	}
	if n, err := s.PruneCalls(ctx, cutoff); err != nil || n != 41 {
		t.Errorf("prune calls: got %d, %v, want 41", n, err)
	}
	if a, b := countRecords(t, s, false), countRecords(t, s, true); a != 40 || b != 40 {
		t.Errorf("records left: got %d keys and %d calls, want 40 and 40", a, b)
	}
	checkBalances(t, s, 1)
}

// TestPruneSkipsLocked: a record a transaction holds locked (as a refund
// does) is skipped, not waited for, and pruned by a later run.
func TestPruneSkipsLocked(t *testing.T) {
	s := openStore(t, freshDSN(t), metering.Options{}, PoolOptions{})
	mustProvision(t, s, 1, 10, 0)
	ctx := context.Background()
	for _, k := range []string{"a", "b", "c"} {
		req := metering.ConsumeRequest{UserAutomationID: 1, Units: 1, IdempotencyKey: k}
		if _, err := s.Consume(ctx, req); err != nil {
			t.Fatalf("consume: %v", err)
		}
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "SELECT 1 FROM idempotency WHERE key = 'b' FOR UPDATE"); err != nil {
		t.Fatalf("lock record: %v", err)
	}

	// A hang guard: a prune that waited for the lock would block here.
	pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	future := time.Now().Add(time.Hour)
	if n, err := s.PruneIdempotency(pctx, future); err != nil || n != 2 {
		t.Errorf("prune with b locked: got %d, %v, want 2", n, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if n, err := s.PruneIdempotency(pctx, future); err != nil || n != 1 {
		t.Errorf("prune after the lock: got %d, %v, want 1", n, err)
	}
}

// TestPruneWhileReplicasWrite: two Stores prune while two others consume
// keyed requests on one schema; every key written after the cutoff still
// replays, and the balances match the journal.
func TestPruneWhileReplicasWrite(t *testing.T) {
	dsn := freshDSN(t)
	var writers, pruners []*Store
	for range 2 {
		writers = append(writers, openStore(t, dsn, metering.Options{}, PoolOptions{}))
		p := openStore(t, dsn, metering.Options{}, PoolOptions{})
		p.pruneBatch = 5
		pruners = append(pruners, p)
	}
	mustProvision(t, writers[0], 1, 0, 10_000)
	ctx := context.Background()
	cutoff := time.Now()
	// Old records: written now, then dated an hour before the cutoff.
	for i := range 60 {
		req := metering.ConsumeRequest{UserAutomationID: 1, Units: 1,
			IdempotencyKey: fmt.Sprintf("old-%02d", i)}
		if _, err := writers[0].Consume(ctx, req); err != nil {
			t.Fatalf("consume: %v", err)
		}
	}
	if _, err := writers[0].pool.Exec(ctx, "UPDATE idempotency SET created_at = $1 "+
		"WHERE key LIKE 'old-%'", cutoff.Add(-time.Hour)); err != nil {
		t.Fatalf("age records: %v", err)
	}

	done := make(chan int64, len(pruners))
	for _, p := range pruners {
		go func() {
			n, err := p.PruneIdempotency(ctx, cutoff)
			if err != nil {
				t.Errorf("prune: %v", err)
			}
			done <- n
		}()
	}
	var newKeys []metering.ConsumeRequest
	for i := range 40 {
		req := metering.ConsumeRequest{UserAutomationID: 1, Units: 1,
			IdempotencyKey: fmt.Sprintf("new-%02d", i)}
		if _, err := writers[i%2].Consume(ctx, req); err != nil {
			t.Fatalf("consume: %v", err)
		}
		newKeys = append(newKeys, req)
	}
	total := <-done + <-done
	if total != 60 {
		t.Errorf("pruned by both: got %d, want 60", total)
	}
	for _, req := range newKeys {
		res, err := writers[1].Consume(ctx, req)
		if err != nil || !res.Replayed {
			t.Errorf("replay %s: got %+v, %v, want a replay", req.IdempotencyKey, res, err)
		}
	}
	checkBalances(t, writers[0], 1)
	var left int
	err := writers[0].pool.QueryRow(ctx, "SELECT count(*) FROM idempotency WHERE key LIKE "+
		"'old-%'").Scan(&left)
	if err != nil || left != 0 {
		t.Errorf("old records left: got %d, %v, want 0", left, err)
	}
}

// TestMigration3OnData: a schema at version 2 with records is brought to
// version 3, also when an operator built the pruning index beforehand
// (CREATE INDEX CONCURRENTLY, as docs/postgres.md suggests), and its old
// records are pruned.
func TestMigration3OnData(t *testing.T) {
	for _, prebuilt := range []bool{false, true} {
		t.Run(fmt.Sprintf("prebuilt=%v", prebuilt), func(t *testing.T) {
			dsn := freshDSN(t)
			ctx := context.Background()
			cfg, err := parseDSN(dsn, PoolOptions{})
			if err != nil {
				t.Fatal(err)
			}
			conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			defer closeConn(conn)
			if err := migrate(ctx, conn, migrations[:2]); err != nil {
				t.Fatalf("migrate to 2: %v", err)
			}
			_, err = conn.Exec(ctx, `INSERT INTO idempotency (key, kind, fingerprint,
				user_automation_id, internal, call_id, created_at, result)
				VALUES ('old', 'debit', '\x00', 1, false, '\x00', now() - interval '1 day',
					'{}')`)
			if err != nil {
				t.Fatalf("insert a version 2 record: %v", err)
			}
			if prebuilt {
				_, err := conn.Exec(ctx, `CREATE INDEX CONCURRENTLY idempotency_caller_created
					ON idempotency (created_at) WHERE NOT internal`)
				if err != nil {
					t.Fatalf("build the index beforehand: %v", err)
				}
			}

			s := openStore(t, dsn, metering.Options{}, PoolOptions{})
			if got := appliedVersions(t, dsn); len(got) != 3 {
				t.Fatalf("versions: got %v, want 1..3", got)
			}
			n, err := s.PruneIdempotency(ctx, time.Now().Add(-time.Hour))
			if err != nil || n != 1 {
				t.Errorf("prune the version 2 record: got %d, %v, want 1", n, err)
			}
		})
	}
}
