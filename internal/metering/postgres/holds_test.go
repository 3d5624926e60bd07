package postgres

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// holdTTL is long enough that no hold in these tests lapses by itself;
// lapses are made by moving expires_at.
const holdTTL = time.Minute

// mustHold calls HoldKey and fails the test on an error.
func mustHold(t *testing.T, s *Store, key string) (string, bool) {
	t.Helper()
	token, held, err := s.HoldKey(context.Background(), key, holdTTL)
	if err != nil {
		t.Fatalf("hold %q: %v", key, err)
	}
	return token, held
}

// TestHoldKeyAcrossReplicas: a key held by one Store is refused to
// another on the schema (and to the same Store) until released; other
// keys are independent; a release names its own hold only.
func TestHoldKeyAcrossReplicas(t *testing.T) {
	dsn := freshDSN(t)
	a := openStore(t, dsn, metering.Options{}, PoolOptions{})
	b := openStore(t, dsn, metering.Options{}, PoolOptions{})

	tokA, held := mustHold(t, a, "k")
	if !held || tokA == "" {
		t.Fatalf("first hold: got held %v token %q, want held with a token", held, tokA)
	}
	if _, held := mustHold(t, b, "k"); held {
		t.Error("other replica: got held, want refused")
	}
	if _, held := mustHold(t, a, "k"); held {
		t.Error("same replica again: got held, want refused")
	}
	if _, held := mustHold(t, b, "k2"); !held {
		t.Error("another key: got refused, want held")
	}

	// A release with a stranger's token frees nothing.
	ctx := context.Background()
	if err := b.ReleaseKey(ctx, "k", "not-the-token"); err != nil {
		t.Fatalf("release with another token: %v", err)
	}
	if _, held := mustHold(t, b, "k"); held {
		t.Error("after a stranger's release: got held, want refused")
	}

	// The holder's release frees it for everyone; twice is harmless.
	for range 2 {
		if err := a.ReleaseKey(ctx, "k", tokA); err != nil {
			t.Fatalf("release: %v", err)
		}
	}
	if _, held := mustHold(t, b, "k"); !held {
		t.Error("after release: got refused, want held")
	}
}

// TestHoldKeyLapses: a hold past its expiry (a replica that died) is
// taken over by the next hold, whose token the old holder's late release
// cannot free; PruneHolds deletes lapsed holds only.
func TestHoldKeyLapses(t *testing.T) {
	dsn := freshDSN(t)
	dead := openStore(t, dsn, metering.Options{}, PoolOptions{})
	live := openStore(t, dsn, metering.Options{}, PoolOptions{})
	ctx := context.Background()

	old, _ := mustHold(t, dead, "k")
	mustHold(t, dead, "stale")
	mustHold(t, live, "fresh")
	lapse(t, live, "k", "stale")

	tok, held := mustHold(t, live, "k")
	if !held {
		t.Fatal("lapsed hold: got refused, want taken over")
	}
	if err := dead.ReleaseKey(ctx, "k", old); err != nil {
		t.Fatalf("late release: %v", err)
	}
	if _, held := mustHold(t, dead, "k"); held {
		t.Error("after the dead holder's late release: got held, want the new hold kept")
	}

	n, err := live.PruneHolds(ctx)
	if err != nil || n != 1 {
		t.Errorf("prune holds: got %d, %v, want 1 (the stale one)", n, err)
	}
	var left []string
	rows, err := live.pool.Query(ctx, "SELECT key FROM key_holds ORDER BY key")
	if err != nil {
		t.Fatalf("list holds: %v", err)
	}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		left = append(left, k)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(left) != 2 || left[0] != "fresh" || left[1] != "k" {
		t.Errorf("holds left: got %q, want [fresh k]", left)
	}
	if err := live.ReleaseKey(ctx, "k", tok); err != nil {
		t.Errorf("release: %v", err)
	}
}

