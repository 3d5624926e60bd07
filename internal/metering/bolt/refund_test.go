package bolt_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"

	bbolt "go.etcd.io/bbolt"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering/bolt"
)

// refundAsync starts a refund and returns where its answer will arrive.
func refundAsync(
	ctx context.Context,
	s *bolt.Store,
	req metering.RefundRequest,
) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := s.Refund(ctx, req)
		ch <- err
	}()
	return ch
}

// TestRefundInTheBatchOfItsDebit queues a keyed debit, its refund and a
// replay of the debit behind one held commit, so all three share a
// batch: the refund must see the debit, and the replay the refund.
func TestRefundInTheBatchOfItsDebit(t *testing.T) {
	t.Parallel()
	s := openStore(t, filepath.Join(t.TempDir(), "l.db"), metering.Options{}, 8)
	mustProvision(t, s, 1, 100)
	g := holdFirstCommit(t, s)
	ctx := context.Background()
	debit := metering.ConsumeRequest{
		UserAutomationID: 1, Units: 30, UsageType: "chat", IdempotencyKey: "k",
	}

	held := consumeAsync(ctx, s, metering.ConsumeRequest{UserAutomationID: 1, Units: 1})
	<-g.entered
	first := consumeAsync(ctx, s, debit)
	waitQueued(t, s, 1)
	refunded := refundAsync(ctx, s, metering.RefundRequest{
		UserAutomationID: 1, IdempotencyKey: "k", Reason: "app failed",
	})
	waitQueued(t, s, 2)
	replay := consumeAsync(ctx, s, debit)
	waitQueued(t, s, 3)
	close(g.release)

	if o := <-held; o.err != nil {
		t.Fatalf("held write: %v", o.err)
	}
	if o := <-first; o.err != nil || !o.res.Accepted || o.res.DemoDebited != 30 {
		t.Fatalf("debit: got %+v, %v, want 30 demo debited", o.res, o.err)
	}
	if err := <-refunded; err != nil {
		t.Fatalf("refund in the debit's batch: %v", err)
	}
	o := <-replay
	if o.err != nil || !o.res.Replayed || !o.res.Refunded || !o.res.Accepted {
		t.Errorf("replay after the refund: got %+v, %v, want an accepted, "+
			"replayed, refunded answer", o.res, o.err)
	}
	if sizes := g.batchSizes(); len(sizes) != 2 || sizes[1] != 3 {
		t.Errorf("batch sizes: got %v, want [1 3]", sizes)
	}
	wantDemo(t, s, 1, 99)
	if n := journalLen(t, s); n != 4 {
		t.Errorf("journal: got %d entries, want 4 (grant, 2 debits, refund)", n)
	}
}

// TestFailedRefundChangesNothing: a refund whose commit fails gives
// nothing back and marks nothing, so the same refund works once commits
// do, and only once.
func TestFailedRefundChangesNothing(t *testing.T) {
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
	req := metering.RefundRequest{UserAutomationID: 1, IdempotencyKey: "k"}

	bolt.SetCommitHook(s, func(int) error { return errDiskFull })
	if _, err := s.Refund(ctx, req); !errors.Is(err, errDiskFull) {
		t.Fatalf("refund while commits fail: got %v, want %v", err, errDiskFull)
	}
	bolt.SetCommitHook(s, nil)
	wantDemo(t, s, 1, 90)
	if n := journalLen(t, s); n != before {
		t.Errorf("journal grew from %d to %d on a failed refund", before, n)
	}

	for i := range 2 {
		acct, err := s.Refund(ctx, req)
		if err != nil || acct.DemoTokens != 100 {
			t.Errorf("refund %d after commits work: got %+v, %v, want 100 demo", i, acct, err)
		}
	}
	if n := journalLen(t, s); n != before+1 {
		t.Errorf("journal: got %d entries, want %d", n, before+1)
	}
}

// TestOpenUpgradesSchemaOne opens a version 1 file: it is marked the
// current version (3), its keyed debits still replay, and a debit record of version 1 (no
// usage type) can be refunded only when its usage type was empty, since
// the account check rebuilds the fingerprint from it.
func TestOpenUpgradesSchemaOne(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "v1.db")
	ctx := context.Background()
	s, err := bolt.Open(path, metering.Options{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	mustProvision(t, s, 1, 100)
	plain := metering.ConsumeRequest{UserAutomationID: 1, Units: 5, IdempotencyKey: "plain"}
	typed := metering.ConsumeRequest{
		UserAutomationID: 1, Units: 7, UsageType: "chat", IdempotencyKey: "typed",
	}
	for _, req := range []metering.ConsumeRequest{plain, typed} {
		if _, err := s.Consume(ctx, req); err != nil {
			t.Fatalf("consume %s: %v", req.IdempotencyKey, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	rewriteAsV1(t, path, "plain", "typed")

	s = openStore(t, path, metering.Options{}, bolt.DefaultMaxBatch)
	if res, err := s.Consume(ctx, typed); err != nil || !res.Replayed {
		t.Errorf("replay of a v1 record: got %+v, %v, want replayed", res, err)
	}
	_, err = s.Refund(ctx, metering.RefundRequest{UserAutomationID: 1, IdempotencyKey: "typed"})
	if !errors.Is(err, metering.ErrUnknownDebit) {
		t.Errorf("refund of a typed v1 debit: got %v, want ErrUnknownDebit", err)
	}
	acct, err := s.Refund(ctx, metering.RefundRequest{UserAutomationID: 1, IdempotencyKey: "plain"})
	if err != nil || acct.DemoTokens != 93 {
		t.Errorf("refund of an untyped v1 debit: got %+v, %v, want 93 demo", acct, err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if got := schemaOf(t, path); got != "3" {
		t.Errorf("schema after open: got %q, want 3", got)
	}
}

// rewriteAsV1 sets the file's schema to 1 and strips the version 2 field
// from the idempotency records of keys.
func rewriteAsV1(t *testing.T, path string, keys ...string) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatalf("bbolt open: %v", err)
	}
	defer db.Close()
	err = db.Update(func(tx *bbolt.Tx) error {
		idem := tx.Bucket([]byte("idempotency"))
		for _, k := range keys {
			raw := stripField(t, idem.Get([]byte(k)), "usage_type")
			if err := idem.Put([]byte(k), raw); err != nil {
				return err
			}
		}
		return tx.Bucket([]byte("meta")).Put([]byte("schema"), []byte("1"))
	})
	if err != nil {
		t.Fatalf("rewrite as v1: %v", err)
	}
}

// schemaOf reads a closed file's schema version.
func schemaOf(t *testing.T, path string) string {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("bbolt open: %v", err)
	}
	defer db.Close()
	var v string
	err = db.View(func(tx *bbolt.Tx) error {
		v = string(tx.Bucket([]byte("meta")).Get([]byte("schema")))
		return nil
	})
	if err != nil {
		t.Fatalf("read schema: %v", err)
	}
	return v
}

// stripField removes one top-level field from a JSON object.
func stripField(t *testing.T, raw []byte, field string) []byte {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("decode record %q: %v", raw, err)
	}
	delete(m, field)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("encode record: %v", err)
	}
	return out
}
