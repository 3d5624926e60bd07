package bolt_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering/bolt"
)

// benchAccounts is how many accounts the benchmarks spread debits over.
const benchAccounts = 4

// openBench opens a durable store with accounts that never run dry.
func openBench(b *testing.B) *bolt.Store {
	b.Helper()
	s, err := bolt.Open(filepath.Join(b.TempDir(), "bench.db"), metering.Options{})
	if err != nil {
		b.Fatalf("open: %v", err)
	}
	b.Cleanup(func() { _ = s.Close() })
	demo := int64(1) << 60
	for id := int64(1); id <= benchAccounts; id++ {
		_, err := s.Provision(context.Background(), metering.ProvisionRequest{
			UserAutomationID: id, DemoTokens: &demo,
		})
		if err != nil {
			b.Fatalf("provision: %v", err)
		}
	}
	return s
}

// BenchmarkConsumeParallel measures durable debits from 32 goroutines per
// CPU (64 on two cores), the load group commit is built for. "keyed"
// gives every debit its own idempotency key.
func BenchmarkConsumeParallel(b *testing.B) {
	for _, keyed := range []bool{false, true} {
		b.Run(fmt.Sprintf("keyed=%v", keyed), func(b *testing.B) {
			s := openBench(b)
			var n atomic.Int64
			b.SetParallelism(32)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					req := metering.ConsumeRequest{
						UserAutomationID: 1 + i%benchAccounts, Units: 1, UsageType: "bench",
					}
					if keyed {
						req.IdempotencyKey = fmt.Sprintf("bench-%d", i)
					}
					res, err := s.Consume(context.Background(), req)
					if err != nil || !res.Accepted {
						b.Errorf("consume: %+v, %v", res, err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkConsumeSerial measures one caller's durable debits: every call
// waits for its own commit, so this is the disk's flush rate.
func BenchmarkConsumeSerial(b *testing.B) {
	s := openBench(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		res, err := s.Consume(ctx, metering.ConsumeRequest{
			UserAutomationID: 1 + int64(i)%benchAccounts, Units: 1, UsageType: "bench",
		})
		if err != nil || !res.Accepted {
			b.Fatalf("consume: %+v, %v", res, err)
		}
	}
}
