package ledgertest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// settle calls Settle and fails the test on an error.
func settle(t *testing.T, l metering.Ledger, req metering.SettleRequest) metering.SettleResult {
	t.Helper()
	res, err := l.Settle(context.Background(), req)
	if err != nil {
		t.Fatalf("settle %+v: %v", req, err)
	}
	return res
}

// reconcile calls Reconcile and fails the test on an error.
func reconcile(t *testing.T, l metering.Ledger, req metering.ReconcileRequest) metering.Account {
	t.Helper()
	a, err := l.Reconcile(context.Background(), req)
	if err != nil {
		t.Fatalf("reconcile %+v: %v", req, err)
	}
	return a
}

// reserve makes the keyed debit "k" of units with usage type "chat" and
// fails unless it is accepted with the split want (demo, paid).
func reserve(t *testing.T, l metering.Ledger, units int64, want [2]int64) {
	t.Helper()
	res := consume(t, l, metering.ConsumeRequest{
		UserAutomationID: 1, Units: units, UsageType: "chat", IdempotencyKey: "k",
	})
	if got := [2]int64{res.DemoDebited, res.PaidDebited}; !res.Accepted || got != want {
		t.Fatalf("reserve %d: got %+v, want %v debited", units, res, want)
	}
}

// wantSettled fails unless res is an original settle that charged
// charged and answered the account as stored, with demo and paid tokens,
// and the journal ends with the one settle entry of key "k" moving
// deltas (demo, paid).
func wantSettled(
	t *testing.T,
	l metering.Ledger,
	res metering.SettleResult,
	charged, demo, paid int64,
	deltas [2]int64,
	reason string,
) {
	t.Helper()
	if res.Replayed || res.Charged != charged {
		t.Errorf("settle: got %+v, want an original charging %d", res, charged)
	}
	if res.Account.DemoTokens != demo || res.Account.PaidTokens != paid {
		t.Errorf("settle answer: got demo %d paid %d, want demo %d paid %d",
			res.Account.DemoTokens, res.Account.PaidTokens, demo, paid)
	}
	if stored := account(t, l, 1); !sameAccount(stored, res.Account) {
		t.Errorf("stored account %+v differs from the answer %+v", stored, res.Account)
	}
	es := checkJournal(t, l, 1)
	last := es[len(es)-1]
	want := metering.Entry{
		Seq: last.Seq, Time: last.Time, Kind: metering.EntrySettle, UserAutomationID: 1,
		DemoDelta: deltas[0], PaidDelta: deltas[1], UsageType: "chat", IdempotencyKey: "k",
		Reason: reason,
	}
	if last != want || countKind(es, 1, metering.EntrySettle) != 1 {
		t.Errorf("journal ends with %+v, want one settle %+v", last, want)
	}
}

// settleCase is one settle of the debit "k" on account 1 and what it
// must do.
type settleCase struct {
	name       string
	rule       metering.DemoRule
	demo, paid int64    // the account before the debit
	units      int64    // the debit
	split      [2]int64 // how the debit must split (demo, paid)
	settle     int64    // the settle's units
	charged    int64    // what the settle must charge
	deltas     [2]int64 // the settle entry's deltas (demo, paid)
}

// run makes the debit, settles it and checks the outcome.
func (c settleCase) run(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{DemoRule: c.rule})
	provision(t, l, 1, c.demo, c.paid)
	reserve(t, l, c.units, c.split)
	res := settle(t, l, metering.SettleRequest{
		UserAutomationID: 1, IdempotencyKey: "k", Units: c.settle, Reason: "actual",
	})
	demo := c.demo - c.split[0] + c.deltas[0]
	paid := c.paid - c.split[1] + c.deltas[1]
	wantSettled(t, l, res, c.charged, demo, paid, c.deltas, "actual")
}

