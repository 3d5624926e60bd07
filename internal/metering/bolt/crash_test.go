package bolt_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering/bolt"
)

// crashChildEnv names the ledger file a re-executed test binary writes to
// until it is killed.
const crashChildEnv = "ZIMMER_SIDECAR_LEDGER_CRASH_CHILD"

// answerPrefix starts every line the child reports.
const answerPrefix = "ANSWER "

// crashAnswer is one answer the child got and reported.
type crashAnswer struct {
	Req metering.ConsumeRequest `json:"req"`
	Res metering.ConsumeResult  `json:"res"`
}

// crashAccounts are the accounts the parent provisions: one that never
// runs dry and some that do, so both acceptances and refusals are
// reported. Demo and paid tokens, in that order.
var crashAccounts = map[int64][2]int64{
	1: {1_000_000, 0},
	2: {300, 0},
	3: {0, 2000},
	4: {5, 50},
}

// TestCrashChild is the child half of TestCrashKeepsReportedWrites; run
// alone, it skips.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashChildEnv)
	if path == "" {
		t.Skip("runs only as the child of TestCrashKeepsReportedWrites")
	}
	s, err := bolt.Open(path, metering.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}

	// Many writers, each reporting every answer the moment it has it.
	var out sync.Mutex
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for j := range 2000 {
				req := metering.ConsumeRequest{
					UserAutomationID: int64(1 + (w+j)%len(crashAccounts)),
					Units:            int64(1 + (w*7+j)%9),
					UsageType:        "crash",
					IdempotencyKey:   fmt.Sprintf("w%d-%d", w, j),
				}
				res, err := s.Consume(context.Background(), req)
				if err != nil {
					fmt.Fprintln(os.Stderr, "child consume:", err)
					os.Exit(3)
				}
				line, _ := json.Marshal(crashAnswer{Req: req, Res: res})
				out.Lock()
				_, _ = os.Stdout.Write(append([]byte(answerPrefix), append(line, '\n')...))
				out.Unlock()
			}
		})
	}
	wg.Wait()
	_ = s.Close()
}

// TestCrashKeepsReportedWrites kills a child process with SIGKILL while it
// consumes under idempotency keys, then checks that every answer the
// child reported survived: the key replays as first answered, the journal
// holds each accepted debit, and the journal explains the balances.
func TestCrashKeepsReportedWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	t.Parallel()
	path := filepath.Join(t.TempDir(), "crash.db")
	setupSeq := provisionCrashAccounts(t, path)

	answers := runAndKillChild(t, path, 400)
	if len(answers) < 400 {
		t.Fatalf("child reported %d answers before dying, want at least 400", len(answers))
	}

	s := openStore(t, path, metering.Options{}, bolt.DefaultMaxBatch)
	before := checkCrashJournal(t, s, setupSeq, answers)

	// Every reported key replays its first answer and debits nothing.
	for _, a := range answers {
		got, err := s.Consume(context.Background(), a.Req)
		want := a.Res
		want.Replayed = true
		if err != nil || got != want {
			t.Fatalf("replay %s: got %+v, %v, want %+v", a.Req.IdempotencyKey, got, err, want)
		}
	}
	for id, acct := range before {
		after, err := s.Account(context.Background(), id)
		if err != nil || after.DemoTokens != acct.DemoTokens ||
			after.PaidTokens != acct.PaidTokens {
			t.Errorf("account %d after replays: got %+v, %v, want %+v", id, after, err, acct)
		}
	}
}

