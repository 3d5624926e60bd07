package outbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeplatform"
)

// testServer is the local PostgreSQL the tests use (trust auth). Each
// test gets tables of its own.
const testServer = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// pgPool is a pool on testServer shared by the tests; pgErr is why it
// is nil.
var (
	pgOnce sync.Once
	pgPool *pgxpool.Pool
	pgErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if pgPool != nil {
		pgPool.Close()
	}
	os.Exit(code)
}

// sharedPool connects once. When the server is unreachable the test is
// skipped, except in CI (CI set), where a missing service must fail.
func sharedPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	pgOnce.Do(func() { pgPool, pgErr = connect(16) })
	if pgErr != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("PostgreSQL at 127.0.0.1:5432 (database test) is required in CI: %v",
				pgErr)
		}
		tb.Skipf("PostgreSQL at 127.0.0.1:5432 (database test) unreachable, "+
			"skipping (CI=true makes this a failure): %v", pgErr)
	}
	return pgPool
}

// connect opens a pool of at most maxConns on testServer.
func connect(maxConns int32) (*pgxpool.Pool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(testServer)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = maxConns
	cfg.ConnConfig.ConnectTimeout = 3 * time.Second
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		err = p.Ping(ctx)
	}
	if err != nil {
		if p != nil {
			p.Close()
		}
		return nil, err
	}
	return p, nil
}

// ownPool is a second pool, closed when tb ends: another replica.
func ownPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	sharedPool(tb)
	p, err := connect(8)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	tb.Cleanup(p.Close)
	return p
}

// freshTable returns an unused table name, dropped when tb ends.
func freshTable(tb testing.TB) string {
	tb.Helper()
	p := sharedPool(tb)
	var b [6]byte
	_, _ = rand.Read(b[:])
	table := "outbox_test_" + hex.EncodeToString(b[:])
	tb.Cleanup(func() {
		if _, err := p.Exec(context.Background(), "DROP TABLE IF EXISTS "+table); err != nil {
			tb.Errorf("drop table %s: %v", table, err)
		}
	})
	return table
}

