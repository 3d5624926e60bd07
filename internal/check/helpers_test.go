package check

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/testclock"
)

// testToken is the service token the fake automation accepts.
const testToken = "3f9c2a7d81e64b05a7c4d2e9f0b1a6c83f9c2a7d81e64b05a7c4d2e9f0b1a6c8"

// fakeClock is the tests' settable clock.
type fakeClock = testclock.Clock

func newFakeClock() *fakeClock {
	return testclock.New(time.Date(2025, 1, 10, 16, 54, 49, 0, time.UTC))
}

// seen is one request the fake automation got.
type seen struct {
	Method, Path, Query string
	Token               string // "", "valid" or "wrong"
	Body                map[string]any
}

// fakeAutomation is a compliant automation written the way the guide
// describes one, without the sidecar. A test overrides single routes
// with its own handlers: "POST /provision" replaces the endpoint behind
// the fake's token check, "noauth POST /provision" replaces it whole.
type fakeAutomation struct {
	srv      *httptest.Server
	clock    *fakeClock
	override map[string]http.HandlerFunc

	mu   sync.Mutex
	seen []seen
}

func newFake(t *testing.T, override map[string]http.HandlerFunc) *fakeAutomation {
	t.Helper()
	return newFakeWith(t, func(*fakeAutomation) map[string]http.HandlerFunc {
		return override
	})
}

// newFakeWith is newFake with overrides that need the fake (its clock).
// They are set before the server starts, so handlers read them safely.
func newFakeWith(t *testing.T,
	build func(*fakeAutomation) map[string]http.HandlerFunc) *fakeAutomation {
	t.Helper()
	f := &fakeAutomation{clock: newFakeClock()}
	f.override = build(f)
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// options returns Options for a check of f.
func (f *fakeAutomation) options() Options {
	return Options{BaseURL: f.srv.URL, Token: testToken, Now: f.clock.Now}
}

// requests returns what f got.
func (f *fakeAutomation) requests() []seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seen(nil), f.seen...)
}

func (f *fakeAutomation) serve(w http.ResponseWriter, r *http.Request) {
	// 1. Record the request.
	raw, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(raw)) // for an override to read
	var body map[string]any
	_ = json.Unmarshal(raw, &body)
	tok := ""
	switch r.Header.Get("X-Zimmer-Service-Token") {
	case "":
	case testToken:
		tok = "valid"
	default:
		tok = "wrong"
	}
	f.mu.Lock()
	f.seen = append(f.seen, seen{Method: r.Method, Path: r.URL.Path,
		Query: r.URL.RawQuery, Token: tok, Body: body})
	f.mu.Unlock()

	// 2. An override, else the compliant behaviour.
	path := strings.TrimSuffix(r.URL.Path, "/")
	if h, ok := f.override["noauth "+r.Method+" "+path]; ok {
		h(w, r)
		return
	}
	f.compliant(w, r, path, tok, f.override[r.Method+" "+path])
}

// compliant answers as the guide says; h, when not nil, answers instead
// of the endpoint once the method and the token passed.
func (f *fakeAutomation) compliant(w http.ResponseWriter, r *http.Request,
	path, tok string, h http.HandlerFunc) {
	allowed := map[string]string{
		"/health": "GET", "/provision": "POST", "/usage/consume": "POST",
		"/kb/status": "GET, POST", "/kb/reset": "POST",
	}
	allow, ok := allowed[path]
	switch {
	case !ok && h != nil:
		h(w, r)
		return
	case !ok:
		writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Not Found"})
		return
	case !strings.Contains(allow, r.Method):
		w.Header().Set("Allow", allow)
		writeJSON(w, http.StatusMethodNotAllowed,
			map[string]any{"detail": "Method Not Allowed"})
		return
	case path == "/health" && h != nil:
		h(w, r)
		return
	case path == "/health":
		writeJSON(w, http.StatusOK, healthyBody)
		return
	case tok == "":
		writeJSON(w, http.StatusUnauthorized, map[string]any{"detail": "Missing service token"})
		return
	case tok == "wrong":
		writeJSON(w, http.StatusUnauthorized, map[string]any{"detail": "Invalid service token"})
		return
	}
	if h != nil {
		h(w, r)
		return
	}
	writeJSON(w, http.StatusOK, compliantAnswer(r.Method, path))
}

var healthyBody = map[string]any{"status": "ok", "version": "1.0.0", "uptime": 12}

// compliantAnswer is what a compliant automation answers on path.
func compliantAnswer(method, path string) map[string]any {
	now := "2025-01-10T16:54:49.650619+00:00"
	switch path {
	case "/provision":
		return map[string]any{"success": true, "message": "provisioned",
			"provisioned_at": now, "integration_status": "active", "demo_tokens": 5}
	case "/usage/consume":
		return map[string]any{"accepted": true, "remaining_demo_tokens": 4,
			"remaining_paid_tokens": 0, "message": "ok", "success": true,
			"tokens_consumed": 1, "remaining_tokens": 4}
	case "/kb/status":
		status := "ready"
		if method == http.MethodPost {
			status = "healthy"
		}
		return map[string]any{"status": status, "last_updated": now,
			"total_documents": 3, "healthy": true, "backup_status": false,
			"error_logs": []string{}, "supports_reset": true}
	default:
		return map[string]any{"success": true, "status": "success",
			"message": "reset", "reset_at": now}
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// answerWith returns a handler that answers status and the JSON v.
func answerWith(status int, v any) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, status, v) }
}

// runCheck runs a check with opts and fails t on an error.
func runCheck(t *testing.T, opts Options) *Report {
	t.Helper()
	rep, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return rep
}

// find returns the row of ep and check, failing t when there is none.
func find(t *testing.T, rep *Report, ep Endpoint, check string) Result {
	t.Helper()
	for _, r := range rep.Results {
		if r.Endpoint == ep && r.Check == check {
			return r
		}
	}
	t.Fatalf("no row %s / %q in\n%s", ep, check, table(rep))
	return Result{}
}

// table renders rep for failure messages.
func table(rep *Report) string {
	var b strings.Builder
	_ = rep.WriteTable(&b)
	return b.String()
}

// wantRow fails t unless the row of ep and check has status want and a
// reason containing each of substrings.
func wantRow(t *testing.T, rep *Report, ep Endpoint, check string, want Status,
	substrings ...string) {
	t.Helper()
	r := find(t, rep, ep, check)
	if r.Status != want {
		t.Errorf("%s / %q: got %s (%s), want %s", ep, check, r.Status, r.Reason, want)
	}
	for _, s := range substrings {
		if !strings.Contains(r.Reason, s) {
			t.Errorf("%s / %q: reason %q lacks %q", ep, check, r.Reason, s)
		}
	}
}

func (s seen) String() string {
	return fmt.Sprintf("%s %s?%s token=%s", s.Method, s.Path, s.Query, s.Token)
}