// testSettleDown settles debits below their units: the difference goes
// back, paid tokens first, then demo.
func testSettleDown(t *testing.T, open OpenFunc) {
	whole, spill := metering.DemoWhole, metering.DemoSpill
	tests := []settleCase{
		{name: "demo debit", rule: whole, demo: 100, paid: 50, units: 10,
			split: [2]int64{10, 0}, settle: 4, charged: 4, deltas: [2]int64{6, 0}},
		{name: "paid debit", rule: whole, demo: 0, paid: 100, units: 10,
			split: [2]int64{0, 10}, settle: 3, charged: 3, deltas: [2]int64{0, 7}},
		{name: "mixed debit, paid back", rule: spill, demo: 3, paid: 100, units: 10,
			split: [2]int64{3, 7}, settle: 5, charged: 5, deltas: [2]int64{0, 5}},
		{name: "mixed debit, paid then demo back", rule: spill, demo: 3, paid: 100,
			units: 10, split: [2]int64{3, 7}, settle: 1, charged: 1, deltas: [2]int64{2, 7}},
		{name: "to zero", rule: spill, demo: 3, paid: 100, units: 10,
			split: [2]int64{3, 7}, settle: 0, charged: 0, deltas: [2]int64{3, 7}},
		{name: "same units", rule: whole, demo: 100, paid: 0, units: 10,
			split: [2]int64{10, 0}, settle: 10, charged: 10, deltas: [2]int64{0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, open) })
	}
}

// testSettleUp settles debits above their units with enough balance: the
// extra comes from the balance the debit used, then the other.
func testSettleUp(t *testing.T, open OpenFunc) {
	whole, spill := metering.DemoWhole, metering.DemoSpill
	tests := []settleCase{
		{name: "demo debit, demo covers", rule: whole, demo: 100, paid: 50, units: 10,
			split: [2]int64{10, 0}, settle: 25, charged: 25, deltas: [2]int64{-15, 0}},
		{name: "demo debit, demo then paid", rule: whole, demo: 12, paid: 50, units: 10,
			split: [2]int64{10, 0}, settle: 20, charged: 20, deltas: [2]int64{-2, -8}},
		{name: "paid debit, paid covers", rule: whole, demo: 0, paid: 50, units: 10,
			split: [2]int64{0, 10}, settle: 20, charged: 20, deltas: [2]int64{0, -10}},
		{name: "mixed debit, paid first", rule: spill, demo: 3, paid: 50, units: 10,
			split: [2]int64{3, 7}, settle: 14, charged: 14, deltas: [2]int64{0, -4}},
		{name: "exactly everything", rule: whole, demo: 10, paid: 5, units: 10,
			split: [2]int64{10, 0}, settle: 15, charged: 15, deltas: [2]int64{0, -5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, open) })
	}

	// A paid debit whose paid balance runs short takes the rest from demo
	// tokens (reconciled in after the debit).
	t.Run("paid debit, paid then demo", func(t *testing.T) {
		l := fresh(t, open, metering.Options{})
		provision(t, l, 1, 0, 12)
		reserve(t, l, 10, [2]int64{0, 10})
		reconcile(t, l, metering.ReconcileRequest{UserAutomationID: 1, DemoTokens: 5,
			PaidTokens: 2})
		res := settle(t, l, metering.SettleRequest{
			UserAutomationID: 1, IdempotencyKey: "k", Units: 15, Reason: "actual",
		})
		wantSettled(t, l, res, 15, 2, 0, [2]int64{-3, -2}, "actual")
	})
}