// openPg opens a store on table through pool, closed when tb ends.
func openPg(tb testing.TB, pool *pgxpool.Pool, table string, max int) *PostgresStore {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := OpenPostgres(ctx, pool, PostgresOptions{Table: table, Max: max})
	if err != nil {
		tb.Fatalf("open postgres store: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// openBoltAt opens a bbolt store at path, closed when tb ends.
func openBoltAt(tb testing.TB, path string, max int, now func() time.Time) *BoltStore {
	tb.Helper()
	s, err := OpenBolt(path, BoltOptions{Max: max, Now: now})
	if err != nil {
		tb.Fatalf("open bolt store: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// backend opens stores of one kind. open returns a fresh store bounded
// at max and a function that closes it and opens it again.
type backend struct {
	name string
	open func(t *testing.T, max int) (s Store, reopen func() Store)
}

// backends are the two Store implementations.
var backends = []backend{
	{name: "bolt", open: func(t *testing.T, max int) (Store, func() Store) {
		path := filepath.Join(t.TempDir(), "outbox.db")
		s := openBoltAt(t, path, max, nil)
		return s, func() Store {
			_ = s.Close()
			return openBoltAt(t, path, max, func() time.Time { return t0 })
		}
	}},
	{name: "postgres", open: func(t *testing.T, max int) (Store, func() Store) {
		table := freshTable(t)
		s := openPg(t, sharedPool(t), table, max)
		return s, func() Store {
			_ = s.Close()
			return openPg(t, ownPool(t), table, max)
		}
	}},
}

// t0 is the tests' base time (whole milliseconds: PostgreSQL keeps
// microseconds).
var t0 = time.Date(2026, 3, 14, 10, 0, 0, 0, time.UTC)

// recordID is the id of the n-th test record.
func recordID(n int) string { return fmt.Sprintf("%032x", n) }

// leased is a test record of a call made with leased key 1.
func leased(n int) Record {
	return Record{
		ID: recordID(n), At: t0, KeyID: 1, Leased: true, Model: "gpt-4o-mini",
		PromptTokens: int64(n % 50), CompletionTokens: 7, TotalTokens: int64(n%50) + 7,
		UsageKnown: true, Success: true, Endpoint: "/v1/chat/completions",
		Exit: ExitComplete,
	}
}

// charged is a leased record that charged user 42 units.
func charged(n int, units int64) Record {
	r := leased(n)
	r.UserAutomationID, r.Units = 42, units
	return r
}

// reportItem is the pending report item of record n, due at.
func reportItem(n int, at time.Time) Item { return newItem(KindReport, leased(n), at) }

// consumeItem is the pending consume item of record n, due at.
func consumeItem(n int, at time.Time) Item { return newItem(KindConsume, charged(n, 5), at) }

// mustAdd adds items or fails.
func mustAdd(t *testing.T, s Store, items ...Item) {
	t.Helper()
	if err := s.Add(t.Context(), items); err != nil {
		t.Fatalf("add: %v", err)
	}
}

// mustClaim claims or fails.
func mustClaim(t *testing.T, s Store, c Claim) []Item {
	t.Helper()
	items, err := s.Claim(t.Context(), c)
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	return items
}

// mustFinish finishes or fails.
func mustFinish(t *testing.T, s Store, owner string, outcomes ...Outcome) {
	t.Helper()
	if err := s.Finish(t.Context(), owner, outcomes); err != nil {
		t.Fatalf("finish: %v", err)
	}
}

// mustStats reads the stats or fails.
func mustStats(t *testing.T, s Store) Stats {
	t.Helper()
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	return st
}

// itemByID lists every item and returns the one with id.
func itemByID(t *testing.T, s Store, id string) (Item, bool) {
	t.Helper()
	items, err := s.List(t.Context(), Filter{Limit: 1000})
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	for _, it := range items {
		if it.ID == id {
			return it, true
		}
	}
	return Item{}, false
}

// ids returns the items' ids.
func ids(items []Item) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.ID
	}
	return out
}

// Platform fixtures.
const (
	automationID = 7
	serviceToken = "svc-3f1e9c0a7d2b4e6f8a0c1e3b5d7f9a1c"
	userID       = 42
)

// platform is a seeded fake platform on a loopback server.
type platform struct {
	p   *fakeplatform.Platform
	srv *httptest.Server
}

// newPlatform starts a fake platform with automation 7, its key 1 and
// user 42 holding plenty of paid tokens.
func newPlatform(t *testing.T) *platform {
	t.Helper()
	p := fakeplatform.New(fakeplatform.Options{})
	p.AddAutomation(automationID, serviceToken)
	p.AddKey(fakeplatform.Key{ID: 1, AutomationID: automationID, APIKey: "sk-test-key-one"})
	p.AddAccount(fakeplatform.Account{
		UserAutomationID: userID, AutomationID: automationID, PaidTokens: 1 << 40,
	})
	srv := httptest.NewServer(p.Handler())
	t.Cleanup(srv.Close)
	return &platform{p: p, srv: srv}
}

// deliverOptions are fast options against pl.
func deliverOptions(pl *platform) DeliverOptions {
	return DeliverOptions{
		PlatformURL:     pl.srv.URL,
		AutomationID:    automationID,
		Token:           func() string { return serviceToken },
		Client:          pl.srv.Client(),
		CallTimeout:     2 * time.Second,
		BackoffMin:      2 * time.Millisecond,
		BackoffMax:      20 * time.Millisecond,
		PollInterval:    5 * time.Millisecond,
		BreakerFailures: 3,
		BreakerOpenFor:  20 * time.Millisecond,
	}
}

// events collects a deliverer's events.
type events struct {
	mu  sync.Mutex
	all []Event
}

func (e *events) add(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, ev)
}

func (e *events) list() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Event(nil), e.all...)
}

// waitFor polls cond until it holds, failing after a generous deadline
// (a hang guard, not a speed check).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
