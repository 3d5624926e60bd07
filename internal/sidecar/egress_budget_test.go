package sidecar

import (
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

// TestBudgetTakesTheLowestPlatformAnswer: two calls forwarded to the
// platform whose answers come back in the other order: the local balance
// becomes the lower (later) one, and only once both are answered.
func TestBudgetTakesTheLowestPlatformAnswer(t *testing.T) {
	t.Parallel()
	b, l := newTestBudget(t)
	ctx := t.Context()
	for _, id := range []string{"a", "b"} {
		if ok, err := b.Reserve(ctx, 5, id, 10); !ok || err != nil {
			t.Fatalf("reserve %s: %v %v", id, ok, err)
		}
		if _, err := b.Settle(ctx, 5, id, 4); err != nil {
			t.Fatal(err)
		}
	}
	// The platform applied a (100-4 = 96) then b (92); b's answer
	// arrives first.
	b.platformAnswered(outbox.ConsumeAnswer{CallID: "b", UserAutomationID: 5, Units: 4,
		Accepted: true, RemainingPaidTokens: 90})
	if got := paidOf(t, l); got != 92 {
		t.Fatalf("after the first answer: paid %d, want the local 92 (a is outstanding)", got)
	}
	b.platformAnswered(outbox.ConsumeAnswer{CallID: "a", UserAutomationID: 5, Units: 4,
		Accepted: true, RemainingPaidTokens: 94})
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
	b.platformAnswered(outbox.ConsumeAnswer{CallID: "y", UserAutomationID: 5, Units: 3,
		Accepted: true, RemainingPaidTokens: 40})
	if got := paidOf(t, l); got != 100 {
		t.Fatalf("with x still pending: paid %d, want 100 unchanged", got)
	}
	b.platformAnswered(outbox.ConsumeAnswer{CallID: "x", UserAutomationID: 5, Units: 3,
		Accepted: true, RemainingPaidTokens: 43})
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
		if ok, err := b.Reserve(ctx, 5, id, 10); !ok || err != nil {
			t.Fatalf("reserve %s: %v %v", id, ok, err)
		}
	}
	if _, err := b.Settle(ctx, 5, "a", 4); err != nil {
		t.Fatal(err)
	}
	// b still holds its reservation: an answer (to a consume another
	// replica forwarded) waits.
	b.platformAnswered(outbox.ConsumeAnswer{CallID: "z", UserAutomationID: 5, Units: 1,
		Accepted: true, RemainingPaidTokens: 70})
	if got := paidOf(t, l); got != 86 {
		t.Fatalf("with b held: paid %d, want the local 86", got)
	}
	if _, err := b.Settle(ctx, 5, "b", 4); err != nil {
		t.Fatal(err)
	}
	b.platformAnswered(outbox.ConsumeAnswer{CallID: "y", UserAutomationID: 5, Units: 1,
		Accepted: true, RemainingPaidTokens: 75})
	if got := paidOf(t, l); got != 70 {
		t.Fatalf("nothing held: paid %d, want the lowest answer 70", got)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.forwarded) != 0 || len(b.outstanding) != 0 || len(b.lowest) != 0 {
		t.Errorf("state left behind: forwarded %v outstanding %v lowest %v",
			b.forwarded, b.outstanding, b.lowest)
	}
}