// testSettleBeyondBalance settles above what the balances hold: the
// charge stops at zero balances, never below.
func testSettleBeyondBalance(t *testing.T, open OpenFunc) {
	whole, spill := metering.DemoWhole, metering.DemoSpill
	tests := []settleCase{
		{name: "demo debit, paid runs out", rule: whole, demo: 10, paid: 3, units: 10,
			split: [2]int64{10, 0}, settle: 20, charged: 13, deltas: [2]int64{0, -3}},
		{name: "demo debit, demo and paid run out", rule: whole, demo: 14, paid: 3,
			units: 10, split: [2]int64{10, 0}, settle: 100, charged: 17,
			deltas: [2]int64{-4, -3}},
		{name: "nothing left", rule: whole, demo: 10, paid: 0, units: 10,
			split: [2]int64{10, 0}, settle: 1000, charged: 10, deltas: [2]int64{0, 0}},
		{name: "mixed debit", rule: spill, demo: 3, paid: 9, units: 10,
			split: [2]int64{3, 7}, settle: 50, charged: 12, deltas: [2]int64{0, -2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, open)
		})
	}

	// The largest units there are: charged what is left, nothing more.
	t.Run("max units", func(t *testing.T) {
		l := fresh(t, open, metering.Options{})
		provision(t, l, 1, 20, 7)
		reserve(t, l, 10, [2]int64{10, 0})
		res := settle(t, l, metering.SettleRequest{
			UserAutomationID: 1, IdempotencyKey: "k", Units: 1<<63 - 1,
		})
		wantSettled(t, l, res, 27, 0, 0, [2]int64{-10, -7}, "")
		r := consume(t, l, metering.ConsumeRequest{UserAutomationID: 1, Units: 1})
		if r.Accepted {
			t.Errorf("consume after a settle took everything: got %+v, want a refusal", r)
		}
	})
}

// testSettleReplay: a second settle with the same units changes nothing
// and answers the first result, also after the balances moved and under
// another reason; the settled consume still replays its first answer.
func testSettleReplay(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{})
	ctx := context.Background()
	provision(t, l, 1, 100, 0)
	req := metering.ConsumeRequest{
		UserAutomationID: 1, Units: 10, UsageType: "chat", IdempotencyKey: "k",
	}
	reserved := consume(t, l, req)
	sreq := metering.SettleRequest{
		UserAutomationID: 1, IdempotencyKey: "k", Units: 4, Reason: "first",
	}
	first := settle(t, l, sreq)
	wantSettled(t, l, first, 4, 96, 0, [2]int64{6, 0}, "first")

	consume(t, l, metering.ConsumeRequest{UserAutomationID: 1, Units: 7})
	if _, err := l.Credit(ctx, metering.CreditRequest{UserAutomationID: 1, Units: 5}); err != nil {
		t.Fatalf("credit: %v", err)
	}
	before := entries(t, l)
	for _, reason := range []string{"first", "second"} {
		sreq.Reason = reason
		again := settle(t, l, sreq)
		if !again.Replayed || again.Charged != 4 || !sameAccount(again.Account, first.Account) {
			t.Errorf("replay (%s): got %+v, want the first answer %+v replayed",
				reason, again, first)
		}
	}
	wantBalances(t, l, 1, 89, 5)
	if after := entries(t, l); !sameEntries(after, before) {
		t.Errorf("journal changed on a replay: %d entries before, %d after",
			len(before), len(after))
	}

	// The reservation, replayed, still answers as it first did.
	want := reserved
	want.Replayed = true
	if got := consume(t, l, req); got != want {
		t.Errorf("consume replay after the settle: got %+v, want %+v", got, want)
	}
	checkJournal(t, l, 1)
}

// testSettleConflict: a settle of a settled debit at other units is
// ErrIdempotencyConflict and changes nothing; the first settle still
// replays.
func testSettleConflict(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{})
	ctx := context.Background()
	provision(t, l, 1, 100, 0)
	reserve(t, l, 10, [2]int64{10, 0})
	req := metering.SettleRequest{UserAutomationID: 1, IdempotencyKey: "k", Units: 4}
	settle(t, l, req)
	before := entries(t, l)

	for _, units := range []int64{0, 5, 10, 40} {
		_, err := l.Settle(ctx, metering.SettleRequest{
			UserAutomationID: 1, IdempotencyKey: "k", Units: units,
		})
		errorIs(t, fmt.Sprintf("settle again at %d", units), err,
			metering.ErrIdempotencyConflict)
	}
	wantBalances(t, l, 1, 96, 0)
	if after := entries(t, l); !sameEntries(after, before) {
		t.Errorf("journal changed on a conflict: %d entries before, %d after",
			len(before), len(after))
	}
	if again := settle(t, l, req); !again.Replayed || again.Charged != 4 {
		t.Errorf("replay after conflicts: got %+v, want a replay charging 4", again)
	}
}

