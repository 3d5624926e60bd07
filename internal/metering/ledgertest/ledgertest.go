// Package ledgertest is the storage-agnostic conformance suite for
// metering.Ledger. Every backend runs it from its own tests:
//
//	func TestConformance(t *testing.T) {
//		ledgertest.Run(t, func(t *testing.T, o metering.Options) metering.Ledger {
//			...open a fresh, empty ledger with o...
//		})
//	}
//
// The suite checks the contract through the interface only: provisioning,
// both demo rules, refusals, validation, idempotent replays and
// conflicts, credits, refunds (the exact split restored, idempotent,
// refused for anything but an accepted debit of the account, replays
// after a refund debiting nothing), settles (down, up, beyond the
// balance, replays, conflicts, refunds after them), reconciles, the
// journal's agreement with the balances, and concurrent consumes,
// refunds and reserve-then-settle calls that must never overspend or go
// negative (case C4), and, for backends that implement metering.Pruner,
// pruning of idempotency records (recent keys still replay, pruned keys
// are new again, balances and journal untouched).
package ledgertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// OpenFunc opens a fresh, empty ledger with opts. The suite closes it when
// the subtest ends; the backend may register its own cleanup as well,
// since Close is idempotent.
type OpenFunc func(t *testing.T, opts metering.Options) metering.Ledger

// Run runs every conformance test against the ledgers open returns. The
// subtests run in parallel with each other.
func Run(t *testing.T, open OpenFunc) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(*testing.T, OpenFunc)
	}{
		{"ProvisionIdempotent", testProvisionIdempotent},
		{"ProvisionDemoDefault", testProvisionDemoDefault},
		{"ProvisionNegativeDemo", testProvisionNegativeDemo},
		{"DemoWhole", testDemoWhole},
		{"DemoSpill", testDemoSpill},
		{"RefusalChangesNothing", testRefusalChangesNothing},
		{"UnknownAccount", testUnknownAccount},
		{"InvalidUnits", testInvalidUnits},
		{"InvalidIdempotencyKey", testInvalidIdempotencyKey},
		{"ReplayAccepted", testReplayAccepted},
		{"ReplayRefusal", testReplayRefusal},
		{"IdempotencyConflict", testIdempotencyConflict},
		{"Credit", testCredit},
		{"CreditReplay", testCreditReplay},
		{"RefundRestoresSplit", testRefundRestoresSplit},
		{"RefundTwice", testRefundTwice},
		{"RefundUnknownDebit", testRefundUnknownDebit},
		{"ReplayAfterRefund", testReplayAfterRefund},
		{"JournalPaging", testJournalPaging},
		{"JournalCallbackMayCallLedger", testJournalCallback},
		{"Clock", testClock},
		{"CanceledContext", testCanceledContext},
		{"Closed", testClosed},
		{"ConcurrentDemoC4", testConcurrentDemo},
		{"ConcurrentRandomMix", testConcurrentRandomMix},
		{"ConcurrentRefunds", testConcurrentRefunds},
		{"SettleDown", testSettleDown},
		{"SettleUp", testSettleUp},
		{"SettleBeyondBalance", testSettleBeyondBalance},
		{"SettleReplay", testSettleReplay},
		{"SettleConflict", testSettleConflict},
		{"RefundAfterSettle", testRefundAfterSettle},
		{"SettleUnknownDebit", testSettleUnknownDebit},
		{"Reconcile", testReconcile},
		{"ConcurrentSettleC4", testConcurrentSettle},
		{"PruneKeepsRecent", testPruneKeepsRecent},
		{"PruneFreesKey", testPruneFreesKey},
		{"PruneMany", testPruneMany},
		{"PruneStops", testPruneStops},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open)
		})
	}
}

// fresh opens a ledger and closes it when t ends.
func fresh(t *testing.T, open OpenFunc, opts metering.Options) metering.Ledger {
	t.Helper()
	l := open(t, opts)
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return l
}

