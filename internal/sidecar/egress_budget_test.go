package sidecar

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/config"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/outbox"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering/bolt"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metrics"
)

// newTestBudget returns a ledgerBudget forwarding to the platform's ledger
// on a fresh bolt ledger with user 5 holding 100 paid tokens.
func newTestBudget(t *testing.T) (*ledgerBudget, metering.Ledger) {
	t.Helper()
	l, err := bolt.Open(filepath.Join(t.TempDir(), "ledger.db"), metering.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	zero := int64(0)
	if _, err := l.Provision(t.Context(), metering.ProvisionRequest{
		UserAutomationID: 5, UserID: 1, DemoTokens: &zero}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Credit(t.Context(), metering.CreditRequest{
		UserAutomationID: 5, Units: 100, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	b := newLedgerBudget(l, config.EgressBudget{UsageType: "openai_tokens", PlatformLedger: true},
		slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.Nop{}, false)
	return b, l
}

func paidOf(t *testing.T, l metering.Ledger) int64 {
	t.Helper()
	a, err := l.Account(t.Context(), 5)
	if err != nil {
		t.Fatal(err)
	}
	return a.PaidTokens
}

// reserve holds units for call id of user 5, failing the test on refusal.
func reserve(t *testing.T, b *ledgerBudget, id string, units int64) {
	t.Helper()
	if ok, err := b.Reserve(t.Context(), 5, id, units); !ok || err != nil {
		t.Fatalf("reserve %s: %v %v", id, ok, err)
	}
}

// platformSays is the platform's accepting answer to call id of user 5, with
// paid tokens left.
func platformSays(b *ledgerBudget, id string, paid int64) {
	b.platformAnswered(outbox.ConsumeAnswer{CallID: id, UserAutomationID: 5, Units: 1,
		Accepted: true, RemainingPaidTokens: paid})
}

// TestBudgetTakesTheLowestPlatformAnswer: two calls forwarded to the
// platform whose answers come back in the other order: the local balance
// becomes the lower (later) one, and only once both are answered.
func TestBudgetTakesTheLowestPlatformAnswer(t *testing.T) {
	t.Parallel()
	b, l := newTestBudget(t)
	ctx := t.Context()
	for _, id := range []string{"a", "b"} {
		reserve(t, b, id, 10)
		if _, err := b.Settle(ctx, 5, id, 4); err != nil {
			t.Fatal(err)
		}
	}
	// The platform applied a (100-4 = 96) then b (92); b's answer
	// arrives first.
	platformSays(b, "b", 90)
	if got := paidOf(t, l); got != 92 {
		t.Fatalf("after the first answer: paid %d, want the local 92 (a is outstanding)", got)
	}
	platformSays(b, "a", 94)
	if got := paidOf(t, l); got != 90 {
		t.Fatalf("after both answers: paid %d, want the platform's latest 90", got)
	}
}

// TestBudgetCountsConsumesLeftByAnEarlierRun: consumes an earlier run left
// pending in the outbox are outstanding, so the first of their answers
// does not overwrite the balance.
func TestBudgetCountsConsumesLeftByAnEarlierRun(t *testing.T) {
	t.Parallel()
	b, l := newTestBudget(t)
	store, err := outbox.OpenBolt(filepath.Join(t.TempDir(), "outbox.db"), outbox.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	ob := outbox.New(store, outbox.Options{Consume: true})
	for _, id := range []string{"x", "y"} {
		if err := ob.Enqueue(t.Context(), outbox.Record{ID: id, At: time.Now(),
			UserAutomationID: 5, Units: 3, Exit: outbox.ExitComplete}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.loadPending(t.Context(), store, 100); err != nil {
		t.Fatal(err)
	}
	platformSays(b, "y", 40)
	if got := paidOf(t, l); got != 100 {
		t.Fatalf("with x still pending: paid %d, want 100 unchanged", got)
	}
	platformSays(b, "x", 43)
	if got := paidOf(t, l); got != 40 {
		t.Fatalf("after both: paid %d, want 40", got)
	}
}

// TestBudgetSharedCountsOnlyHolds: with a shared outbox another replica
// may get the answer to a consume this one forwarded, so a settled call
// is no longer outstanding here, and nothing is remembered for it.
func TestBudgetSharedCountsOnlyHolds(t *testing.T) {
	t.Parallel()
	b, l := newTestBudget(t)
	b.shared = true
	ctx := t.Context()
	for _, id := range []string{"a", "b"} {
		reserve(t, b, id, 10)
	}
	if _, err := b.Settle(ctx, 5, "a", 4); err != nil {
		t.Fatal(err)
	}
	// b still holds its reservation: an answer (to a consume another
	// replica forwarded) waits.
	platformSays(b, "z", 70)
	if got := paidOf(t, l); got != 86 {
		t.Fatalf("with b held: paid %d, want the local 86", got)
	}
	if _, err := b.Settle(ctx, 5, "b", 4); err != nil {
		t.Fatal(err)
	}
	platformSays(b, "y", 75)
	if got := paidOf(t, l); got != 70 {
		t.Fatalf("nothing held: paid %d, want the lowest answer 70", got)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.forwarded) != 0 || len(b.open) != 0 || len(b.lowest) != 0 {
		t.Errorf("state left behind: forwarded %v open %v lowest %v",
			b.forwarded, b.open, b.lowest)
	}
}

// TestBudgetOpenEndsOnEveryPath: a settle that fails closes its call, and
// something open that is never seen again lapses, so a user is never
// left unreconciled for good.
func TestBudgetOpenEndsOnEveryPath(t *testing.T) {
	t.Parallel()
	b, l := newTestBudget(t)
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	b.now = func() time.Time { return now }
	ctx := t.Context()

	reserve(t, b, "a", 10)
	if _, err := b.Settle(ctx, 5, "a", -1); err == nil {
		t.Fatal("a negative settle succeeded")
	}
	platformSays(b, "p", 80)
	if got := paidOf(t, l); got != 80 {
		t.Fatalf("after a failed settle: paid %d, want the platform's 80", got)
	}

	// A forwarded consume whose answer never comes (its record was lost).
	reserve(t, b, "b", 10)
	if _, err := b.Settle(ctx, 5, "b", 4); err != nil {
		t.Fatal(err)
	}
	platformSays(b, "q", 60)
	if got := paidOf(t, l); got != 76 {
		t.Fatalf("with b's consume open: paid %d, want the local 76", got)
	}
	now = now.Add(openLapse + time.Minute)
	platformSays(b, "r", 65)
	if got := paidOf(t, l); got != 60 {
		t.Fatalf("after the lapse: paid %d, want the lowest answer 60", got)
	}
}

// pausingLedger holds each Consume after it committed until released.
type pausingLedger struct {
	metering.Ledger
	committed chan struct{}
	release   chan struct{}
}

func (p *pausingLedger) Consume(ctx context.Context,
	req metering.ConsumeRequest) (metering.ConsumeResult, error) {
	res, err := p.Ledger.Consume(ctx, req)
	close(p.committed)
	<-p.release
	return res, err
}

// TestBudgetReserveNeverLostToReconcile: a platform answer arriving while
// a reservation is being written waits for it, and then sees it open: the
// hold is not erased by the platform's balances.
func TestBudgetReserveNeverLostToReconcile(t *testing.T) {
	t.Parallel()
	b, l := newTestBudget(t)
	p := &pausingLedger{Ledger: l, committed: make(chan struct{}), release: make(chan struct{})}
	b.ledger = p
	ctx := t.Context()

	reserved := make(chan error, 1)
	go func() {
		ok, err := b.Reserve(ctx, 5, "a", 3)
		if err == nil && !ok {
			err = errors.New("refused")
		}
		reserved <- err
	}()
	<-p.committed // the hold is in the ledger; Reserve has not returned
	answered := make(chan struct{})
	go func() {
		platformSays(b, "z", 100)
		close(answered)
	}()
	select { // give an unordered answer the chance to run first
	case <-answered:
	case <-time.After(100 * time.Millisecond):
	}
	close(p.release)
	if err := <-reserved; err != nil {
		t.Fatal(err)
	}
	<-answered
	if got := paidOf(t, l); got != 97 {
		t.Fatalf("paid %d, want 97: the answer erased the hold taken before it", got)
	}
}