// testRefundAfterSettle: a refund of a settled debit gives back what it
// holds after the settle, split as settled; the debit cannot be settled
// again, and its consume replays as refunded.
func testRefundAfterSettle(t *testing.T, open OpenFunc) {
	whole, spill := metering.DemoWhole, metering.DemoSpill
	tests := []settleCase{
		{name: "settled down", rule: whole, demo: 100, paid: 50, units: 10,
			split: [2]int64{10, 0}, settle: 4, charged: 4, deltas: [2]int64{6, 0}},
		{name: "settled up", rule: whole, demo: 12, paid: 50, units: 10,
			split: [2]int64{10, 0}, settle: 20, charged: 20, deltas: [2]int64{-2, -8}},
		{name: "settled beyond the balance", rule: whole, demo: 10, paid: 3, units: 10,
			split: [2]int64{10, 0}, settle: 20, charged: 13, deltas: [2]int64{0, -3}},
		{name: "mixed, settled down", rule: spill, demo: 3, paid: 100, units: 10,
			split: [2]int64{3, 7}, settle: 1, charged: 1, deltas: [2]int64{2, 7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { runRefundAfterSettle(t, open, tt) })
	}
}

// runRefundAfterSettle makes c's debit and settle, then refunds it.
func runRefundAfterSettle(t *testing.T, open OpenFunc, c settleCase) {
	ctx := context.Background()
	l := fresh(t, open, metering.Options{DemoRule: c.rule})
	provision(t, l, 1, c.demo, c.paid)
	req := metering.ConsumeRequest{
		UserAutomationID: 1, Units: c.units, UsageType: "chat", IdempotencyKey: "k",
	}
	reserved := consume(t, l, req)
	sreq := metering.SettleRequest{UserAutomationID: 1, IdempotencyKey: "k", Units: c.settle}
	if res := settle(t, l, sreq); res.Charged != c.charged {
		t.Fatalf("settle: got %+v, want %d charged", res, c.charged)
	}

	got := refund(t, l, metering.RefundRequest{
		UserAutomationID: 1, IdempotencyKey: "k", Reason: "app failed",
	})
	if got.DemoTokens != c.demo || got.PaidTokens != c.paid {
		t.Errorf("refund: got demo %d paid %d, want the start: demo %d paid %d",
			got.DemoTokens, got.PaidTokens, c.demo, c.paid)
	}
	es := checkJournal(t, l, 1)
	last := es[len(es)-1]
	held := [2]int64{c.split[0] - c.deltas[0], c.split[1] - c.deltas[1]}
	if last.Kind != metering.EntryRefund || [2]int64{last.DemoDelta, last.PaidDelta} != held ||
		last.UsageType != "chat" || last.IdempotencyKey != "k" {
		t.Errorf("journal ends with %+v, want a refund of %v", last, held)
	}

	// Settled and refunded: no settle any more, whatever the units.
	for _, units := range []int64{c.settle, c.settle + 1} {
		sreq.Units = units
		_, err := l.Settle(ctx, sreq)
		errorIs(t, fmt.Sprintf("settle at %d after the refund", units), err,
			metering.ErrUnknownDebit)
	}
	want := reserved
	want.Replayed, want.Refunded = true, true
	if again := consume(t, l, req); again != want {
		t.Errorf("consume replay: got %+v, want %+v", again, want)
	}
	refund(t, l, metering.RefundRequest{UserAutomationID: 1, IdempotencyKey: "k"})
	wantBalances(t, l, 1, c.demo, c.paid)
	if n := countKind(checkJournal(t, l, 1), 1, metering.EntryRefund); n != 1 {
		t.Errorf("refund entries: got %d, want 1", n)
	}
}

// testSettleUnknownDebit: keys that hold no accepted, unrefunded debit
// of the account are ErrUnknownDebit; a malformed key is
// ErrInvalidIdempotencyKey and negative units ErrInvalidUnits. None of
// them changes anything.
func testSettleUnknownDebit(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{})
	ctx := context.Background()
	provision(t, l, 1, 3, 0)
	provision(t, l, 2, 100, 0)
	consume(t, l, metering.ConsumeRequest{UserAutomationID: 1, Units: 2, IdempotencyKey: "ok"})
	consume(t, l, metering.ConsumeRequest{UserAutomationID: 1, Units: 50, IdempotencyKey: "no"})
	consume(t, l, metering.ConsumeRequest{UserAutomationID: 2, Units: 1, IdempotencyKey: "two"})
	consume(t, l, metering.ConsumeRequest{UserAutomationID: 2, Units: 4, IdempotencyKey: "gone"})
	refund(t, l, metering.RefundRequest{UserAutomationID: 2, IdempotencyKey: "gone"})
	if _, err := l.Credit(ctx, metering.CreditRequest{
		UserAutomationID: 1, Units: 5, IdempotencyKey: "credit",
	}); err != nil {
		t.Fatalf("credit: %v", err)
	}
	before := entries(t, l)

	tests := []struct {
		name string
		id   int64
		key  string
		want error
	}{
		{name: "free key", id: 1, key: "never", want: metering.ErrUnknownDebit},
		{name: "empty key", id: 1, key: "", want: metering.ErrUnknownDebit},
		{name: "refused debit", id: 1, key: "no", want: metering.ErrUnknownDebit},
		{name: "a credit", id: 1, key: "credit", want: metering.ErrUnknownDebit},
		{name: "another account's debit", id: 1, key: "two", want: metering.ErrUnknownDebit},
		{name: "debit named for another account", id: 2, key: "ok",
			want: metering.ErrUnknownDebit},
		{name: "unknown account", id: 404, key: "ok", want: metering.ErrUnknownDebit},
		{name: "refunded debit", id: 2, key: "gone", want: metering.ErrUnknownDebit},
		{name: "control byte", id: 1, key: "a\nb", want: metering.ErrInvalidIdempotencyKey},
		{name: "long key", id: 1, key: strings.Repeat("k", metering.MaxIdempotencyKeyLen+1),
			want: metering.ErrInvalidIdempotencyKey},
	}
	for _, tt := range tests {
		_, err := l.Settle(ctx, metering.SettleRequest{
			UserAutomationID: tt.id, IdempotencyKey: tt.key, Units: 1,
		})
		errorIs(t, tt.name, err, tt.want)
	}
	_, err := l.Settle(ctx, metering.SettleRequest{
		UserAutomationID: 1, IdempotencyKey: "ok", Units: -1,
	})
	errorIs(t, "negative units", err, metering.ErrInvalidUnits)

	wantBalances(t, l, 1, 1, 5)
	wantBalances(t, l, 2, 99, 0)
	if after := entries(t, l); !sameEntries(after, before) {
		t.Errorf("journal changed: %d entries before, %d after", len(before), len(after))
	}

	// The good key still settles.
	res := settle(t, l, metering.SettleRequest{UserAutomationID: 1, IdempotencyKey: "ok"})
	if res.Replayed || res.Charged != 0 || res.Account.DemoTokens != 3 {
		t.Errorf("settle of the good debit at 0: got %+v, want 3 demo back", res)
	}
	checkJournal(t, l, 1, 2)
}