// ptr returns a pointer to v.
func ptr(v int64) *int64 { return &v }

// provision creates an account with demo tokens and then paid tokens.
func provision(t *testing.T, l metering.Ledger, id, demo, paid int64) {
	t.Helper()
	ctx := context.Background()
	res, err := l.Provision(ctx, metering.ProvisionRequest{
		UserAutomationID: id, UserID: id * 10, DemoTokens: ptr(demo),
	})
	if err != nil {
		t.Fatalf("provision %d: %v", id, err)
	}
	if !res.Created {
		t.Fatalf("provision %d: got Created false on a new account", id)
	}
	if paid > 0 {
		if _, err := l.Credit(ctx, metering.CreditRequest{
			UserAutomationID: id, Units: paid, Reason: "setup",
		}); err != nil {
			t.Fatalf("credit %d: %v", id, err)
		}
	}
}

// account reads an account or fails the test.
func account(t *testing.T, l metering.Ledger, id int64) metering.Account {
	t.Helper()
	a, err := l.Account(context.Background(), id)
	if err != nil {
		t.Fatalf("account %d: %v", id, err)
	}
	return a
}

// wantBalances fails unless the account holds demo and paid tokens.
func wantBalances(t *testing.T, l metering.Ledger, id, demo, paid int64) {
	t.Helper()
	a := account(t, l, id)
	if a.DemoTokens != demo || a.PaidTokens != paid {
		t.Errorf("account %d: got demo %d paid %d, want demo %d paid %d",
			id, a.DemoTokens, a.PaidTokens, demo, paid)
	}
}

// consume calls Consume and fails the test on an error.
func consume(t *testing.T, l metering.Ledger, req metering.ConsumeRequest) metering.ConsumeResult {
	t.Helper()
	res, err := l.Consume(context.Background(), req)
	if err != nil {
		t.Fatalf("consume %+v: %v", req, err)
	}
	return res
}

// entries reads the whole journal.
func entries(t *testing.T, l metering.Ledger) []metering.Entry {
	t.Helper()
	var out []metering.Entry
	err := l.Journal(context.Background(), 0, 0, func(e metering.Entry) error {
		out = append(out, e)
		return nil
	})
	if err != nil {
		t.Fatalf("journal: %v", err)
	}
	return out
}

// countKind counts one account's entries of one kind.
func countKind(es []metering.Entry, id int64, kind metering.EntryKind) int {
	n := 0
	for _, e := range es {
		if e.UserAutomationID == id && e.Kind == kind {
			n++
		}
	}
	return n
}

// checkJournal fails unless, for every account in ids, the journal's
// deltas add up to its balances exactly, sequence numbers strictly grow
// and no balance is negative.
func checkJournal(t *testing.T, l metering.Ledger, ids ...int64) []metering.Entry {
	t.Helper()
	es := entries(t, l)
	demo := map[int64]int64{}
	paid := map[int64]int64{}
	var last uint64
	for i, e := range es {
		if i > 0 && e.Seq <= last {
			t.Errorf("journal seq %d after %d: not increasing", e.Seq, last)
		}
		last = e.Seq
		demo[e.UserAutomationID] += e.DemoDelta
		paid[e.UserAutomationID] += e.PaidDelta
	}
	for _, id := range ids {
		a := account(t, l, id)
		if a.DemoTokens < 0 || a.PaidTokens < 0 {
			t.Errorf("account %d: negative balance %+v", id, a)
		}
		if demo[id] != a.DemoTokens || paid[id] != a.PaidTokens {
			t.Errorf("account %d: journal sums demo %d paid %d, balances demo %d paid %d",
				id, demo[id], paid[id], a.DemoTokens, a.PaidTokens)
		}
	}
	return es
}

// fixedClock returns a clock that always answers at.
func fixedClock(at time.Time) func() time.Time {
	return func() time.Time { return at }
}

// errorIs fails unless err wraps want.
func errorIs(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got error %v, want %v", what, err, want)
	}
}
