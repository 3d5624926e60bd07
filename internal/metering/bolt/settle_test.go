package bolt_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	bbolt "go.etcd.io/bbolt"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering/bolt"
)

// kinds lists the journal's entry kinds in order.
func kinds(t *testing.T, s *bolt.Store) []metering.EntryKind {
	t.Helper()
	var out []metering.EntryKind
	err := s.Journal(context.Background(), 0, 0, func(e metering.Entry) error {
		out = append(out, e.Kind)
		return nil
	})
	if err != nil {
		t.Fatalf("journal: %v", err)
	}
	return out
}

// TestSettleSurvivesReopen settles and reconciles, closes the file and
// opens it again: the settle replays as it first answered, conflicts
// still, a refund gives back the settled units, the pending reservation
// settles, and every entry reads back.
func TestSettleSurvivesReopen(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "l.db")
	ctx := context.Background()
	s, err := bolt.Open(path, metering.Options{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	mustProvision(t, s, 1, 100)
	reserve := func(s *bolt.Store, key string) metering.ConsumeResult {
		t.Helper()
		res, err := s.Consume(ctx, metering.ConsumeRequest{
			UserAutomationID: 1, Units: 20, UsageType: "chat", IdempotencyKey: key,
		})
		if err != nil || !res.Accepted {
			t.Fatalf("reserve %s: got %+v, %v", key, res, err)
		}
		return res
	}
	first := reserve(s, "r")
	reserve(s, "pending")
	settleR := metering.SettleRequest{UserAutomationID: 1, IdempotencyKey: "r", Units: 25}
	settled, err := s.Settle(ctx, settleR)
	if err != nil || settled.Charged != 25 || settled.Account.DemoTokens != 55 {
		t.Fatalf("settle: got %+v, %v, want 25 charged and 55 demo left", settled, err)
	}
	if _, err := s.Reconcile(ctx, metering.ReconcileRequest{
		UserAutomationID: 1, DemoTokens: 50, PaidTokens: 8, Reason: "platform",
	}); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	s = openStore(t, path, metering.Options{}, bolt.DefaultMaxBatch)
	again, err := s.Settle(ctx, settleR)
	want := settled
	want.Replayed = true
	if err != nil || again != want {
		t.Errorf("settle replay after reopen: got %+v, %v, want %+v", again, err, want)
	}
	settleR.Units = 30
	if _, err := s.Settle(ctx, settleR); !errors.Is(err, metering.ErrIdempotencyConflict) {
		t.Errorf("settle at other units after reopen: got %v, want a conflict", err)
	}
	replay, err := s.Consume(ctx, metering.ConsumeRequest{
		UserAutomationID: 1, Units: 20, UsageType: "chat", IdempotencyKey: "r",
	})
	first.Replayed = true
	if err != nil || replay != first {
		t.Errorf("consume replay after reopen: got %+v, %v, want %+v", replay, err, first)
	}

	pending, err := s.Settle(ctx, metering.SettleRequest{
		UserAutomationID: 1, IdempotencyKey: "pending", Units: 5,
	})
	if err != nil || pending.Replayed || pending.Charged != 5 ||
		pending.Account.DemoTokens != 65 {
		t.Errorf("settle of the pending reservation: got %+v, %v, want 15 back", pending, err)
	}
	acct, err := s.Refund(ctx, metering.RefundRequest{UserAutomationID: 1, IdempotencyKey: "r"})
	if err != nil || acct.DemoTokens != 90 || acct.PaidTokens != 8 {
		t.Errorf("refund of the settled debit: got %+v, %v, want 25 demo back", acct, err)
	}

	got := kinds(t, s)
	wantKinds := []metering.EntryKind{metering.EntryProvision, metering.EntryDebit,
		metering.EntryDebit, metering.EntrySettle, metering.EntryReconcile,
		metering.EntrySettle, metering.EntryRefund}
	if len(got) != len(wantKinds) {
		t.Fatalf("journal kinds: got %v, want %v", got, wantKinds)
	}
	for i := range got {
		if got[i] != wantKinds[i] {
			t.Errorf("journal kinds: got %v, want %v", got, wantKinds)
			break
		}
	}
}

// TestSettleInTheBatchOfItsDebit queues a keyed debit, its settle and a
// replay of the settle behind one held commit: the settle must see the
// debit, and the replay the settle.
func TestSettleInTheBatchOfItsDebit(t *testing.T) {
	t.Parallel()
	s := openStore(t, filepath.Join(t.TempDir(), "l.db"), metering.Options{}, 8)
	mustProvision(t, s, 1, 100)
	g := holdFirstCommit(t, s)
	ctx := context.Background()
	type answer struct {
		res metering.SettleResult
		err error
	}
	settleAsync := func() <-chan answer {
		ch := make(chan answer, 1)
		go func() {
			res, err := s.Settle(ctx, metering.SettleRequest{
				UserAutomationID: 1, IdempotencyKey: "k", Units: 12,
			})
			ch <- answer{res, err}
		}()
		return ch
	}

	held := consumeAsync(ctx, s, metering.ConsumeRequest{UserAutomationID: 1, Units: 1})
	<-g.entered
	debit := consumeAsync(ctx, s, metering.ConsumeRequest{
		UserAutomationID: 1, Units: 30, IdempotencyKey: "k",
	})
	waitQueued(t, s, 1)
	first := settleAsync()
	waitQueued(t, s, 2)
	replay := settleAsync()
	waitQueued(t, s, 3)
	close(g.release)

	if o := <-held; o.err != nil {
		t.Fatalf("held write: %v", o.err)
	}
	if o := <-debit; o.err != nil || !o.res.Accepted {
		t.Fatalf("debit: got %+v, %v", o.res, o.err)
	}
	a := <-first
	if a.err != nil || a.res.Replayed || a.res.Charged != 12 || a.res.Account.DemoTokens != 87 {
		t.Errorf("settle in the debit's batch: got %+v, %v, want 12 charged, 87 left",
			a.res, a.err)
	}
	b := <-replay
	if b.err != nil || !b.res.Replayed || b.res.Charged != 12 {
		t.Errorf("replay in the same batch: got %+v, %v, want a replay", b.res, b.err)
	}
	if sizes := g.batchSizes(); len(sizes) != 2 || sizes[1] != 3 {
		t.Errorf("batch sizes: got %v, want [1 3]", sizes)
	}
	wantDemo(t, s, 1, 87)
}

// TestFailedSettleChangesNothing: a settle or reconcile whose commit
// fails moves nothing and records nothing, so the same settle works
// once commits do, as an original, and then replays.
func TestFailedSettleChangesNothing(t *testing.T) {
	t.Parallel()
	s := openStore(t, filepath.Join(t.TempDir(), "l.db"), metering.Options{}, 4)
	ctx := context.Background()
	mustProvision(t, s, 1, 100)
	res, err := s.Consume(ctx, metering.ConsumeRequest{
		UserAutomationID: 1, Units: 10, IdempotencyKey: "k",
	})
	if err != nil || !res.Accepted {
		t.Fatalf("consume: got %+v, %v", res, err)
	}
	before := journalLen(t, s)
	req := metering.SettleRequest{UserAutomationID: 1, IdempotencyKey: "k", Units: 3}

	bolt.SetCommitHook(s, func(int) error { return errDiskFull })
	if _, err := s.Settle(ctx, req); !errors.Is(err, errDiskFull) {
		t.Fatalf("settle while commits fail: got %v, want %v", err, errDiskFull)
	}
	_, err = s.Reconcile(ctx, metering.ReconcileRequest{UserAutomationID: 1, DemoTokens: 1})
	if !errors.Is(err, errDiskFull) {
		t.Fatalf("reconcile while commits fail: got %v, want %v", err, errDiskFull)
	}
	bolt.SetCommitHook(s, nil)
	wantDemo(t, s, 1, 90)
	if n := journalLen(t, s); n != before {
		t.Errorf("journal grew from %d to %d on failed writes", before, n)
	}

	for i, wantReplay := range []bool{false, true} {
		got, err := s.Settle(ctx, req)
		if err != nil || got.Replayed != wantReplay || got.Account.DemoTokens != 97 {
			t.Errorf("settle %d after commits work: got %+v, %v, want 97 demo, replayed %v",
				i, got, err, wantReplay)
		}
	}
	if n := journalLen(t, s); n != before+1 {
		t.Errorf("journal: got %d entries, want %d", n, before+1)
	}
}

// TestOpenUpgradesSchemaTwo opens a version 2 file: it is marked version
// 3 and its debits, refunded or not, behave as before and can be settled.
func TestOpenUpgradesSchemaTwo(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "v2.db")
	ctx := context.Background()
	s, err := bolt.Open(path, metering.Options{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	mustProvision(t, s, 1, 100)
	for _, key := range []string{"a", "b"} {
		_, err := s.Consume(ctx, metering.ConsumeRequest{
			UserAutomationID: 1, Units: 10, UsageType: "chat", IdempotencyKey: key,
		})
		if err != nil {
			t.Fatalf("consume %s: %v", key, err)
		}
	}
	if _, err := s.Refund(ctx, metering.RefundRequest{
		UserAutomationID: 1, IdempotencyKey: "b",
	}); err != nil {
		t.Fatalf("refund: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	setSchema(t, path, "2")

	s = openStore(t, path, metering.Options{}, bolt.DefaultMaxBatch)
	res, err := s.Settle(ctx, metering.SettleRequest{
		UserAutomationID: 1, IdempotencyKey: "a", Units: 4,
	})
	if err != nil || res.Account.DemoTokens != 96 {
		t.Errorf("settle of a v2 debit: got %+v, %v, want 96 demo", res, err)
	}
	_, err = s.Settle(ctx, metering.SettleRequest{
		UserAutomationID: 1, IdempotencyKey: "b", Units: 4,
	})
	if !errors.Is(err, metering.ErrUnknownDebit) {
		t.Errorf("settle of a refunded v2 debit: got %v, want ErrUnknownDebit", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if got := schemaOf(t, path); got != "3" {
		t.Errorf("schema after open: got %q, want 3", got)
	}
}

// setSchema writes a closed file's schema version.
func setSchema(t *testing.T, path, version string) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatalf("bbolt open: %v", err)
	}
	defer db.Close()
	err = db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("schema"), []byte(version))
	})
	if err != nil {
		t.Fatalf("set schema %s: %v", version, err)
	}
}
