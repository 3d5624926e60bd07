package proxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/e2etest"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering/postgres"
)

// openPostgres opens a Store on dsn and closes it when t ends.
func openPostgres(t *testing.T, dsn string) *postgres.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := postgres.Open(ctx, dsn, metering.Options{}, postgres.PoolOptions{MaxConns: 4})
	if err != nil {
		t.Fatalf("open ledger: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestReplicasSameKeyInFlight runs two proxies, each on its own
// PostgreSQL store (two sidecar replicas) sharing one schema. While a
// call with a client key is in flight on one, the same key on the other
// gets the answer a single process gives (409, in progress) and is
// neither charged nor forwarded; once the first call settles (refunded
// on the app's 500) the key pays anew on either replica.
func TestReplicasSameKeyInFlight(t *testing.T) {
	schema := e2etest.NewPGSchema(t, "proxy_replicas")
	arrived := make(chan struct{})
	release := make(chan struct{})
	var calls atomic.Int32
	app := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			close(arrived)
			<-release
			httpx.Error(w, http.StatusInternalServerError, "boom")
			return
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"app": "ok"})
	}))
	var fronts [2]*httptest.Server
	var stores [2]*postgres.Store
	for i := range fronts {
		stores[i] = openPostgres(t, schema.DSN)
		_, fronts[i] = newFront(t, app, Options{Ledger: stores[i], Routes: refundRoutes()})
	}
	demo := int64(10)
	if _, err := stores[0].Provision(t.Context(), metering.ProvisionRequest{
		UserAutomationID: 42, DemoTokens: &demo}); err != nil {
		t.Fatalf("provision: %v", err)
	}

	first := make(chan int, 1)
	go func() {
		req := newReq(t, "GET", fronts[0].URL+"/h/x", nil)
		req.Header.Set("X-Tenant", "42")
		req.Header.Set(IdempotencyKeyHeader, "k1")
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			first <- 0
			return
		}
		_ = resp.Body.Close()
		first <- resp.StatusCode
	}()
	select {
	case <-arrived:
	case <-time.After(30 * time.Second): // a hang guard, not a speed check
		t.Fatal("the first call never reached the app")
	}

	// The other replica: same key refused as busy; another key served.
	code, body := sendMetered(t, fronts[1].URL, "k1")
	if code != http.StatusConflict || !strings.Contains(body, msgKeyBusy) {
		t.Errorf("same key on the other replica: got %d %s, want 409 %q",
			code, body, msgKeyBusy)
	}
	if code, _ := sendMetered(t, fronts[1].URL, "k2"); code != http.StatusOK {
		t.Errorf("another key: got %d, want 200", code)
	}
	if got := demoOf(t, stores[1], 42); got != 6 {
		t.Errorf("balance with two charges: got %d, want 6", got)
	}

	close(release)
	if code := <-first; code != http.StatusInternalServerError {
		t.Fatalf("first call: got %d, want 500", code)
	}
	if got := demoOf(t, stores[0], 42); got != 8 {
		t.Errorf("balance after the refund: got %d, want 8", got)
	}

	// Settled: the retry goes through on the other replica and pays.
	if code, _ := sendMetered(t, fronts[1].URL, "k1"); code != http.StatusOK {
		t.Errorf("retry: got %d, want 200", code)
	}
	if got := demoOf(t, stores[0], 42); got != 6 {
		t.Errorf("balance after the paid retry: got %d, want 6", got)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("the app saw %d calls, want 3", n)
	}
	if n := heldKeys(t, schema.DSN); n != 0 {
		t.Errorf("holds left after every call settled: got %d, want 0", n)
	}
}

// heldKeys counts the rows of the schema's key_holds table.
func heldKeys(t *testing.T, dsn string) int {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	var n int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM key_holds").Scan(&n); err != nil {
		t.Fatalf("count holds: %v", err)
	}
	return n
}