// testReconcile sets balances up, down and to what they are; only
// changes are journaled, with the deltas and the reason.
func testReconcile(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{})
	ctx := context.Background()
	provision(t, l, 1, 10, 20)
	provision(t, l, 2, 7, 0)

	steps := []struct {
		name       string
		demo, paid int64
		deltas     *[2]int64 // nil: no entry
	}{
		{name: "up", demo: 30, paid: 40, deltas: &[2]int64{20, 20}},
		{name: "down", demo: 5, paid: 0, deltas: &[2]int64{-25, -40}},
		{name: "mixed", demo: 0, paid: 9, deltas: &[2]int64{-5, 9}},
		{name: "no-op", demo: 0, paid: 9},
	}
	for _, st := range steps {
		before := entries(t, l)
		reason := "platform " + st.name
		got := reconcile(t, l, metering.ReconcileRequest{
			UserAutomationID: 1, DemoTokens: st.demo, PaidTokens: st.paid, Reason: reason,
		})
		if got.DemoTokens != st.demo || got.PaidTokens != st.paid || got.UserID != 10 {
			t.Errorf("%s: got %+v, want demo %d paid %d", st.name, got, st.demo, st.paid)
		}
		if stored := account(t, l, 1); !sameAccount(stored, got) {
			t.Errorf("%s: stored account %+v differs from the answer %+v", st.name, stored, got)
		}
		after := checkJournal(t, l, 1, 2)
		if st.deltas == nil {
			if !sameEntries(after, before) {
				t.Errorf("%s: journal changed: %d entries, then %d",
					st.name, len(before), len(after))
			}
			continue
		}
		last := after[len(after)-1]
		want := metering.Entry{
			Seq: last.Seq, Time: last.Time, Kind: metering.EntryReconcile,
			UserAutomationID: 1, DemoDelta: st.deltas[0], PaidDelta: st.deltas[1],
			Reason: reason,
		}
		if len(after) != len(before)+1 || last != want {
			t.Errorf("%s: journal ends with %+v (%d new), want %+v",
				st.name, last, len(after)-len(before), want)
		}
	}

	// Refusals change nothing.
	before := entries(t, l)
	_, err := l.Reconcile(ctx, metering.ReconcileRequest{UserAutomationID: 404, DemoTokens: 1})
	errorIs(t, "unknown account", err, metering.ErrUnknownAccount)
	for _, bad := range [][2]int64{{-1, 0}, {0, -1}, {-5, -5}} {
		_, err := l.Reconcile(ctx, metering.ReconcileRequest{
			UserAutomationID: 1, DemoTokens: bad[0], PaidTokens: bad[1],
		})
		errorIs(t, fmt.Sprintf("reconcile to %v", bad), err, metering.ErrInvalidUnits)
	}
	wantBalances(t, l, 1, 0, 9)
	wantBalances(t, l, 2, 7, 0)
	if after := entries(t, l); !sameEntries(after, before) {
		t.Errorf("journal changed on refusals: %d entries before, %d after",
			len(before), len(after))
	}
	if n := countKind(entries(t, l), 2, metering.EntryReconcile); n != 0 {
		t.Errorf("account 2: got %d reconcile entries, want 0", n)
	}
}

