package postgres

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// TestMigrationKeepsDebitsSettleable writes an account with a keyed
// debit while the schema is at version 1, then migrates: the debit can
// be settled and refunded, and the new kinds pass the journal's check.
func TestMigrationKeepsDebitsSettleable(t *testing.T) {
	dsn := freshDSN(t)
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("parse dsn: %v", err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer closeConn(conn)
	if err := migrate(ctx, conn, migrations[:1]); err != nil {
		t.Fatalf("migrate to version 1: %v", err)
	}
	writeV1Debit(t, conn)

	if err := Migrate(ctx, dsn); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	wantAllVersions(t, dsn)
	s := openStore(t, dsn, metering.Options{}, PoolOptions{})
	res, err := s.Settle(ctx, metering.SettleRequest{
		UserAutomationID: 1, IdempotencyKey: "old", Units: 4, Reason: "actual",
	})
	if err != nil || res.Replayed || res.Charged != 4 || res.Account.DemoTokens != 96 {
		t.Fatalf("settle of a version 1 debit: got %+v, %v, want 6 back", res, err)
	}
	if _, err := s.Reconcile(ctx, metering.ReconcileRequest{
		UserAutomationID: 1, DemoTokens: 50,
	}); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	acct, err := s.Refund(ctx, metering.RefundRequest{UserAutomationID: 1, IdempotencyKey: "old"})
	if err != nil || acct.DemoTokens != 54 {
		t.Errorf("refund of the settled debit: got %+v, %v, want 4 back", acct, err)
	}
	checkBalances(t, s, 1)
	es := journalOf(t, s)
	if n := len(es); n != 5 || es[2].Kind != metering.EntrySettle ||
		es[2].UsageType != "chat" || es[3].Kind != metering.EntryReconcile {
		t.Errorf("journal: got %+v, want provision, debit, settle, reconcile, refund", es)
	}
}

// writeV1Debit stores, as a version 1 binary would, account 1 with 100
// demo tokens and an accepted debit of 10 under key "old".
func writeV1Debit(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	call, now := newCallID(), time.Now().UTC()
	req := metering.ConsumeRequest{
		UserAutomationID: 1, Units: 10, UsageType: "chat", IdempotencyKey: "old",
	}
	res := metering.Decide(metering.DemoWhole, 100, 0, req.Units)
	raw, err := encodeResult(res)
	if err != nil {
		t.Fatal(err)
	}
	fp := req.Fingerprint()
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(sqlCreateAccount, 1, 10, 100, false, now, call[:])
		b.Queue(sqlAppendEntry, entryArgs(0, metering.Entry{Time: now,
			Kind: metering.EntryProvision, UserAutomationID: 1, DemoDelta: 100})...)
		b.Queue(sqlSetBalances, 1, res.RemainingDemo, res.RemainingPaid)
		b.Queue(sqlAppendEntry, entryArgs(0, metering.Entry{Time: now,
			Kind: metering.EntryDebit, UserAutomationID: 1, DemoDelta: -res.DemoDebited,
			UsageType: req.UsageType, IdempotencyKey: req.IdempotencyKey})...)
		b.Queue(sqlClaim, req.IdempotencyKey, string(metering.EntryDebit), fp[:], 1, false,
			call[:], now, raw, true)
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		t.Fatalf("write a version 1 debit: %v", err)
	}
}

// TestSettleRaceAcrossReplicas: replicas settle one debit at once, at
// two different units. One settle is the original; every other caller
// with its units gets it replayed, every caller with the other units a
// conflict, and the debit is settled once.
func TestSettleRaceAcrossReplicas(t *testing.T) {
	dsn := freshDSN(t)
	stores := []*Store{
		openStore(t, dsn, metering.Options{}, PoolOptions{MaxConns: 4}),
		openStore(t, dsn, metering.Options{}, PoolOptions{MaxConns: 4}),
	}
	mustProvision(t, stores[0], 1, 100, 0)
	_, err := stores[1].Consume(context.Background(), metering.ConsumeRequest{
		UserAutomationID: 1, Units: 10, IdempotencyKey: "k",
	})
	if err != nil {
		t.Fatalf("reserve: %v", err)
	}

	const callers = 12
	units := func(i int) int64 { return int64(4 + 3*(i%2)) } // 4 or 7
	results := make([]metering.SettleResult, callers)
	errs := make([]error, callers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			<-start
			results[i], errs[i] = stores[i%len(stores)].Settle(context.Background(),
				metering.SettleRequest{UserAutomationID: 1, IdempotencyKey: "k", Units: units(i)})
		})
	}
	close(start)
	wg.Wait()

	var winner int64 = -1
	originals := 0
	for i := range callers {
		if errs[i] == nil && !results[i].Replayed {
			originals++
			winner = units(i)
		}
	}
	if originals != 1 {
		t.Fatalf("got %d original settles, want 1 (errors %v)", originals, errs)
	}
	for i := range callers {
		switch {
		case units(i) == winner && (errs[i] != nil || results[i].Charged != winner):
			t.Errorf("caller %d at the winner's units: got %+v, %v, want %d charged",
				i, results[i], errs[i], winner)
		case units(i) != winner && !errors.Is(errs[i], metering.ErrIdempotencyConflict):
			t.Errorf("caller %d at other units: got %+v, %v, want a conflict",
				i, results[i], errs[i])
		}
	}
	a, err := stores[0].Account(context.Background(), 1)
	if err != nil || a.DemoTokens != 100-winner {
		t.Errorf("account: got %+v, %v, want %d demo", a, err, 100-winner)
	}
	n := 0
	for _, e := range journalOf(t, stores[0]) {
		if e.Kind == metering.EntrySettle {
			n++
		}
	}
	if n != 1 {
		t.Errorf("settle entries: got %d, want 1", n)
	}
	checkBalances(t, stores[0], 1)
}