// lapse moves the expiry of keys' holds into the past.
func lapse(t *testing.T, s *Store, keys ...string) {
	t.Helper()
	_, err := s.pool.Exec(context.Background(),
		"UPDATE key_holds SET expires_at = now() - interval '1 second' WHERE key = ANY($1)",
		keys)
	if err != nil {
		t.Fatalf("lapse holds: %v", err)
	}
}

// TestHoldKeyAmbiguous loses the reply of a hold that the server made:
// the retry finds its own token and holds, instead of refusing itself.
func TestHoldKeyAmbiguous(t *testing.T) {
	s := openStore(t, freshDSN(t), metering.Options{}, PoolOptions{})
	var execs atomic.Int32
	s.hooks.afterCommit = func() error {
		if execs.Add(1) == 1 {
			return &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
		}
		return nil
	}
	tok, held := mustHold(t, s, "k")
	if !held {
		t.Fatal("hold after a lost reply: got refused, want held")
	}
	if n := execs.Load(); n != 2 {
		t.Errorf("statements: got %d, want 2 (one retry)", n)
	}
	s.hooks.afterCommit = nil
	if _, held := mustHold(t, s, "k"); held {
		t.Error("second hold: got held, want refused")
	}
	if err := s.ReleaseKey(context.Background(), "k", tok); err != nil {
		t.Errorf("release: %v", err)
	}
}

// TestHoldKeyFailureLeavesNothing: a hold whose every attempt lost its
// reply fails, and the row it wrote is deleted, so the key is free.
func TestHoldKeyFailureLeavesNothing(t *testing.T) {
	s := openStore(t, freshDSN(t), metering.Options{}, PoolOptions{Retries: -1})
	s.hooks.afterCommit = func() error { return syscall.ECONNRESET }
	_, held, err := s.HoldKey(context.Background(), "k", holdTTL)
	if err == nil || held {
		t.Fatalf("got held %v, %v, want an error", held, err)
	}
	s.hooks.afterCommit = nil
	if _, held := mustHold(t, s, "k"); !held {
		t.Error("after the failed hold: got refused, want the key free")
	}
}

// TestHoldKeyRace: many callers on three replicas race for one key; one
// wins.
func TestHoldKeyRace(t *testing.T) {
	dsn := freshDSN(t)
	var stores []*Store
	for range 3 {
		stores = append(stores, openStore(t, dsn, metering.Options{}, PoolOptions{MaxConns: 4}))
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 24 {
		wg.Go(func() {
			_, held, err := stores[i%3].HoldKey(context.Background(), "hot", holdTTL)
			if err != nil {
				t.Errorf("hold: %v", err)
			}
			if held {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if n := wins.Load(); n != 1 {
		t.Errorf("winners: got %d, want 1", n)
	}
}

// TestHoldKeyRefusals: bad keys and ttls, and a closed Store.
func TestHoldKeyRefusals(t *testing.T) {
	s := openStore(t, freshDSN(t), metering.Options{}, PoolOptions{})
	ctx := context.Background()
	if _, _, err := s.HoldKey(ctx, "", holdTTL); !errors.Is(err,
		metering.ErrInvalidIdempotencyKey) {
		t.Errorf("empty key: got %v, want ErrInvalidIdempotencyKey", err)
	}
	if _, _, err := s.HoldKey(ctx, "k\n", holdTTL); !errors.Is(err,
		metering.ErrInvalidIdempotencyKey) {
		t.Errorf("bad key: got %v, want ErrInvalidIdempotencyKey", err)
	}
	if _, _, err := s.HoldKey(ctx, "k", 0); err == nil {
		t.Error("zero ttl: got nil, want an error")
	}
	_ = s.Close()
	if _, _, err := s.HoldKey(ctx, "k", holdTTL); !errors.Is(err, metering.ErrClosed) {
		t.Errorf("after close: got %v, want ErrClosed", err)
	}
	if err := s.ReleaseKey(ctx, "k", "t"); !errors.Is(err, metering.ErrClosed) {
		t.Errorf("release after close: got %v, want ErrClosed", err)
	}
}