// provisionCrashAccounts creates the accounts and returns the journal's
// last sequence number after setup.
func provisionCrashAccounts(t *testing.T, path string) uint64 {
	t.Helper()
	s, err := bolt.Open(path, metering.Options{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
	}()
	ctx := context.Background()
	for id, bal := range crashAccounts {
		demo := bal[0]
		_, err := s.Provision(ctx, metering.ProvisionRequest{
			UserAutomationID: id, DemoTokens: &demo,
		})
		if err != nil {
			t.Fatalf("provision %d: %v", id, err)
		}
		if bal[1] > 0 {
			_, err := s.Credit(ctx, metering.CreditRequest{UserAutomationID: id, Units: bal[1]})
			if err != nil {
				t.Fatalf("credit %d: %v", id, err)
			}
		}
	}
	var last uint64
	err = s.Journal(ctx, 0, 0, func(e metering.Entry) error {
		last = e.Seq
		return nil
	})
	if err != nil {
		t.Fatalf("journal: %v", err)
	}
	return last
}

// runAndKillChild starts the child, SIGKILLs it once it has reported
// killAfter answers, and returns every answer it reported.
func runAndKillChild(t *testing.T, path string, killAfter int) []crashAnswer {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("child stdout: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}

	// A child that hangs is killed all the same.
	watchdog := time.AfterFunc(2*time.Minute, func() { _ = cmd.Process.Kill() })
	defer watchdog.Stop()

	// Read until the pipe closes, killing the child mid-stream; lines
	// already in the pipe were reported before the kill and count.
	var answers []crashAnswer
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), answerPrefix)
		if !ok {
			continue
		}
		var a crashAnswer
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			t.Fatalf("child line %q: %v", line, err)
		}
		answers = append(answers, a)
		if len(answers) == killAfter {
			_ = cmd.Process.Kill() // SIGKILL: no deferred code, no Close
		}
	}
	err = cmd.Wait()
	if cmd.ProcessState == nil || cmd.ProcessState.Success() || len(answers) < killAfter {
		t.Fatalf("child was not killed mid-stream: %v, %d answers, stderr:\n%s",
			err, len(answers), stderr.String())
	}
	return answers
}

// checkCrashJournal checks the reopened store against what the child
// reported and returns the accounts as found.
func checkCrashJournal(
	t *testing.T,
	s *bolt.Store,
	setupSeq uint64,
	answers []crashAnswer,
) map[int64]metering.Account {
	t.Helper()
	ctx := context.Background()

	// Debits the journal holds after setup, by key.
	debits := map[string]metering.Entry{}
	sums := map[int64][2]int64{}
	err := s.Journal(ctx, setupSeq, 0, func(e metering.Entry) error {
		if e.Kind != metering.EntryDebit || e.IdempotencyKey == "" {
			return fmt.Errorf("unexpected entry %+v", e)
		}
		if _, dup := debits[e.IdempotencyKey]; dup {
			return fmt.Errorf("key %s debited twice", e.IdempotencyKey)
		}
		debits[e.IdempotencyKey] = e
		s := sums[e.UserAutomationID]
		sums[e.UserAutomationID] = [2]int64{s[0] - e.DemoDelta, s[1] - e.PaidDelta}
		return nil
	})
	if err != nil {
		t.Fatalf("journal: %v", err)
	}

	// Every reported acceptance is in the journal as reported.
	accepted := 0
	for _, a := range answers {
		e, ok := debits[a.Req.IdempotencyKey]
		switch {
		case a.Res.Accepted && !ok:
			t.Errorf("reported debit %s is not in the journal", a.Req.IdempotencyKey)
		case a.Res.Accepted && (-e.DemoDelta != a.Res.DemoDebited ||
			-e.PaidDelta != a.Res.PaidDebited):
			t.Errorf("debit %s: journal %+v, reported %+v", a.Req.IdempotencyKey, e, a.Res)
		case !a.Res.Accepted && ok:
			t.Errorf("reported refusal %s has a journal debit", a.Req.IdempotencyKey)
		}
		if a.Res.Accepted {
			accepted++
		}
	}
	if accepted == 0 {
		t.Error("the child reported no accepted debit")
	}

	// Balance decreases equal the journal's debits, and none is negative.
	found := map[int64]metering.Account{}
	for id, start := range crashAccounts {
		acct, err := s.Account(ctx, id)
		if err != nil {
			t.Fatalf("account %d: %v", id, err)
		}
		found[id] = acct
		spent := sums[id]
		if acct.DemoTokens < 0 || acct.PaidTokens < 0 ||
			start[0]-acct.DemoTokens != spent[0] || start[1]-acct.PaidTokens != spent[1] {
			t.Errorf("account %d: started %v, now %+v, journal debits %v", id, start, acct, spent)
		}
	}
	return found
}
