package bolt_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering/bolt"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering/ledgertest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	ledgertest.Run(t, func(t *testing.T, opts metering.Options) metering.Ledger {
		return openStore(t, filepath.Join(t.TempDir(), "ledger.db"), opts, bolt.DefaultMaxBatch)
	})
}

// openStore opens a store and closes it when t ends.
func openStore(t *testing.T, path string, opts metering.Options, maxBatch int) *bolt.Store {
	t.Helper()
	s, err := bolt.OpenMaxBatch(path, opts, maxBatch)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

// gate holds the store's first commit until release is called, so the
// test can queue writes behind it and know how they will be batched. It
// records every batch's size and fails the batches listed in fail (by
// 0-based commit number) with errDiskFull.
type gate struct {
	entered chan struct{}
	release chan struct{}

	mu    sync.Mutex
	sizes []int
	fail  map[int]bool
}

var errDiskFull = syscall.ENOSPC

func holdFirstCommit(t *testing.T, s *bolt.Store, fail ...int) *gate {
	t.Helper()
	g := &gate{
		entered: make(chan struct{}),
		release: make(chan struct{}),
		fail:    map[int]bool{},
	}
	for _, n := range fail {
		g.fail[n] = true
	}
	bolt.SetCommitHook(s, func(batch int) error {
		g.mu.Lock()
		n := len(g.sizes)
		g.sizes = append(g.sizes, batch)
		failing := g.fail[n]
		g.mu.Unlock()
		if n == 0 {
			close(g.entered)
			<-g.release
		}
		if failing {
			return errDiskFull
		}
		return nil
	})
	t.Cleanup(func() { bolt.SetCommitHook(s, nil) })
	return g
}

// batchSizes returns the sizes of the batches committed so far.
func (g *gate) batchSizes() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int(nil), g.sizes...)
}

