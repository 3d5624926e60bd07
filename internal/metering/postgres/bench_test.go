package postgres

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// BenchmarkConsumeParallel measures durable unkeyed and keyed consumes
// from parallel callers through one pool, spread over 64 accounts (so
// row locks rarely collide) and on one hot account.
func BenchmarkConsumeParallel(b *testing.B) {
	for _, bc := range []struct {
		name     string
		accounts int64
		keyed    bool
	}{
		{name: "spread", accounts: 64},
		{name: "spread keyed", accounts: 64, keyed: true},
		{name: "hot account", accounts: 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := openStore(b, freshDSN(b), metering.Options{}, PoolOptions{MaxConns: 16})
			for id := range bc.accounts {
				mustProvision(b, s, id+1, 0, 1<<50)
			}
			var n atomic.Int64
			b.SetParallelism(8)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					i := n.Add(1)
					req := metering.ConsumeRequest{
						UserAutomationID: i%bc.accounts + 1, Units: 1, UsageType: "bench",
					}
					if bc.keyed {
						req.IdempotencyKey = "bench-" + itoa(i)
					}
					res, err := s.Consume(ctx, req)
					if err != nil || !res.Accepted {
						b.Errorf("consume: %+v, %v", res, err)
						return
					}
				}
			})
		})
	}
}

// itoa formats a positive counter without fmt.
func itoa(i int64) string {
	var buf [20]byte
	pos := len(buf)
	for {
		pos--
		buf[pos] = byte('0' + i%10)
		i /= 10
		if i == 0 {
			return string(buf[pos:])
		}
	}
}
