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

// refund calls Refund and fails the test on an error.
func refund(t *testing.T, l metering.Ledger, req metering.RefundRequest) metering.Account {
	t.Helper()
	a, err := l.Refund(context.Background(), req)
	if err != nil {
		t.Fatalf("refund %+v: %v", req, err)
	}
	return a
}

// testRefundRestoresSplit refunds debits taken from demo, from paid and,
// under the spill rule, from both: each part goes back where it came
// from, the answer is the account after the refund, and one refund entry
// carries the debit's usage type and key and the refund's reason.
func testRefundRestoresSplit(t *testing.T, open OpenFunc) {
	tests := []struct {
		name       string
		rule       metering.DemoRule
		demo, paid int64
		units      int64
		wantDebit  [2]int64 // demo, paid
	}{
		{name: "whole: demo", rule: metering.DemoWhole, demo: 10, paid: 100, units: 4,
			wantDebit: [2]int64{4, 0}},
		{name: "whole: paid", rule: metering.DemoWhole, demo: 0, paid: 100, units: 4,
			wantDebit: [2]int64{0, 4}},
		{name: "spill: demo", rule: metering.DemoSpill, demo: 10, paid: 100, units: 4,
			wantDebit: [2]int64{4, 0}},
		{name: "spill: both", rule: metering.DemoSpill, demo: 3, paid: 100, units: 5,
			wantDebit: [2]int64{3, 2}},
		{name: "spill: paid", rule: metering.DemoSpill, demo: 0, paid: 100, units: 5,
			wantDebit: [2]int64{0, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := fresh(t, open, metering.Options{DemoRule: tt.rule})
			provision(t, l, 1, tt.demo, tt.paid)
			res := consume(t, l, metering.ConsumeRequest{
				UserAutomationID: 1, Units: tt.units, UsageType: "chat", IdempotencyKey: "k",
			})
			if got := [2]int64{res.DemoDebited, res.PaidDebited}; !res.Accepted ||
				got != tt.wantDebit {
				t.Fatalf("debit: got %+v, want %v debited", res, tt.wantDebit)
			}

			got := refund(t, l, metering.RefundRequest{
				UserAutomationID: 1, IdempotencyKey: "k", Reason: "app failed",
			})
			if got.DemoTokens != tt.demo || got.PaidTokens != tt.paid {
				t.Errorf("answer: got demo %d paid %d, want demo %d paid %d",
					got.DemoTokens, got.PaidTokens, tt.demo, tt.paid)
			}
			if stored := account(t, l, 1); !sameAccount(stored, got) {
				t.Errorf("stored account %+v differs from the answer %+v", stored, got)
			}

			es := checkJournal(t, l, 1)
			last := es[len(es)-1]
			want := metering.Entry{
				Seq: last.Seq, Time: last.Time, Kind: metering.EntryRefund,
				UserAutomationID: 1, DemoDelta: tt.wantDebit[0], PaidDelta: tt.wantDebit[1],
				UsageType: "chat", IdempotencyKey: "k", Reason: "app failed",
			}
			if last != want || countKind(es, 1, metering.EntryRefund) != 1 {
				t.Errorf("journal ends with %+v, want one refund %+v", last, want)
			}
		})
	}
}

// testRefundTwice: a second refund of the same debit changes nothing and
// answers the account as it is then, also after other writes.
func testRefundTwice(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{})
	provision(t, l, 1, 100, 0)
	consume(t, l, metering.ConsumeRequest{UserAutomationID: 1, Units: 10, IdempotencyKey: "k"})
	req := metering.RefundRequest{UserAutomationID: 1, IdempotencyKey: "k", Reason: "first"}
	first := refund(t, l, req)
	if first.DemoTokens != 100 {
		t.Fatalf("first refund: got %+v, want 100 demo", first)
	}

	// Again, also under another reason and after the balance moved.
	consume(t, l, metering.ConsumeRequest{UserAutomationID: 1, Units: 7})
	for _, reason := range []string{"first", "second"} {
		req.Reason = reason
		again := refund(t, l, req)
		if again.DemoTokens != 93 {
			t.Errorf("refund again (%s): got %+v, want the account as it is (93 demo)",
				reason, again)
		}
	}
	wantBalances(t, l, 1, 93, 0)
	if n := countKind(checkJournal(t, l, 1), 1, metering.EntryRefund); n != 1 {
		t.Errorf("refund entries: got %d, want 1", n)
	}
}

