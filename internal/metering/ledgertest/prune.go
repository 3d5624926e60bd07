package ledgertest

import (
	"context"
	"fmt"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// The pruning cases run against backends that implement metering.Pruner
// and are skipped for others.

// clock is a ledger clock that tests move forward.
type clock struct{ ns atomic.Int64 }

func newClock(at time.Time) *clock {
	c := &clock{}
	c.ns.Store(at.UnixNano())
	return c
}

func (c *clock) now() time.Time                { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) advance(d time.Duration)       { c.ns.Add(int64(d)) }
func (c *clock) options() metering.Options     { return metering.Options{Now: c.now} }
func (c *clock) ago(d time.Duration) time.Time { return c.now().Add(-d) }

// pruner opens a ledger on c and returns it as a Pruner, or skips t.
func pruner(t *testing.T, open OpenFunc, c *clock) (metering.Ledger, metering.Pruner) {
	t.Helper()
	l := fresh(t, open, c.options())
	p, ok := l.(metering.Pruner)
	if !ok {
		t.Skipf("%T does not implement metering.Pruner", l)
	}
	return l, p
}

// mustPrune prunes records older than before and fails unless want were
// deleted.
func mustPrune(t *testing.T, p metering.Pruner, before time.Time, want int64) {
	t.Helper()
	n, err := p.PruneIdempotency(context.Background(), before)
	if err != nil {
		t.Fatalf("prune before %v: %v", before, err)
	}
	if n != want {
		t.Errorf("prune before %v: got %d deleted, want %d", before, n, want)
	}
}

// keyedRecords makes one record of each kind at the clock's time: an
// accepted debit "debit", a refused debit "refused" and a credit
// "credit", on account 1 (provisioned with 10 demo tokens).
func keyedRecords(t *testing.T, l metering.Ledger) (debit, refused metering.ConsumeResult,
	credit metering.Account) {
	t.Helper()
	ctx := context.Background()
	provision(t, l, 1, 10, 0)
	debit = consume(t, l, metering.ConsumeRequest{
		UserAutomationID: 1, Units: 4, UsageType: "chat", IdempotencyKey: "debit"})
	refused = consume(t, l, metering.ConsumeRequest{
		UserAutomationID: 1, Units: 50, IdempotencyKey: "refused"})
	credit, err := l.Credit(ctx, metering.CreditRequest{
		UserAutomationID: 1, Units: 3, IdempotencyKey: "credit"})
	if err != nil {
		t.Fatalf("credit: %v", err)
	}
	if !debit.Accepted || refused.Accepted {
		t.Fatalf("setup: got debit %+v, refusal %+v", debit, refused)
	}
	return debit, refused, credit
}

// testPruneKeepsRecent: records at or after the cutoff stay, and their
// keys still replay their first answers without a second change.
func testPruneKeepsRecent(t *testing.T, open OpenFunc) {
	c := newClock(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
	l, p := pruner(t, open, c)
	debit, refused, credit := keyedRecords(t, l)
	c.advance(time.Hour)

	mustPrune(t, p, c.ago(time.Hour), 0) // exactly their age: kept
	mustPrune(t, p, c.ago(2*time.Hour), 0)

	ctx := context.Background()
	res := consume(t, l, metering.ConsumeRequest{
		UserAutomationID: 1, Units: 4, UsageType: "chat", IdempotencyKey: "debit"})
	debit.Replayed = true
	if res != debit {
		t.Errorf("debit replay: got %+v, want %+v", res, debit)
	}
	res = consume(t, l, metering.ConsumeRequest{
		UserAutomationID: 1, Units: 50, IdempotencyKey: "refused"})
	refused.Replayed = true
	if res != refused {
		t.Errorf("refusal replay: got %+v, want %+v", res, refused)
	}
	acct, err := l.Credit(ctx, metering.CreditRequest{
		UserAutomationID: 1, Units: 3, IdempotencyKey: "credit"})
	if err != nil || !sameAccount(acct, credit) {
		t.Errorf("credit replay: got %+v, %v, want %+v", acct, err, credit)
	}
	wantBalances(t, l, 1, 6, 3)
	if _, err := l.Refund(ctx, metering.RefundRequest{
		UserAutomationID: 1, IdempotencyKey: "debit"}); err != nil {
		t.Errorf("refund of a kept debit: %v", err)
	}
	checkJournal(t, l, 1)
}

// testPruneFreesKey: records older than the cutoff go, newer ones stay;
// balances and journal are untouched; a pruned key is new again.
func testPruneFreesKey(t *testing.T, open OpenFunc) {
	c := newClock(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
	l, p := pruner(t, open, c)
	keyedRecords(t, l)
	c.advance(2 * time.Hour)
	recent := consume(t, l, metering.ConsumeRequest{
		UserAutomationID: 1, Units: 1, IdempotencyKey: "recent"})
	acctBefore := account(t, l, 1)
	journalBefore := entries(t, l)

	mustPrune(t, p, c.ago(time.Hour), 3)
	mustPrune(t, p, c.ago(time.Hour), 0) // nothing left to prune

	// Balances and journal as they were.
	if got := account(t, l, 1); !sameAccount(got, acctBefore) {
		t.Errorf("account after prune: got %+v, want %+v", got, acctBefore)
	}
	if got := entries(t, l); !reflect.DeepEqual(got, journalBefore) {
		t.Errorf("journal after prune: got %d entries %+v, want %+v",
			len(got), got, journalBefore)
	}

	// The recent key still replays; the pruned debit is no debit any more.
	ctx := context.Background()
	res := consume(t, l, metering.ConsumeRequest{
		UserAutomationID: 1, Units: 1, IdempotencyKey: "recent"})
	if !res.Replayed || res.RemainingDemo != recent.RemainingDemo {
		t.Errorf("recent replay: got %+v, want a replay of %+v", res, recent)
	}
	_, err := l.Refund(ctx, metering.RefundRequest{UserAutomationID: 1, IdempotencyKey: "debit"})
	errorIs(t, "refund of a pruned debit", err, metering.ErrUnknownDebit)

	// The pruned keys are new requests again: debited, credited anew.
	res = consume(t, l, metering.ConsumeRequest{
		UserAutomationID: 1, Units: 4, UsageType: "chat", IdempotencyKey: "debit"})
	if res.Replayed || !res.Accepted || res.DemoDebited != 4 {
		t.Errorf("pruned key again: got %+v, want a new accepted debit of 4", res)
	}
	if _, err := l.Credit(ctx, metering.CreditRequest{
		UserAutomationID: 1, Units: 3, IdempotencyKey: "credit"}); err != nil {
		t.Fatalf("credit with a pruned key: %v", err)
	}
	// 10 - 4 - 1 - 4 demo; 3 + 3 paid.
	wantBalances(t, l, 1, 1, 6)
	checkJournal(t, l, 1)
}

// testPruneMany: a cutoff between many records of two ages deletes
// exactly the older ones, whatever the backend's batch size.
func testPruneMany(t *testing.T, open OpenFunc) {
	const n = 300
	c := newClock(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
	l, p := pruner(t, open, c)
	provision(t, l, 1, 0, 10*n)
	keys := func(prefix string) {
		for i := range n {
			consume(t, l, metering.ConsumeRequest{UserAutomationID: 1, Units: 1,
				IdempotencyKey: fmt.Sprintf("%s-%03d", prefix, i)})
		}
	}
	keys("old")
	c.advance(time.Hour)
	keys("new")
	mustPrune(t, p, c.ago(time.Minute), n)
	for _, k := range []string{"old-000", "old-299"} {
		res := consume(t, l, metering.ConsumeRequest{UserAutomationID: 1, Units: 1,
			IdempotencyKey: k})
		if res.Replayed {
			t.Errorf("%s after prune: got a replay, want a new debit", k)
		}
	}
	for _, k := range []string{"new-000", "new-299"} {
		res := consume(t, l, metering.ConsumeRequest{UserAutomationID: 1, Units: 1,
			IdempotencyKey: k})
		if !res.Replayed {
			t.Errorf("%s after prune: got a new debit, want a replay", k)
		}
	}
	wantBalances(t, l, 1, 0, 10*n-2*n-2)
	checkJournal(t, l, 1)
}

// testPruneStops: a done context and a closed ledger prune nothing.
func testPruneStops(t *testing.T, open OpenFunc) {
	c := newClock(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
	l, p := pruner(t, open, c)
	keyedRecords(t, l)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n, err := p.PruneIdempotency(ctx, c.now().Add(time.Hour))
	errorIs(t, "prune with a canceled context", err, context.Canceled)
	if n != 0 {
		t.Errorf("prune with a canceled context: got %d deleted, want 0", n)
	}
	res := consume(t, l, metering.ConsumeRequest{
		UserAutomationID: 1, Units: 4, UsageType: "chat", IdempotencyKey: "debit"})
	if !res.Replayed {
		t.Errorf("after a canceled prune: got %+v, want a replay", res)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	_, err = p.PruneIdempotency(context.Background(), c.now().Add(time.Hour))
	errorIs(t, "prune after close", err, metering.ErrClosed)
}
