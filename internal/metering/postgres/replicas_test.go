package postgres

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// replicaOp is one call of the replica mix and what it answered.
type replicaOp struct {
	consume   metering.ConsumeRequest
	res       metering.ConsumeResult
	credit    int64 // units credited, when the op was a credit
	refundKey string
	err       error
}

// TestReplicasShareLedger runs three Stores (three pools, as three
// sidecar processes would have) on one schema, with concurrent consumes,
// keyed replays racing across replicas, credits and refunds on the same
// few accounts, while a fourth reader tails the journal. Nothing may
// overspend or go negative, every accepted debit must be in the journal
// and the balances, every key must have exactly one original answer, and
// the tail must see every entry exactly once.
func TestReplicasShareLedger(t *testing.T) {
	for _, rule := range []metering.DemoRule{metering.DemoWhole, metering.DemoSpill} {
		t.Run(string(rule), func(t *testing.T) {
			runReplicas(t, rule)
		})
	}
}

func runReplicas(t *testing.T, rule metering.DemoRule) {
	const (
		replicas = 3
		workers  = 4 // per replica
		opsEach  = 50
		start    = 150
	)
	ids := []int64{1, 2, 3}
	dsn := freshDSN(t)
	opts := metering.Options{DemoRule: rule, MaxUnits: 25}
	stores := make([]*Store, replicas)
	for i := range stores {
		stores[i] = openStore(t, dsn, opts, PoolOptions{MaxConns: 4})
	}
	for _, id := range ids {
		mustProvision(t, stores[0], id, start, start)
	}
	setup := journalOf(t, stores[0])

	// Keyed requests are fixed per key, so every reuse is a true replay,
	// and all replicas draw from the same keys.
	seed := rand.New(rand.NewPCG(3, uint64(len(rule))))
	keyed := make([]metering.ConsumeRequest, 40)
	for i := range keyed {
		keyed[i] = metering.ConsumeRequest{
			UserAutomationID: ids[seed.IntN(len(ids))], Units: 1 + seed.Int64N(25),
			UsageType: "chat", IdempotencyKey: fmt.Sprintf("key-%d", i),
		}
	}

	// Tail the journal from another pool while the writers run.
	tail := startTail(t, openStore(t, dsn, opts, PoolOptions{MaxConns: 2}))

	logs := make([][]replicaOp, replicas*workers)
	var wg sync.WaitGroup
	for w := range logs {
		wg.Go(func() {
			logs[w] = replicaWorker(stores[w%replicas], w, opsEach, ids, keyed)
		})
	}
	wg.Wait()
	tailed := tail()

	all := journalOf(t, stores[1])
	checkBalances(t, stores[2], ids...)
	checkReplicaAnswers(t, logs, all[len(setup):])
	checkTail(t, tailed, all)
}

// replicaWorker runs one worker's share: unkeyed consumes, keyed ones
// from the shared pool, credits and refunds of pool keys.
func replicaWorker(
	s *Store,
	w, ops int,
	ids []int64,
	keyed []metering.ConsumeRequest,
) []replicaOp {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(uint64(w), 5))
	out := make([]replicaOp, 0, ops)
	for range ops {
		var op replicaOp
		switch n := r.IntN(100); {
		case n < 45:
			op.consume = metering.ConsumeRequest{
				UserAutomationID: ids[r.IntN(len(ids))], Units: 1 + r.Int64N(25),
				UsageType: "chat",
			}
			op.res, op.err = s.Consume(ctx, op.consume)
		case n < 80:
			op.consume = keyed[r.IntN(len(keyed))]
			op.res, op.err = s.Consume(ctx, op.consume)
		case n < 90:
			op.credit = 1 + r.Int64N(10)
			id := ids[r.IntN(len(ids))]
			op.consume.UserAutomationID = id
			_, op.err = s.Credit(ctx,
				metering.CreditRequest{UserAutomationID: id, Units: op.credit})
		default:
			req := keyed[r.IntN(len(keyed))]
			op.refundKey = req.IdempotencyKey
			_, op.err = s.Refund(ctx, metering.RefundRequest{
				UserAutomationID: req.UserAutomationID, IdempotencyKey: req.IdempotencyKey,
			})
			if errors.Is(op.err, metering.ErrUnknownDebit) {
				op.err = nil // not debited (yet), or refused
			}
		}
		out = append(out, op)
	}
	return out
}

