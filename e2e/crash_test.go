package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/e2etest"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/zimmer"
)

// TestCrashDuringConsumes is issue 2's crash test: SIGKILL the sidecar
// during 1,000 concurrent consumes that carry idempotency keys. After a
// restart on the same (embedded) ledger, every answer a client received
// replays identically, the journal's debits equal both the balance
// decrease and the accepted keys' units, and no balance is negative.
func TestCrashDuringConsumes(t *testing.T) {
	for _, tc := range apps {
		t.Run(tc.app.Name, func(t *testing.T) {
			t.Parallel()
			s := startStack(t, tc, nil)
			ctx := testContext(t)
			testCrashDuringConsumes(ctx, t, s)
		})
	}
}

const (
	crashRequests = 1000
	crashWorkers  = 64
	crashKillAt   = 300 // answers received before the SIGKILL
	crashAccounts = 4
	crashFirstID  = 401
	crashDemo     = 10
	crashCredit   = 300
)

// crashCall is request i of the storm: its account, units and key.
func crashCall(i int) (e2etest.ConsumeBody, string) {
	body := e2etest.ConsumeBody{
		UserAutomationID: int64(crashFirstID + i%crashAccounts),
		Units:            int64(1 + i%3),
		UsageType:        "crash",
	}
	return body, fmt.Sprintf("crash-%04d", i)
}

// answer is what one consume got back.
type answer struct {
	ok       bool // a whole 200 answer arrived
	status   int
	consume  zimmer.ConsumeAnswer
	replayed string // the Idempotent-Replayed header
	err      error
}

// storm sends every request once through a bounded pool and returns each
// answer. onAnswer runs after every whole answer with the running count.
func storm(ctx context.Context, p *e2etest.Platform, path string,
	onAnswer func(n int64)) []answer {
	out := make([]answer, crashRequests)
	next := make(chan int)
	var (
		wg       sync.WaitGroup
		received atomic.Int64
	)
	for range crashWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				body, key := crashCall(i)
				r, a, err := p.Consume(ctx, path, body, key)
				if err != nil {
					out[i] = answer{err: err}
					continue
				}
				out[i] = answer{ok: r.Status == http.StatusOK, status: r.Status,
					consume: a, replayed: r.Header.Get("Idempotent-Replayed")}
				if onAnswer != nil {
					onAnswer(received.Add(1))
				}
			}
		}()
	}
	for i := range crashRequests {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

func testCrashDuringConsumes(ctx context.Context, t *testing.T, s *stack) {
	admin := s.sidecar.AdminURL()

	// 1. Accounts with demo and paid tokens.
	before := map[int64]int64{} // total tokens per account
	for id := int64(crashFirstID); id < crashFirstID+crashAccounts; id++ {
		provision(ctx, t, s, id, crashDemo)
		a := e2etest.LedgerCredit(t, admin, id, crashCredit)
		before[id] = a.DemoTokens + a.PaidTokens
	}

	// 2. The storm, and a SIGKILL once crashKillAt answers are in.
	var kill sync.Once
	first := storm(ctx, s.platform, s.zimmer("usage/consume"), func(n int64) {
		if n >= crashKillAt {
			kill.Do(func() { _ = s.sidecar.Signal(syscall.SIGKILL) })
		}
	})
	if code, err := s.sidecar.Wait(30 * time.Second); err != nil || code != -1 {
		t.Fatalf("sidecar after SIGKILL: exit code %d, %v", code, err)
	}
	answered := 0
	for i, a := range first {
		switch {
		case a.err != nil:
		case !a.ok:
			t.Errorf("request %d before the kill: status %d, want 200", i, a.status)
		case a.replayed != "":
			t.Errorf("request %d: a fresh key answered Idempotent-Replayed %q",
				i, a.replayed)
		default:
			answered++
		}
	}
	if answered < crashKillAt || answered == crashRequests {
		t.Fatalf("%d of %d answered before the kill, want at least %d and not all",
			answered, crashRequests, crashKillAt)
	}
	t.Logf("%d of %d consumes answered before the SIGKILL", answered, crashRequests)

	// 3. Restart on the same ledger and replay every request.
	s.startSidecar(t)
	replay := storm(ctx, s.platform, s.zimmer("usage/consume"), nil)
	final := make([]zimmer.ConsumeAnswer, crashRequests)
	lost := 0 // committed before the kill, but the answer never arrived
	for i, r := range replay {
		if r.err != nil || !r.ok {
			t.Fatalf("replay %d: status %d, %v", i, r.status, r.err)
		}
		final[i] = r.consume
		if !first[i].ok {
			// Never answered: it may be new or a replay.
			if r.replayed == "true" {
				lost++
			}
			continue
		}
		if r.replayed != "true" || r.consume != first[i].consume {
			t.Errorf("replay %d: Idempotent-Replayed %q, %+v; first answer %+v",
				i, r.replayed, r.consume, first[i].consume)
		}
	}

	t.Logf("%d unanswered consumes had been committed before the kill", lost)

	// 4. The journal against the accepted keys and the balances.
	checkCrashLedger(t, s.sidecar.AdminURL(), before, final)
}

// checkCrashLedger compares, per account, the journal's crash debits, the
// units of the keys finally accepted and the balance decrease, and looks
// for negative balances.
func checkCrashLedger(t *testing.T, admin string, before map[int64]int64,
	final []zimmer.ConsumeAnswer) {
	t.Helper()
	acceptedUnits := map[int64]int64{}
	acceptedKeys := map[string]bool{}
	for i, a := range final {
		body, key := crashCall(i)
		if a.RemainingDemoTokens < 0 || a.RemainingPaidTokens < 0 {
			t.Errorf("answer %d shows a negative balance: %+v", i, a)
		}
		if a.Accepted {
			acceptedUnits[body.UserAutomationID] += body.Units
			acceptedKeys[key] = true
		}
	}

	debited := map[int64]int64{}
	journalKeys := map[string]bool{}
	for _, e := range e2etest.LedgerJournal(t, admin) {
		// /usage/consume scopes a caller's key to its account in the
		// ledger: "consume <id> <key>".
		scope := fmt.Sprintf("consume %d ", e.UserAutomationID)
		key, ok := strings.CutPrefix(e.IdempotencyKey, scope)
		if e.Kind != metering.EntryDebit || !ok || !strings.HasPrefix(key, "crash-") {
			continue
		}
		if journalKeys[key] {
			t.Errorf("key %s debited twice", key)
		}
		journalKeys[key] = true
		if !acceptedKeys[key] {
			t.Errorf("key %s debited but its answer is a refusal", key)
		}
		debited[e.UserAutomationID] += -e.DemoDelta - e.PaidDelta
	}
	if len(journalKeys) != len(acceptedKeys) {
		t.Errorf("journal debits %d keys, answers accept %d", len(journalKeys),
			len(acceptedKeys))
	}

	for id, was := range before {
		a := e2etest.LedgerAccount(t, admin, id)
		if a.DemoTokens < 0 || a.PaidTokens < 0 {
			t.Errorf("account %d is negative: %+v", id, a)
		}
		decrease := was - a.DemoTokens - a.PaidTokens
		if decrease != debited[id] || decrease != acceptedUnits[id] {
			t.Errorf("account %d: balance decrease %d, journal debits %d, "+
				"accepted units %d; want all equal", id, decrease, debited[id],
				acceptedUnits[id])
		}
	}
}