// testRefundUnknownDebit: keys that hold no accepted debit of the
// account are ErrUnknownDebit and change nothing; a malformed key is
// ErrInvalidIdempotencyKey.
func testRefundUnknownDebit(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{})
	ctx := context.Background()
	provision(t, l, 1, 3, 0)
	provision(t, l, 2, 100, 0)
	consume(t, l, metering.ConsumeRequest{UserAutomationID: 1, Units: 2, IdempotencyKey: "ok"})
	consume(t, l, metering.ConsumeRequest{UserAutomationID: 1, Units: 50, IdempotencyKey: "no"})
	consume(t, l, metering.ConsumeRequest{UserAutomationID: 2, Units: 1, IdempotencyKey: "two"})
	consume(t, l, metering.ConsumeRequest{UserAutomationID: 1, Units: 1}) // no key
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
	}{
		{name: "free key", id: 1, key: "never"},
		{name: "empty key", id: 1, key: ""},
		{name: "refused debit", id: 1, key: "no"},
		{name: "a credit", id: 1, key: "credit"},
		{name: "another account's debit", id: 1, key: "two"},
		{name: "debit named for another account", id: 2, key: "ok"},
		{name: "unknown account", id: 404, key: "ok"},
	}
	for _, tt := range tests {
		_, err := l.Refund(ctx, metering.RefundRequest{
			UserAutomationID: tt.id,
			IdempotencyKey:   tt.key,
		})
		errorIs(t, tt.name, err, metering.ErrUnknownDebit)
	}
	for _, key := range []string{"a\nb", strings.Repeat("k", metering.MaxIdempotencyKeyLen+1)} {
		_, err := l.Refund(ctx, metering.RefundRequest{UserAutomationID: 1, IdempotencyKey: key})
		errorIs(t, "malformed key", err, metering.ErrInvalidIdempotencyKey)
	}

	wantBalances(t, l, 1, 0, 5)
	wantBalances(t, l, 2, 99, 0)
	if after := entries(t, l); !sameEntries(after, before) {
		t.Errorf("journal changed: %d entries before, %d after", len(before), len(after))
	}

	// The refused key is still a refusal, and the good one still refunds.
	if res := consume(t, l, metering.ConsumeRequest{
		UserAutomationID: 1, Units: 50, IdempotencyKey: "no",
	}); res.Accepted || !res.Replayed || res.Refunded {
		t.Errorf("replayed refusal: got %+v, want a replayed refusal", res)
	}
	refund(t, l, metering.RefundRequest{UserAutomationID: 1, IdempotencyKey: "ok"})
	wantBalances(t, l, 1, 2, 5)
	checkJournal(t, l, 1, 2)
}

// testReplayAfterRefund: the refunded consume, replayed, answers its
// first answer with Refunded set and debits nothing, however often.
func testReplayAfterRefund(t *testing.T, open OpenFunc) {
	for _, rule := range []metering.DemoRule{metering.DemoWhole, metering.DemoSpill} {
		t.Run(string(rule), func(t *testing.T) {
			l := fresh(t, open, metering.Options{DemoRule: rule})
			provision(t, l, 1, 3, 100)
			req := metering.ConsumeRequest{
				UserAutomationID: 1, Units: 3, UsageType: "chat", IdempotencyKey: "k",
			}
			first := consume(t, l, req)
			if !first.Accepted || first.Refunded {
				t.Fatalf("first: got %+v, want accepted, not refunded", first)
			}

			// Before the refund a replay is not marked refunded.
			if again := consume(t, l, req); !again.Replayed || again.Refunded {
				t.Errorf("replay before the refund: got %+v", again)
			}
			refund(t, l, metering.RefundRequest{UserAutomationID: 1, IdempotencyKey: "k"})
			want := first
			want.Replayed, want.Refunded = true, true
			for i := range 2 {
				if again := consume(t, l, req); again != want {
					t.Errorf("replay %d after the refund: got %+v, want %+v", i, again, want)
				}
			}

			wantBalances(t, l, 1, 3, 100)
			es := checkJournal(t, l, 1)
			if d, r := countKind(es, 1, metering.EntryDebit),
				countKind(es, 1, metering.EntryRefund); d != 1 || r != 1 {
				t.Errorf("journal: got %d debits and %d refunds, want 1 and 1", d, r)
			}

			// A conflicting reuse of the key is still a conflict.
			req.Units = 4
			_, err := l.Consume(context.Background(), req)
			errorIs(t, "conflicting reuse", err, metering.ErrIdempotencyConflict)
		})
	}
}

// refundOp is one operation of the refund mix and what it answered.
type refundOp struct {
	consume   metering.ConsumeRequest
	res       metering.ConsumeResult
	isRefund  bool
	refundKey string
	acct      metering.Account
	err       error
}

// testConcurrentRefunds runs keyed consumes, replays and refunds (of
// debits that exist, some twice or from another goroutine, of debits not
// yet made and of refusals) from many goroutines, for each demo rule. No
// balance may go negative, every debit is refunded at most once, and the
// balances must be the start less the debits that stand.
func testConcurrentRefunds(t *testing.T, open OpenFunc) {
	for _, rule := range []metering.DemoRule{metering.DemoWhole, metering.DemoSpill} {
		t.Run(string(rule), func(t *testing.T) {
			runRefundMix(t, open, rule)
		})
	}
}

