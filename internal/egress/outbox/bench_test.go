package outbox

import (
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// benchEnqueue enqueues records from parallel callers, each durable on
// return (b.SetParallelism raises the callers per CPU).
func benchEnqueue(b *testing.B, store Store) {
	ob := New(store, Options{Consume: true})
	var n atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := ob.Enqueue(b.Context(), charged(int(n.Add(1)), 5)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkEnqueueBolt(b *testing.B) {
	store, err := OpenBolt(filepath.Join(b.TempDir(), "o.db"), BoltOptions{Max: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	benchEnqueue(b, store)
}

func BenchmarkEnqueuePostgres(b *testing.B) {
	table := freshTable(b)
	store, err := OpenPostgres(b.Context(), sharedPool(b), PostgresOptions{
		Table: table, Max: 1 << 30, RecountEvery: time.Hour,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	benchEnqueue(b, store)
}
