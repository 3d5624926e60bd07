package ledgertest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// testConcurrentDemo is case C4: 100 demo tokens, 20 concurrent consumes
// of 10. Exactly 10 pass, whatever the interleaving, with and without
// idempotency keys.
func testConcurrentDemo(t *testing.T, open OpenFunc) {
	for _, keyed := range []bool{false, true} {
		t.Run(fmt.Sprintf("keyed=%v", keyed), func(t *testing.T) {
			l := fresh(t, open, metering.Options{})
			provision(t, l, 1, 100, 0)

			results := make([]metering.ConsumeResult, 20)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range results {
				wg.Go(func() {
					req := metering.ConsumeRequest{
						UserAutomationID: 1, Units: 10, UsageType: "chat",
					}
					if keyed {
						req.IdempotencyKey = fmt.Sprintf("c4-%d", i)
					}
					<-start
					res, err := l.Consume(context.Background(), req)
					if err != nil {
						t.Errorf("consume %d: %v", i, err)
					}
					results[i] = res
				})
			}
			close(start)
			wg.Wait()

			accepted, refused := 0, 0
			for _, r := range results {
				switch {
				case r.Accepted && r.DemoDebited == 10 && r.PaidDebited == 0:
					accepted++
				case !r.Accepted && r.Message != "":
					refused++
				default:
					t.Errorf("unexpected result %+v", r)
				}
				if r.RemainingDemo < 0 || r.RemainingPaid < 0 {
					t.Errorf("negative remaining balance in %+v", r)
				}
			}
			if accepted != 10 || refused != 10 {
				t.Errorf("got %d accepted, %d refused, want 10 and 10", accepted, refused)
			}
			wantBalances(t, l, 1, 0, 0)
			if n := countKind(checkJournal(t, l, 1), 1, metering.EntryDebit); n != 10 {
				t.Errorf("debit entries: got %d, want 10", n)
			}
		})
	}
}

// mixOp is one operation of the random mix and what it answered.
type mixOp struct {
	consume metering.ConsumeRequest
	credit  metering.CreditRequest
	isDebit bool
	res     metering.ConsumeResult
	acct    metering.Account
}

// testConcurrentRandomMix runs random consumes and credits, some under
// reused idempotency keys, from many goroutines, for each demo rule. The
// answers must agree with the journal, the journal with the balances,
// and no balance may go negative.
func testConcurrentRandomMix(t *testing.T, open OpenFunc) {
	for _, rule := range []metering.DemoRule{metering.DemoWhole, metering.DemoSpill} {
		t.Run(string(rule), func(t *testing.T) {
			runRandomMix(t, open, rule)
		})
	}
}

func runRandomMix(t *testing.T, open OpenFunc, rule metering.DemoRule) {
	const (
		accounts   = 4
		workers    = 8
		opsEach    = 60
		keyedPool  = 40
		creditPool = 10
	)
	l := fresh(t, open, metering.Options{DemoRule: rule, MaxUnits: 30})
	seed := rand.New(rand.NewPCG(1, uint64(len(rule))))
	ids := make([]int64, accounts)
	for i := range ids {
		ids[i] = int64(i + 1)
		provision(t, l, ids[i], seed.Int64N(200), seed.Int64N(200))
	}
	setup := entries(t, l)

	// Keyed requests are fixed per key, so every reuse is a true replay.
	consumes := make([]metering.ConsumeRequest, keyedPool)
	for i := range consumes {
		consumes[i] = metering.ConsumeRequest{
			UserAutomationID: ids[seed.IntN(accounts)], Units: 1 + seed.Int64N(30),
			UsageType: "mix", IdempotencyKey: fmt.Sprintf("mix-%d", i),
		}
	}
	credits := make([]metering.CreditRequest, creditPool)
	for i := range credits {
		credits[i] = metering.CreditRequest{
			UserAutomationID: ids[seed.IntN(accounts)], Units: 1 + seed.Int64N(50),
			Reason: "mix", IdempotencyKey: fmt.Sprintf("mix-credit-%d", i),
		}
	}

	// Run the mix.
	logs := make([][]mixOp, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for range opsEach {
				op, err := randomOp(l, r, ids, consumes, credits)
				if err != nil {
					t.Errorf("worker %d: %v", w, err)
					return
				}
				logs[w] = append(logs[w], op)
			}
		})
	}
	wg.Wait()

	checkMix(t, l, ids, setup, logs)
}

