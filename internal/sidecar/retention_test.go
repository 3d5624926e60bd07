package sidecar

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/config"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/e2etest"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering/bolt"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering/postgres"
)

// t0 is when the retention tests' ledgers write their records.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// retentionLedger opens a ledger of backend whose clock says t0, with
// account 1 holding 100 demo tokens, and closes it when t ends.
func retentionLedger(t *testing.T, backend string) metering.Ledger {
	t.Helper()
	opts := metering.Options{Now: func() time.Time { return t0 }}
	var l metering.Ledger
	var err error
	switch backend {
	case config.BackendBolt:
		l, err = bolt.Open(filepath.Join(t.TempDir(), "ledger.db"), opts)
	case config.BackendPostgres:
		schema := e2etest.NewPGSchema(t, "sidecar_retention")
		l, err = postgres.Open(t.Context(), schema.DSN, opts, postgres.PoolOptions{})
	}
	if err != nil {
		t.Fatalf("open %s ledger: %v", backend, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	demo := int64(100)
	_, err = l.Provision(t.Context(), metering.ProvisionRequest{
		UserAutomationID: 1, DemoTokens: &demo})
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	return l
}

// runJobs runs every job once at now and returns what each deleted.
func runJobs(t *testing.T, jobs []pruneJob, now time.Time) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, j := range jobs {
		n, err := j.run(t.Context(), now)
		if err != nil {
			t.Fatalf("%s: %v", j.name, err)
		}
		out[j.name] = n
	}
	return out
}

// TestPruneJobs: each backend gets the jobs that fit it, and the
// idempotency job keeps records for exactly the configured retention:
// a replay inside it is still a replay, the key is new after it, and
// balances and journal are left alone.
func TestPruneJobs(t *testing.T) {
	const week = 7 * 24 * time.Hour
	tests := []struct {
		backend   string
		retention time.Duration
		want      []string
	}{
		{config.BackendBolt, week, []string{"idempotency records"}},
		{config.BackendBolt, 0, nil},
		{config.BackendPostgres, week,
			[]string{"idempotency records", "call records", "key holds"}},
		{config.BackendPostgres, 0, []string{"call records", "key holds"}},
	}
	for _, tt := range tests {
		t.Run(tt.backend+"/"+tt.retention.String(), func(t *testing.T) {
			l := retentionLedger(t, tt.backend)
			jobs := pruneJobs(l, config.Ledger{IdempotencyRetention: tt.retention})
			var names []string
			for _, j := range jobs {
				names = append(names, j.name)
			}
			if !slices.Equal(names, tt.want) {
				t.Fatalf("jobs: got %q, want %q", names, tt.want)
			}
			if tt.retention > 0 {
				checkRetention(t, l, jobs, tt.retention)
			}
		})
	}
}

// checkRetention runs jobs just inside and just past retention after
// t0 on a keyed and an unkeyed debit made at t0.
func checkRetention(t *testing.T, l metering.Ledger, jobs []pruneJob, retention time.Duration) {
	t.Helper()
	keyed := metering.ConsumeRequest{UserAutomationID: 1, Units: 3, IdempotencyKey: "k"}
	consume := func() metering.ConsumeResult {
		t.Helper()
		res, err := l.Consume(t.Context(), keyed)
		if err != nil {
			t.Fatalf("consume: %v", err)
		}
		return res
	}
	consume()
	if _, err := l.Consume(t.Context(), metering.ConsumeRequest{
		UserAutomationID: 1, Units: 1}); err != nil {
		t.Fatalf("unkeyed consume: %v", err)
	}
	journal := func() int {
		n := 0
		_ = l.Journal(t.Context(), 0, 0, func(metering.Entry) error { n++; return nil })
		return n
	}
	entries := journal()

	// Inside the retention: the key still replays. PostgreSQL's call
	// record, an hour old, goes whatever the retention.
	got := runJobs(t, jobs, t0.Add(retention-time.Minute))
	if got["idempotency records"] != 0 {
		t.Errorf("inside retention: got %v deleted, want no idempotency record", got)
	}
	if _, pg := l.(*postgres.Store); pg && got["call records"] != 1 {
		t.Errorf("inside retention: got %v deleted, want one call record", got)
	}
	if res := consume(); !res.Replayed {
		t.Errorf("replay inside retention: got %+v, want a replay", res)
	}

	// Past it: the record goes and the key is new again; balances and
	// journal are as they were.
	got = runJobs(t, jobs, t0.Add(retention+time.Minute))
	if got["idempotency records"] != 1 {
		t.Errorf("past retention: got %v deleted, want one idempotency record", got)
	}
	a, err := l.Account(t.Context(), 1)
	if err != nil || a.DemoTokens != 96 || journal() != entries {
		t.Errorf("after pruning: got %+v, %v, %d entries, want 96 demo tokens, %d entries",
			a, err, journal(), entries)
	}
	if res := consume(); res.Replayed || !res.Accepted {
		t.Errorf("key after pruning: got %+v, want a new debit", res)
	}
}

// TestRetentionLoop: rounds repeat until stop, which waits for the round
// in progress; counts and failures are logged, a stop is not a failure.
func TestRetentionLoop(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	rounds := make(chan struct{}, 100)
	block := make(chan struct{})
	var once sync.Once
	errBroken := errors.New("broken table")
	r := &retention{
		jobs: []pruneJob{
			{name: "good", run: func(context.Context, time.Time) (int64, error) {
				return 5, nil
			}},
			{name: "bad", run: func(context.Context, time.Time) (int64, error) {
				return 2, errBroken
			}},
			{name: "slow", run: func(ctx context.Context, _ time.Time) (int64, error) {
				rounds <- struct{}{}
				if len(rounds) >= 3 {
					once.Do(func() { close(block) })
					<-ctx.Done() // the third round lasts until stop
					return 0, ctx.Err()
				}
				return 0, nil
			}},
		},
		every: time.Millisecond,
		now:   time.Now,
		log:   newTestLogger(&logs),
	}
	stop := r.start(t.Context())
	select {
	case <-block:
	case <-time.After(waitLimit): // a hang guard, not a speed check
		t.Fatal("three rounds never ran")
	}
	stop()
	n := len(rounds)
	if n != 3 {
		t.Errorf("rounds: got %d, want 3 (none after stop)", n)
	}

	var pruned, failed int
	for _, rec := range logs.records(t) {
		switch rec["msg"] {
		case "ledger pruned":
			if rec["records"] != "good" || rec["deleted"] != float64(5) {
				t.Errorf("pruned line: got %v", rec)
			}
			pruned++
		case "ledger pruning failed":
			if rec["records"] != "bad" || !strings.Contains(rec["err"].(string), "broken") {
				t.Errorf("failure line: got %v", rec)
			}
			failed++
		}
	}
	if pruned != 3 || failed != 3 {
		t.Errorf("log: got %d pruned and %d failed lines, want 3 and 3 (slow's stop "+
			"is no failure)", pruned, failed)
	}

	// Nothing to prune: no goroutine, and stop returns at once.
	(&retention{}).start(t.Context())()
}

func TestJitter(t *testing.T) {
	t.Parallel()
	for range 100 {
		if got := jitter(time.Hour); got < 54*time.Minute || got > 66*time.Minute {
			t.Fatalf("jitter(1h): got %s, want within a tenth", got)
		}
	}
	if got := jitter(0); got != 0 {
		t.Errorf("jitter(0): got %s, want 0", got)
	}
}