// reservation is one worker's reserve and settle in the settle race.
type reservation struct {
	key      string
	reserved metering.ConsumeResult
	actual   int64
	settled  metering.SettleResult
}

// testConcurrentSettle is case C4 for reservations: 100 demo tokens, 20
// concurrent reserves (keyed consumes) of 10, each accepted one settled
// at once to a random actual in [0, 15]. Settles give tokens back while
// others reserve, so more than 10 reserves may pass, but never on
// tokens that were not there: replayed in journal order the balance
// never goes negative, every debit had its 10 tokens, the journal's
// deltas add up to the balance, and the charges add up to what the
// balance lost.
func testConcurrentSettle(t *testing.T, open OpenFunc) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			runSettleRace(t, open, seed)
		})
	}
}

func runSettleRace(t *testing.T, open OpenFunc, seed uint64) {
	const workers, start, units = 20, 100, 10
	l := fresh(t, open, metering.Options{})
	provision(t, l, 1, start, 0)
	setup := len(entries(t, l))

	rs := make([]reservation, workers)
	begin := make(chan struct{})
	var wg sync.WaitGroup
	for i := range rs {
		wg.Go(func() {
			r := &rs[i]
			r.key = fmt.Sprintf("race-%d", i)
			r.actual = rand.New(rand.NewPCG(seed, uint64(i))).Int64N(16)
			<-begin
			if err := reserveAndSettle(l, r, units); err != nil {
				t.Errorf("worker %d: %v", i, err)
			}
		})
	}
	close(begin)
	wg.Wait()
	if t.Failed() {
		return
	}

	// The answers: a refusal saw less than the units; charges are never
	// above the actual, never below what the reservation held.
	byKey := map[string]*reservation{}
	var charged int64
	accepted := 0
	for i := range rs {
		r := &rs[i]
		if !r.reserved.Accepted {
			if r.reserved.RemainingDemo >= units {
				t.Errorf("%s refused with %d demo tokens left", r.key, r.reserved.RemainingDemo)
			}
			continue
		}
		accepted++
		byKey[r.key] = r
		charged += r.settled.Charged
		lo := min(r.actual, units)
		if r.settled.Charged < lo || r.settled.Charged > r.actual {
			t.Errorf("%s: actual %d charged %d, want in [%d, %d]",
				r.key, r.actual, r.settled.Charged, lo, r.actual)
		}
		if a := r.settled.Account; a.DemoTokens < 0 || a.PaidTokens < 0 {
			t.Errorf("%s: settle answered a negative balance %+v", r.key, a)
		}
	}
	wantBalances(t, l, 1, start-charged, 0)

	// The journal, replayed in order.
	es := checkJournal(t, l, 1)[setup:]
	balance := int64(start)
	debits, settles := 0, 0
	for _, e := range es {
		if e.PaidDelta != 0 {
			t.Errorf("entry %+v moved paid tokens, there are none", e)
		}
		r := byKey[e.IdempotencyKey]
		switch {
		case r == nil:
			t.Errorf("entry %+v: no accepted reservation has its key", e)
			continue
		case e.Kind == metering.EntryDebit:
			debits++
			if balance < units || e.DemoDelta != -units {
				t.Errorf("debit %+v on a balance of %d", e, balance)
			}
		case e.Kind == metering.EntrySettle:
			settles++
			if e.DemoDelta != units-r.settled.Charged {
				t.Errorf("settle %+v, want delta %d", e, units-r.settled.Charged)
			}
		default:
			t.Errorf("unexpected entry %+v", e)
		}
		balance += e.DemoDelta
		if balance < 0 {
			t.Fatalf("balance %d after entry %+v", balance, e)
		}
		if e.Kind == metering.EntrySettle && r.settled.Charged < r.actual && balance != 0 {
			t.Errorf("%s charged %d of %d but left %d tokens",
				r.key, r.settled.Charged, r.actual, balance)
		}
	}
	if debits != accepted || settles != accepted {
		t.Errorf("journal: %d debits and %d settles, want %d each", debits, settles, accepted)
	}
}