// randomOp runs one random operation: an unkeyed consume, a keyed consume
// from the pool, an unkeyed credit or a keyed credit from the pool.
func randomOp(
	l metering.Ledger,
	r *rand.Rand,
	ids []int64,
	consumes []metering.ConsumeRequest,
	credits []metering.CreditRequest,
) (mixOp, error) {
	ctx := context.Background()
	var op mixOp
	var err error
	switch n := r.IntN(100); {
	case n < 55:
		op.isDebit = true
		op.consume = metering.ConsumeRequest{
			UserAutomationID: ids[r.IntN(len(ids))], Units: 1 + r.Int64N(30), UsageType: "mix",
		}
		op.res, err = l.Consume(ctx, op.consume)
	case n < 85:
		op.isDebit = true
		op.consume = consumes[r.IntN(len(consumes))]
		op.res, err = l.Consume(ctx, op.consume)
	case n < 93:
		op.credit = metering.CreditRequest{
			UserAutomationID: ids[r.IntN(len(ids))], Units: 1 + r.Int64N(20), Reason: "mix",
		}
		op.acct, err = l.Credit(ctx, op.credit)
	default:
		op.credit = credits[r.IntN(len(credits))]
		op.acct, err = l.Credit(ctx, op.credit)
	}
	return op, err
}

// checkMix compares the mix's answers with the journal and balances.
func checkMix(
	t *testing.T,
	l metering.Ledger,
	ids []int64,
	setup []metering.Entry,
	logs [][]mixOp,
) {
	t.Helper()
	es := checkJournal(t, l, ids...)
	mixEntries := es[len(setup):]

	// What the answers say was debited and credited, once per key.
	type sums struct{ debits, demo, paid, credits, credited int64 }
	want := map[int64]*sums{}
	for _, id := range ids {
		want[id] = &sums{}
	}
	keyed := keyedAnswers{first: map[string]metering.ConsumeResult{}, originals: map[string]int{}}
	creditKeys := map[string]bool{}
	for _, log := range logs {
		for _, op := range log {
			if !op.isDebit {
				if k := op.credit.IdempotencyKey; k != "" {
					if creditKeys[k] {
						continue
					}
					creditKeys[k] = true
				}
				want[op.credit.UserAutomationID].credits++
				want[op.credit.UserAutomationID].credited += op.credit.Units
				continue
			}
			if k := op.consume.IdempotencyKey; k != "" {
				keyed.add(t, k, op.res)
				if op.res.Replayed {
					continue
				}
			}
			if op.res.RemainingDemo < 0 || op.res.RemainingPaid < 0 {
				t.Errorf("negative remaining balance in %+v", op.res)
			}
			if op.res.Accepted {
				s := want[op.consume.UserAutomationID]
				s.debits++
				s.demo += op.res.DemoDebited
				s.paid += op.res.PaidDebited
			}
		}
	}

	keyed.check(t)

	// What the journal recorded during the mix.
	got := map[int64]*sums{}
	for _, id := range ids {
		got[id] = &sums{}
	}
	for _, e := range mixEntries {
		s := got[e.UserAutomationID]
		switch e.Kind {
		case metering.EntryDebit:
			s.debits++
			s.demo -= e.DemoDelta
			s.paid -= e.PaidDelta
		case metering.EntryCredit:
			s.credits++
			s.credited += e.PaidDelta
		default:
			t.Errorf("unexpected %s entry during the mix", e.Kind)
		}
	}
	for _, id := range ids {
		if *got[id] != *want[id] {
			t.Errorf("account %d: journal %+v, answers %+v", id, *got[id], *want[id])
		}
	}
}

// keyedAnswers checks that every answer under one key is the same and
// that exactly one of them is not a replay.
type keyedAnswers struct {
	first     map[string]metering.ConsumeResult
	originals map[string]int
}

// add records one answer under key.
func (k *keyedAnswers) add(t *testing.T, key string, res metering.ConsumeResult) {
	t.Helper()
	if !res.Replayed {
		k.originals[key]++
	}
	res.Replayed = false
	prev, seen := k.first[key]
	if !seen {
		k.first[key] = res
		return
	}
	if prev != res {
		t.Errorf("key %s: answers differ: %+v and %+v", key, prev, res)
	}
}

// check fails unless every key had exactly one original answer.
func (k *keyedAnswers) check(t *testing.T) {
	t.Helper()
	for key := range k.first {
		if n := k.originals[key]; n != 1 {
			t.Errorf("key %s: got %d answers that are not replays, want 1", key, n)
		}
	}
}
