package sidecar

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering/bolt"
)

// result is the outcome of a request run in its own goroutine.
type result struct {
	a   answer
	err error
}

// startSlow sends GET /slow/<name> in a goroutine and returns once the app
// holds it.
func (h *harness) startSlow(name string) <-chan result {
	h.t.Helper()
	out := make(chan result, 1)
	go func() {
		a, err := h.try("GET", h.publicURL()+"/slow/"+name, "", nil)
		out <- result{a, err}
	}()
	select {
	case <-h.app.entered:
	case <-time.After(waitLimit):
		h.t.Fatal("the slow request never reached the app")
	}
	return out
}

func TestReadinessAndDrain(t *testing.T) {
	t.Parallel()
	h := newHarness(t, params{})

	// Before Run: not ready.
	rec := httptest.NewRecorder()
	h.sc.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "http://127.0.0.1/readyz", nil))
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "starting") {
		t.Errorf("readyz before Run: got %d %s, want 503 starting", rec.Code, rec.Body)
	}

	h.run()
	h.waitReady()
	slow := h.startSlow("a")

	// Shutdown starts while the slow request is in flight.
	h.cancel()
	eventually(t, "/readyz to answer 503 shutting_down", func() bool {
		a, err := h.try("GET", h.adminURL()+"/readyz", "", nil)
		return err == nil && a.status == 503 && strings.Contains(a.body, "shutting_down")
	})
	if a := h.do("GET", h.adminURL()+"/livez", "", nil); a.status != 200 {
		t.Errorf("livez during the drain: got %d, want 200", a.status)
	}
	eventually(t, "the public listener to refuse connections", func() bool {
		c, err := net.DialTimeout("tcp", h.sc.PublicAddr(), time.Second)
		if err == nil {
			_ = c.Close()
		}
		return err != nil
	})
	select {
	case r := <-slow:
		t.Fatalf("the slow request ended before the app answered: %+v", r)
	case err := <-h.done:
		t.Fatalf("Run returned %v before the drain finished", err)
	default:
	}

	// The app answers: the request completes and Run returns nil.
	h.app.unblock()
	select {
	case r := <-slow:
		if r.err != nil || r.a.status != 200 || r.a.body != "slow done" {
			t.Errorf("slow request: got %+v, want 200 \"slow done\"", r)
		}
	case <-time.After(waitLimit):
		t.Fatal("the slow request did not finish")
	}
	if err := h.stop(); err != nil {
		t.Errorf("Run: got %v, want nil after a clean drain", err)
	}
	logs := h.logs.String()
	for _, msg := range []string{`"msg":"shutting down"`, `"msg":"drained"`} {
		if !strings.Contains(logs, msg) {
			t.Errorf("log lacks %s:\n%s", msg, logs)
		}
	}
}

func TestDrainTimeout(t *testing.T) {
	t.Parallel()
	h := startHarness(t, params{grace: "100ms"})
	slow := h.startSlow("b")

	err := h.stop()
	if err == nil || !strings.Contains(err.Error(), "drain did not finish within 100ms") {
		t.Fatalf("Run: got %v, want a drain timeout error", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want it to wrap context.DeadlineExceeded", err)
	}
	select {
	case r := <-slow:
		if r.err == nil && r.a.status == http.StatusOK {
			t.Errorf("the cut request got a full 200 answer: %+v", r.a)
		}
	case <-time.After(waitLimit):
		t.Fatal("the cut request never ended")
	}
	if strings.Contains(h.logs.String(), `"msg":"drained"`) {
		t.Error(`log says "drained" after a failed drain`)
	}
	reopen(t, h.cfg.Ledger.Path)
}

// reopen opens the ledger file at path, which fails while another handle
// holds it, and returns the reopened store (closed when t ends).
func reopen(t *testing.T, path string) *bolt.Store {
	t.Helper()
	st, err := bolt.Open(path, metering.Options{})
	if err != nil {
		t.Fatalf("reopen ledger after Run: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func TestLedgerClosedAfterRun(t *testing.T) {
	t.Parallel()
	h := startHarness(t, params{})
	if a := h.do("POST", h.publicURL()+"/provision", provisionBody,
		withToken(testToken)); a.status != 200 {
		t.Fatalf("provision: got %d: %s", a.status, a.body)
	}

	// While Run holds the file, nobody else can open it (this is what
	// makes the check below meaningful; it waits for bolt's lock timeout).
	if st, err := bolt.Open(h.cfg.Ledger.Path, metering.Options{}); err == nil {
		_ = st.Close()
		t.Fatal("opened the ledger while the sidecar runs; the lock check is void")
	}

	if err := h.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	st := reopen(t, h.cfg.Ledger.Path)
	acct, err := st.Account(context.Background(), 7)
	if err != nil || acct.DemoTokens != 5 || acct.UserID != 70 {
		t.Errorf("account after restart: got %+v, %v; want demo 5 user 70", acct, err)
	}
	if err := h.sc.Close(); err != nil {
		t.Errorf("Close after Run: %v", err)
	}
}

func TestRunListenerConflict(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = taken.Close() })
	busy := taken.Addr().String()

	tests := []struct {
		name string
		p    params
		want string
	}{
		{"public", params{public: busy}, "public listener"},
		{"admin", params{admin: busy}, "admin listener"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			app := newFakeApp(t)
			tt.p.appURL = app.srv.URL
			tt.p.ledger = filepath.Join(t.TempDir(), "ledger.db")
			cfg := parseConfig(t, tt.p)
			sc, err := New(cfg, Options{Logger: newTestLogger(&syncBuffer{})})
			if err != nil {
				t.Fatalf("new: %v", err)
			}
			err = sc.Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run: got %v, want a %s error", err, tt.want)
			}
			reopen(t, tt.p.ledger)
			if len(app.requests()) != 0 {
				t.Error("Run probed or called the app although it could not listen")
			}
		})
	}
}

// TestDrainTimeoutRefundsCutCalls: a metered call that the drain cuts off
// was cut by the sidecar, not abandoned by its client: its charge goes
// back to the balance it came from.
func TestDrainTimeoutRefundsCutCalls(t *testing.T) {
	t.Parallel()
	h := startHarness(t, params{grace: "100ms", extra: `
[[route]]
path = "/slow/*"
protect = true
meter = { units = 2, usage_type = "slow", user = "header:X-Tenant" }
`})
	h.waitReady()
	a := h.do("POST", h.publicURL()+"/provision", `{"user_automation_id":7,"user_id":1}`,
		withToken(testToken))
	if a.status != http.StatusOK {
		t.Fatalf("provision: %d %s", a.status, a.body)
	}
	out := make(chan result, 1)
	go func() {
		hdr := withToken(testToken)
		hdr.Set("X-Tenant", "7")
		a, err := h.try("GET", h.publicURL()+"/slow/cut", "", hdr)
		out <- result{a, err}
	}()
	select {
	case <-h.app.entered:
	case <-time.After(waitLimit):
		t.Fatal("the metered call never reached the app")
	}

	if err := h.stop(); err == nil {
		t.Fatal("Run: got nil, want a drain timeout error")
	}
	<-out
	acct, err := reopen(t, h.cfg.Ledger.Path).Account(context.Background(), 7)
	if err != nil {
		t.Fatal(err)
	}
	if acct.DemoTokens != 5 {
		t.Errorf("got demo %d after the cut call, want all 5 back", acct.DemoTokens)
	}
}