// reserveAndSettle reserves units under r.key and, when that is
// accepted, settles it at r.actual; a refused reservation must not be
// settleable.
func reserveAndSettle(l metering.Ledger, r *reservation, units int64) error {
	ctx := context.Background()
	res, err := l.Consume(ctx, metering.ConsumeRequest{
		UserAutomationID: 1, Units: units, UsageType: "race", IdempotencyKey: r.key,
	})
	if err != nil {
		return fmt.Errorf("reserve: %w", err)
	}
	if res.RemainingDemo < 0 || res.RemainingPaid < 0 {
		return fmt.Errorf("reserve answered a negative balance: %+v", res)
	}
	r.reserved = res
	req := metering.SettleRequest{UserAutomationID: 1, IdempotencyKey: r.key, Units: r.actual}
	r.settled, err = l.Settle(ctx, req)
	switch {
	case !res.Accepted && err == nil:
		return fmt.Errorf("settle of a refused reservation: got %+v", r.settled)
	case !res.Accepted && !errors.Is(err, metering.ErrUnknownDebit):
		return fmt.Errorf("settle of a refused reservation: %w", err)
	case !res.Accepted:
		return nil
	case err != nil:
		return fmt.Errorf("settle: %w", err)
	case r.settled.Replayed:
		return fmt.Errorf("first settle answered as a replay: %+v", r.settled)
	}
	return nil
}
