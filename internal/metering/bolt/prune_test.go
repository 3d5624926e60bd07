package bolt_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering/bolt"
)

// TestPruneSmallScans: with a scan bound far below the records, keys of
// two ages interleaved in key order are pruned exactly by age.
func TestPruneSmallScans(t *testing.T) {
	t.Parallel()
	var now atomic.Int64
	now.Store(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()).UTC() }
	s := openStore(t, filepath.Join(t.TempDir(), "ledger.db"),
		metering.Options{Now: clock}, bolt.DefaultMaxBatch)
	bolt.SetPruneScan(s, 7)
	ctx := context.Background()
	if _, err := s.Provision(ctx, metering.ProvisionRequest{
		UserAutomationID: 1, DemoTokens: demo(1000)}); err != nil {
		t.Fatal(err)
	}
	write := func(parity int) {
		for i := parity; i < 100; i += 2 {
			_, err := s.Consume(ctx, metering.ConsumeRequest{UserAutomationID: 1, Units: 1,
				IdempotencyKey: fmt.Sprintf("k%03d", i)})
			if err != nil {
				t.Fatalf("consume: %v", err)
			}
		}
	}
	write(0) // even keys, old
	now.Add(int64(time.Hour))
	write(1) // odd keys, new

	n, err := s.PruneIdempotency(ctx, clock().Add(-time.Minute))
	if err != nil || n != 50 {
		t.Fatalf("prune: got %d, %v, want 50", n, err)
	}
	for i := range 100 {
		res, err := s.Consume(ctx, metering.ConsumeRequest{UserAutomationID: 1, Units: 1,
			IdempotencyKey: fmt.Sprintf("k%03d", i)})
		if err != nil {
			t.Fatalf("consume: %v", err)
		}
		if want := i%2 == 1; res.Replayed != want {
			t.Errorf("k%03d: got replayed %v, want %v", i, res.Replayed, want)
		}
	}
}

// TestPruneWhileWriting prunes while keyed consumes commit; keys written
// after the cutoff all replay and the journal matches the balances.
func TestPruneWhileWriting(t *testing.T) {
	t.Parallel()
	s := openStore(t, filepath.Join(t.TempDir(), "ledger.db"), metering.Options{},
		bolt.DefaultMaxBatch)
	bolt.SetPruneScan(s, 16)
	ctx := context.Background()
	if _, err := s.Provision(ctx, metering.ProvisionRequest{
		UserAutomationID: 1, DemoTokens: demo(10_000)}); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if _, err := s.Consume(ctx, metering.ConsumeRequest{UserAutomationID: 1, Units: 1,
			IdempotencyKey: fmt.Sprintf("old-%03d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	cutoff := time.Now()

	var wg sync.WaitGroup
	var pruned int64
	wg.Go(func() {
		n, err := s.PruneIdempotency(ctx, cutoff)
		if err != nil {
			t.Errorf("prune: %v", err)
		}
		pruned = n
	})
	for w := range 4 {
		wg.Go(func() {
			for i := range 50 {
				_, err := s.Consume(ctx, metering.ConsumeRequest{UserAutomationID: 1,
					Units: 1, IdempotencyKey: fmt.Sprintf("new-%d-%02d", w, i)})
				if err != nil {
					t.Errorf("consume: %v", err)
				}
			}
		})
	}
	wg.Wait()
	if pruned != 200 {
		t.Errorf("pruned: got %d, want the 200 old records", pruned)
	}
	for w := range 4 {
		res, err := s.Consume(ctx, metering.ConsumeRequest{UserAutomationID: 1, Units: 1,
			IdempotencyKey: fmt.Sprintf("new-%d-49", w)})
		if err != nil || !res.Replayed {
			t.Errorf("replay of a new key: got %+v, %v", res, err)
		}
	}
	a, err := s.Account(ctx, 1)
	if err != nil || a.DemoTokens != 10_000-400 {
		t.Errorf("balance: got %+v, %v, want %d demo", a, err, 10_000-400)
	}
}

// demo returns a pointer to a demo grant of n.
func demo(n int64) *int64 { return &n }