// checkReplicaAnswers compares the answers with the journal written
// during the mix: per account, the debits the answers accepted (once per
// key) and the credits they made must be exactly the journal's, and each
// refund entry must give back one accepted keyed debit, once.
func checkReplicaAnswers(t *testing.T, logs [][]replicaOp, mix []metering.Entry) {
	t.Helper()
	type sums struct{ debits, demo, paid, credits, credited int64 }
	want, got := map[int64]*sums{}, map[int64]*sums{}
	sum := func(m map[int64]*sums, id int64) *sums {
		if m[id] == nil {
			m[id] = &sums{}
		}
		return m[id]
	}
	first := map[string]metering.ConsumeResult{}
	originals := map[string]int{}
	for _, log := range logs {
		for _, op := range log {
			switch {
			case op.err != nil:
				t.Errorf("call: %v", op.err)
			case op.refundKey != "":
			case op.credit > 0:
				s := sum(want, op.consume.UserAutomationID)
				s.credits++
				s.credited += op.credit
			default:
				res := op.res
				if res.RemainingDemo < 0 || res.RemainingPaid < 0 {
					t.Errorf("negative remaining balance in %+v", res)
				}
				if k := op.consume.IdempotencyKey; k != "" {
					if !res.Replayed {
						originals[k]++
					}
					res.Replayed, res.Refunded = false, false
					if prev, ok := first[k]; ok && prev != res {
						t.Errorf("key %s: answers differ: %+v and %+v", k, prev, res)
					}
					first[k] = res
					if op.res.Replayed {
						continue
					}
				}
				if res.Accepted {
					s := sum(want, op.consume.UserAutomationID)
					s.debits++
					s.demo += res.DemoDebited
					s.paid += res.PaidDebited
				}
			}
		}
	}
	for k := range first {
		if originals[k] != 1 {
			t.Errorf("key %s: %d original answers, want 1", k, originals[k])
		}
	}

	refunded := map[string]bool{}
	for _, e := range mix {
		s := sum(got, e.UserAutomationID)
		switch e.Kind {
		case metering.EntryDebit:
			s.debits++
			s.demo -= e.DemoDelta
			s.paid -= e.PaidDelta
		case metering.EntryCredit:
			s.credits++
			s.credited += e.PaidDelta
		case metering.EntryRefund:
			res, ok := first[e.IdempotencyKey]
			if refunded[e.IdempotencyKey] || !ok || !res.Accepted ||
				e.DemoDelta != res.DemoDebited || e.PaidDelta != res.PaidDebited {
				t.Errorf("refund entry %+v: not the one refund of %+v", e, res)
			}
			refunded[e.IdempotencyKey] = true
		default:
			t.Errorf("unexpected %s entry during the mix", e.Kind)
		}
	}
	for id, w := range want {
		if *sum(got, id) != *w {
			t.Errorf("account %d: journal %+v, answers %+v", id, *got[id], *w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("journal touched %d accounts, answers %d", len(got), len(want))
	}
}

// startTail reads the journal in a loop, each time from the last entry
// seen, until the returned stop function is called; stop returns every
// entry read, ending with a final read.
func startTail(t *testing.T, s *Store) (stop func() []metering.Entry) {
	var out []metering.Entry
	var done atomic.Bool
	finished := make(chan struct{})
	read := func() error {
		after := uint64(0)
		if len(out) > 0 {
			after = out[len(out)-1].Seq
		}
		return s.Journal(context.Background(), after, 50, func(e metering.Entry) error {
			out = append(out, e)
			return nil
		})
	}
	go func() {
		defer close(finished)
		for !done.Load() {
			if err := read(); err != nil {
				t.Errorf("tail: %v", err)
				return
			}
		}
	}()
	return func() []metering.Entry {
		done.Store(true)
		<-finished
		for {
			n := len(out)
			if err := read(); err != nil {
				t.Errorf("tail: %v", err)
			}
			if len(out) == n {
				return out
			}
		}
	}
}

// checkTail fails unless the tail saw exactly the journal's entries.
func checkTail(t *testing.T, tailed, all []metering.Entry) {
	t.Helper()
	if len(tailed) != len(all) {
		t.Errorf("tail: got %d entries, the journal has %d", len(tailed), len(all))
	}
	for i := range min(len(tailed), len(all)) {
		if tailed[i].Seq != all[i].Seq {
			t.Errorf("tail entry %d: got seq %d, want %d (an entry was skipped)",
				i, tailed[i].Seq, all[i].Seq)
			return
		}
	}
}