// waitQueued waits until n writes are queued behind the held commit.
func waitQueued(t *testing.T, s *bolt.Store, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for bolt.Queued(s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("queued: got %d, want %d", bolt.Queued(s), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// outcome is one asynchronous consume's answer.
type outcome struct {
	res metering.ConsumeResult
	err error
}

// consumeAsync starts a consume and returns where its answer will arrive.
func consumeAsync(
	ctx context.Context,
	s *bolt.Store,
	req metering.ConsumeRequest,
) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		res, err := s.Consume(ctx, req)
		ch <- outcome{res, err}
	}()
	return ch
}

func mustProvision(t *testing.T, s *bolt.Store, id, demo int64) {
	t.Helper()
	_, err := s.Provision(context.Background(), metering.ProvisionRequest{
		UserAutomationID: id, DemoTokens: &demo,
	})
	if err != nil {
		t.Fatalf("provision %d: %v", id, err)
	}
}

func wantDemo(t *testing.T, s *bolt.Store, id, want int64) {
	t.Helper()
	a, err := s.Account(context.Background(), id)
	if err != nil {
		t.Fatalf("account %d: %v", id, err)
	}
	if a.DemoTokens != want {
		t.Errorf("account %d: got %d demo tokens, want %d", id, a.DemoTokens, want)
	}
}

func journalLen(t *testing.T, s *bolt.Store) int {
	t.Helper()
	n := 0
	err := s.Journal(context.Background(), 0, 0, func(metering.Entry) error {
		n++
		return nil
	})
	if err != nil {
		t.Fatalf("journal: %v", err)
	}
	return n
}

func TestBatchesAreBoundedAndOrdered(t *testing.T) {
	t.Parallel()
	s := openStore(t, filepath.Join(t.TempDir(), "l.db"), metering.Options{}, 4)
	mustProvision(t, s, 1, 1000)
	mustProvision(t, s, 2, 10)
	g := holdFirstCommit(t, s)
	ctx := context.Background()

	// One write holds the writer; four queue behind it, two of them on
	// account 2, which can pay for only one.
	held := consumeAsync(ctx, s, metering.ConsumeRequest{UserAutomationID: 1, Units: 1})
	<-g.entered
	var queued []<-chan outcome
	for _, id := range []int64{2, 1, 2, 1} {
		queued = append(queued, consumeAsync(ctx, s, metering.ConsumeRequest{
			UserAutomationID: id, Units: 10,
		}))
		waitQueued(t, s, len(queued))
	}
	// Six more than a batch holds.
	for range 6 {
		queued = append(queued, consumeAsync(ctx, s, metering.ConsumeRequest{
			UserAutomationID: 1, Units: 1,
		}))
	}
	close(g.release)

	if o := <-held; o.err != nil || !o.res.Accepted {
		t.Fatalf("held write: got %+v, %v", o.res, o.err)
	}
	var results []outcome
	for _, ch := range queued {
		results = append(results, <-ch)
	}
	for i, o := range results {
		if o.err != nil {
			t.Fatalf("write %d: %v", i, o.err)
		}
	}

	// Within the batch, the first consume on account 2 takes its tokens
	// and the second sees that.
	if !results[0].res.Accepted || results[2].res.Accepted {
		t.Errorf("account 2 in one batch: got %+v and %+v, want first accepted only",
			results[0].res, results[2].res)
	}
	wantDemo(t, s, 2, 0)

	sizes := g.batchSizes()
	total := 0
	for _, n := range sizes {
		if n > 4 {
			t.Errorf("batch of %d, bound is 4", n)
		}
		total += n
	}
	if len(sizes) < 2 || sizes[0] != 1 || sizes[1] != 4 || total != 11 {
		t.Errorf("batch sizes: got %v, want [1 4 ...] adding up to 11", sizes)
	}
}

// TestFailedCommitClaimsNothing is case C3: while commits fail, a keyed
// consume, a keyed credit and a provision all fail and store nothing; once
// commits work, the same key succeeds once.
func TestFailedCommitClaimsNothing(t *testing.T) {
	t.Parallel()
	s := openStore(t, filepath.Join(t.TempDir(), "l.db"), metering.Options{}, 16)
	ctx := context.Background()
	mustProvision(t, s, 1, 100)
	before := journalLen(t, s)

	bolt.SetCommitHook(s, func(int) error { return errDiskFull })
	req := metering.ConsumeRequest{UserAutomationID: 1, Units: 10, IdempotencyKey: "k1"}
	_, err := s.Consume(ctx, req)
	if !errors.Is(err, errDiskFull) {
		t.Fatalf("consume during fault: got %v, want the disk error", err)
	}
	_, err = s.Credit(ctx, metering.CreditRequest{
		UserAutomationID: 1, Units: 5, IdempotencyKey: "c1",
	})
	if !errors.Is(err, errDiskFull) {
		t.Fatalf("credit during fault: got %v, want the disk error", err)
	}
	if _, err := s.Provision(ctx, metering.ProvisionRequest{UserAutomationID: 2}); err == nil {
		t.Fatal("provision during fault: got nil error")
	}
	bolt.SetCommitHook(s, nil)

	// Nothing was stored.
	wantDemo(t, s, 1, 100)
	if _, err := s.Account(ctx, 2); !errors.Is(err, metering.ErrUnknownAccount) {
		t.Errorf("account 2: got %v, want ErrUnknownAccount", err)
	}
	if n := journalLen(t, s); n != before {
		t.Errorf("journal: got %d entries, want %d", n, before)
	}

	// The retry is the first real answer; a replay after it is a replay.
	first, err := s.Consume(ctx, req)
	if err != nil || !first.Accepted || first.Replayed {
		t.Fatalf("retry: got %+v, %v, want accepted, not replayed", first, err)
	}
	again, err := s.Consume(ctx, req)
	if err != nil || !again.Replayed || again.RemainingDemo != 90 {
		t.Fatalf("replay: got %+v, %v, want replayed with 90 left", again, err)
	}
	wantDemo(t, s, 1, 90)
	if n := journalLen(t, s); n != before+1 {
		t.Errorf("journal: got %d entries, want %d", n, before+1)
	}
}

func TestFailedCommitFailsWholeBatch(t *testing.T) {
	t.Parallel()
	s := openStore(t, filepath.Join(t.TempDir(), "l.db"), metering.Options{}, 16)
	ctx := context.Background()
	for id := int64(1); id <= 4; id++ {
		mustProvision(t, s, id, 100)
	}
	g := holdFirstCommit(t, s, 1) // the second batch fails

	held := consumeAsync(ctx, s, metering.ConsumeRequest{UserAutomationID: 1, Units: 1})
	<-g.entered
	var queued []<-chan outcome
	for id := int64(2); id <= 4; id++ {
		queued = append(queued, consumeAsync(ctx, s, metering.ConsumeRequest{
			UserAutomationID: id, Units: 10, IdempotencyKey: fmt.Sprintf("b%d", id),
		}))
		waitQueued(t, s, len(queued))
	}
	close(g.release)

	if o := <-held; o.err != nil {
		t.Fatalf("held write: %v", o.err)
	}
	for i, ch := range queued {
		if o := <-ch; !errors.Is(o.err, errDiskFull) {
			t.Errorf("write %d of the failed batch: got %+v, %v, want the disk error",
				i, o.res, o.err)
		}
	}
	if sizes := g.batchSizes(); len(sizes) != 2 || sizes[1] != 3 {
		t.Fatalf("batch sizes: got %v, want [1 3]", sizes)
	}
	for id := int64(2); id <= 4; id++ {
		wantDemo(t, s, id, 100)
	}
}

func TestQueuedWriteOutlivesItsContext(t *testing.T) {
	t.Parallel()
	s := openStore(t, filepath.Join(t.TempDir(), "l.db"), metering.Options{}, 1)
	mustProvision(t, s, 1, 100)
	g := holdFirstCommit(t, s)

	held := consumeAsync(context.Background(), s, metering.ConsumeRequest{
		UserAutomationID: 1, Units: 1,
	})
	<-g.entered

	// Queued, then canceled: the caller still gets the committed answer.
	ctx, cancel := context.WithCancel(context.Background())
	queued := consumeAsync(ctx, s, metering.ConsumeRequest{UserAutomationID: 1, Units: 10})
	waitQueued(t, s, 1)

	// The queue (one slot) is full: this one gives up when canceled.
	ctx2, cancel2 := context.WithCancel(context.Background())
	blocked := consumeAsync(ctx2, s, metering.ConsumeRequest{UserAutomationID: 1, Units: 50})
	cancel2()
	if o := <-blocked; !errors.Is(o.err, context.Canceled) {
		t.Errorf("write canceled before queueing: got %+v, %v, want context.Canceled",
			o.res, o.err)
	}
	cancel()
	close(g.release)

	if o := <-held; o.err != nil {
		t.Fatalf("held write: %v", o.err)
	}
	if o := <-queued; o.err != nil || !o.res.Accepted {
		t.Errorf("queued write: got %+v, %v, want accepted", o.res, o.err)
	}
	wantDemo(t, s, 1, 89)
}

func TestCloseWaitsForWritesInFlight(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "l.db")
	s, err := bolt.Open(path, metering.Options{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	mustProvision(t, s, 1, 100)
	g := holdFirstCommit(t, s)

	held := consumeAsync(context.Background(), s, metering.ConsumeRequest{
		UserAutomationID: 1, Units: 7, IdempotencyKey: "in-flight",
	})
	<-g.entered
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()

	select {
	case err := <-closed:
		t.Fatalf("close returned %v while a commit was in flight", err)
	default:
	}
	close(g.release)
	if o := <-held; o.err != nil || !o.res.Accepted {
		t.Fatalf("in-flight write: got %+v, %v, want accepted", o.res, o.err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := s.Consume(context.Background(), metering.ConsumeRequest{
		UserAutomationID: 1, Units: 1,
	}); !errors.Is(err, metering.ErrClosed) {
		t.Errorf("consume after close: got %v, want ErrClosed", err)
	}

	// The in-flight write is on disk.
	s2 := openStore(t, path, metering.Options{}, bolt.DefaultMaxBatch)
	wantDemo(t, s2, 1, 93)
	res, err := s2.Consume(context.Background(), metering.ConsumeRequest{
		UserAutomationID: 1, Units: 7, IdempotencyKey: "in-flight",
	})
	if err != nil || !res.Replayed || !res.Accepted {
		t.Errorf("replay after reopen: got %+v, %v, want an accepted replay", res, err)
	}
}

func TestPanicInBatchFailsOnlyThatBatch(t *testing.T) {
	t.Parallel()
	s := openStore(t, filepath.Join(t.TempDir(), "l.db"), metering.Options{}, 16)
	mustProvision(t, s, 1, 100)
	bolt.SetCommitHook(s, func(int) error { panic("boom") })
	_, err := s.Consume(context.Background(), metering.ConsumeRequest{
		UserAutomationID: 1, Units: 1,
	})
	if err == nil || !strings.Contains(err.Error(), "panic") {
		t.Fatalf("consume with a panicking batch: got %v, want a panic error", err)
	}
	bolt.SetCommitHook(s, nil)
	wantDemo(t, s, 1, 100)
	res, err := s.Consume(context.Background(), metering.ConsumeRequest{
		UserAutomationID: 1, Units: 1,
	})
	if err != nil || !res.Accepted {
		t.Fatalf("consume after the panic: got %+v, %v, want accepted", res, err)
	}
}

func TestOpenRefuses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()

	_, err := bolt.Open(filepath.Join(dir, "a.db"), metering.Options{DemoRule: "half"})
	if err == nil {
		t.Error("open with an unknown demo rule: got nil error")
	}

	// A file of another schema version.
	foreign := filepath.Join(dir, "foreign.db")
	db, err := bbolt.Open(foreign, 0o600, nil)
	if err != nil {
		t.Fatalf("bbolt open: %v", err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		return b.Put([]byte("schema"), []byte("99"))
	})
	if err != nil {
		t.Fatalf("write foreign schema: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("bbolt close: %v", err)
	}
	if _, err := bolt.Open(foreign, metering.Options{}); err == nil ||
		!strings.Contains(err.Error(), "schema") {
		t.Errorf("open of schema 99: got %v, want a schema error", err)
	}

	// A file another holder has open.
	path := filepath.Join(dir, "held.db")
	openStore(t, path, metering.Options{}, 1)
	if _, err := bolt.Open(path, metering.Options{}); !errors.Is(err, bbolt.ErrTimeout) {
		t.Errorf("second open of a held file: got %v, want a lock timeout", err)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sub", "dir", "l.db")
	ctx := context.Background()
	s, err := bolt.Open(path, metering.Options{})
	if err != nil {
		t.Fatalf("open in a missing directory: %v", err)
	}
	mustProvision(t, s, 1, 50)
	req := metering.ConsumeRequest{UserAutomationID: 1, Units: 20, IdempotencyKey: "r"}
	first, err := s.Consume(ctx, req)
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	s = openStore(t, path, metering.Options{}, bolt.DefaultMaxBatch)
	again, err := s.Consume(ctx, req)
	first.Replayed = true
	if err != nil || again != first {
		t.Errorf("replay after reopen: got %+v, %v, want %+v", again, err, first)
	}
	wantDemo(t, s, 1, 30)
	if n := journalLen(t, s); n != 2 {
		t.Errorf("journal after reopen: got %d entries, want 2", n)
	}
}