func runRefundMix(t *testing.T, open OpenFunc, rule metering.DemoRule) {
	const workers, opsEach, start = 8, 40, 60
	l := fresh(t, open, metering.Options{DemoRule: rule, MaxUnits: 20})
	provision(t, l, 1, start, start)

	logs := make([][]refundOp, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			logs[w] = refundWorker(l, w, workers, opsEach)
		})
	}
	wg.Wait()

	// The first answer of every key, and the keys a refund succeeded on.
	first := map[string]metering.ConsumeResult{}
	refunded := map[string]bool{}
	for w, log := range logs {
		for _, op := range log {
			switch {
			case op.isRefund && op.err == nil:
				refunded[op.refundKey] = true
				if op.acct.DemoTokens < 0 || op.acct.PaidTokens < 0 {
					t.Errorf("refund answered a negative balance: %+v", op.acct)
				}
			case op.isRefund && !errors.Is(op.err, metering.ErrUnknownDebit):
				t.Errorf("worker %d: refund %s: %v", w, op.refundKey, op.err)
			case op.isRefund:
			case op.err != nil:
				t.Errorf("worker %d: consume: %v", w, op.err)
			case op.res.RemainingDemo < 0 || op.res.RemainingPaid < 0:
				t.Errorf("negative remaining balance in %+v", op.res)
			case !op.res.Replayed:
				first[op.consume.IdempotencyKey] = op.res
			}
		}
	}

	// What the balances must be: the start, less what stands.
	demo, paid := int64(start), int64(start)
	for key, res := range first {
		if !res.Accepted {
			if refunded[key] {
				t.Errorf("key %s: a refusal was refunded", key)
			}
			continue
		}
		if !refunded[key] {
			demo -= res.DemoDebited
			paid -= res.PaidDebited
		}
	}
	for key := range refunded {
		if _, ok := first[key]; !ok {
			t.Errorf("key %s: refunded without a debit", key)
		}
	}
	wantBalances(t, l, 1, demo, paid)
	if len(refunded) == 0 || len(refunded) == len(first) {
		t.Errorf("the mix refunded %d of %d keys: it tests nothing", len(refunded), len(first))
	}

	// One refund entry per refunded key, giving back exactly its debit.
	es := checkJournal(t, l, 1)
	seen := map[string]bool{}
	for _, e := range es {
		if e.Kind != metering.EntryRefund {
			continue
		}
		res := first[e.IdempotencyKey]
		if seen[e.IdempotencyKey] || !refunded[e.IdempotencyKey] ||
			e.DemoDelta != res.DemoDebited || e.PaidDelta != res.PaidDebited {
			t.Errorf("refund entry %+v: not the one refund of %+v", e, res)
		}
		seen[e.IdempotencyKey] = true
	}
	if len(seen) != len(refunded) {
		t.Errorf("refund entries for %d keys, want %d", len(seen), len(refunded))
	}
}

// refundWorker runs worker w's share of the refund mix: half keyed
// consumes, a third refunds of its own or any worker's keys, whether or
// not they exist yet, the rest replays of its own earlier consumes. A
// replay must answer as its first call did.
func refundWorker(l metering.Ledger, w, workers, ops int) []refundOp {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(uint64(w), 11))
	var log []refundOp
	var mine []refundOp // this worker's first consumes
	for i := range ops {
		var op refundOp
		switch n := r.IntN(6); {
		case n < 3 || len(mine) == 0:
			op.consume = metering.ConsumeRequest{
				UserAutomationID: 1, Units: 1 + r.Int64N(20), UsageType: "mix",
				IdempotencyKey: fmt.Sprintf("w%d-%d", w, i),
			}
			op.res, op.err = l.Consume(ctx, op.consume)
			mine = append(mine, op)
		case n < 5:
			op.isRefund = true
			op.refundKey = fmt.Sprintf("w%d-%d", r.IntN(workers), r.IntN(ops))
			if n == 3 {
				op.refundKey = mine[len(mine)-1].consume.IdempotencyKey
			}
			op.acct, op.err = l.Refund(ctx, metering.RefundRequest{
				UserAutomationID: 1, IdempotencyKey: op.refundKey, Reason: "mix",
			})
		default:
			prev := mine[r.IntN(len(mine))]
			op.consume = prev.consume
			op.res, op.err = l.Consume(ctx, op.consume)
			got, want := op.res, prev.res
			got.Replayed, got.Refunded = false, false
			if op.err == nil && prev.err == nil && (!op.res.Replayed || got != want) {
				op.err = fmt.Errorf("replay of %s: got %+v, want %+v",
					op.consume.IdempotencyKey, op.res, want)
			}
		}
		log = append(log, op)
	}
	return log
}
