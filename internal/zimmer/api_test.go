package zimmer

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestNewRejectsBadOptions(t *testing.T) {
	t.Parallel()
	good := func() Options {
		return Options{Ledger: newMemLedger(), Auth: (&authFake{}).middleware, Health: healthOK}
	}
	tests := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no ledger", func(o *Options) { o.Ledger = nil }, "ledger is required"},
		{"no auth", func(o *Options) { o.Auth = nil }, "auth middleware is required"},
		{"no health", func(o *Options) { o.Health = nil }, "health handler is required"},
		{"relative prefix", func(o *Options) { o.Prefixes = []string{"api"} },
			"must start with /"},
		{"unclean prefix", func(o *Options) { o.Prefixes = []string{"/a/../b"} }, "clean path"},
		{"double slash", func(o *Options) { o.Prefixes = []string{"/a//b"} }, "clean path"},
		{"query in prefix", func(o *Options) { o.Prefixes = []string{"/a?b"} }, "clean path"},
		{"duplicate prefix", func(o *Options) { o.Prefixes = []string{"/api", "/api/"} },
			"served twice"},
		{"bad placeholder", func(o *Options) { o.ServiceURL = "https://x/{tenant}" }, "{tenant}"},
		{"negative body", func(o *Options) { o.MaxBody = -1 }, "max body"},
		{"negative units", func(o *Options) { o.MaxUnits = -1 }, "max units"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := good()
			tt.edit(&opts)
			_, err := New(opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: got %v, want error containing %q", err, tt.want)
			}
		})
	}
	if _, err := New(good()); err != nil {
		t.Fatalf("New(good): %v", err)
	}
}

func TestCleanPath(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"", "/"},
		{"/", "/"},
		{"/provision", "/provision"},
		{"/provision/", "/provision/"},
		{"//provision", "/provision"},
		{"/health/../provision", "/provision"},
		{"/public/../provision", "/provision"},
		{"/api/./zimmer//kb/status/", "/api/zimmer/kb/status/"},
		{"provision", "/provision"},
		{"/..", "/"},
		{"/provision/.", "/provision"},
	}
	for _, tt := range tests {
		if got := CleanPath(tt.in); got != tt.want {
			t.Errorf("CleanPath(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestRoutingMatrix sends every method to every endpoint under every
// prefix, with and without the trailing slash, without a token: a wrong
// method is 405 with Allow before auth runs; a right one reaches auth
// (401) or, for health, the public handler.
func TestRoutingMatrix(t *testing.T) {
	t.Parallel()
	allowed := map[Endpoint]string{
		EndpointHealth:    "GET, HEAD",
		EndpointProvision: "POST",
		EndpointConsume:   "POST",
		EndpointKBStatus:  "GET, POST",
		EndpointKBReset:   "POST",
	}
	methods := []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
	prefixes := map[string]string{"/": "", "/api": "/api", "/api/zimmer/": "/api/zimmer"}
	cfg := make([]string, 0, len(prefixes))
	for p := range prefixes {
		cfg = append(cfg, p)
	}
	h := newHarness(t, func(o *Options) { o.Prefixes = cfg })

	for _, base := range prefixes {
		for ep, allow := range allowed {
			for _, slash := range []string{"", "/"} {
				p := base + "/" + string(ep) + slash
				if _, ok := h.api.Lookup(p); !ok {
					t.Errorf("Lookup(%q): not found", p)
					continue
				}
				for _, m := range methods {
					checkRoute(t, h, p, m, ep, allow)
				}
			}
		}
	}
}

// checkRoute sends one unauthenticated request and checks the matrix rule.
func checkRoute(t *testing.T, h *harness, p, method string, ep Endpoint, allow string) {
	t.Helper()
	before := h.auth.runs.Load()
	r := httptest.NewRequest(method, p, strings.NewReader(`{"user_automation_id":1}`))
	w := httptest.NewRecorder()
	h.api.ServeHTTP(w, r)
	authRan := h.auth.runs.Load() != before

	ok := strings.Contains(", "+allow+", ", ", "+method+", ")
	switch {
	case !ok:
		if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != allow {
			t.Errorf("%s %s: got %d Allow %q, want 405 Allow %q",
				method, p, w.Code, w.Header().Get("Allow"), allow)
		}
		if authRan {
			t.Errorf("%s %s: auth ran before the method check", method, p)
		}
		if method != http.MethodHead && !strings.Contains(w.Body.String(), `"detail"`) {
			t.Errorf("%s %s: 405 body %q is not a JSON detail", method, p, w.Body.String())
		}
	case ep == EndpointHealth:
		if w.Code != http.StatusOK || authRan {
			t.Errorf("%s %s: got %d auth ran %v, want 200 without auth",
				method, p, w.Code, authRan)
		}
	default:
		if w.Code != http.StatusUnauthorized || !authRan {
			t.Errorf("%s %s: got %d auth ran %v, want 401 from auth",
				method, p, w.Code, authRan)
		}
	}
	if w.Code >= 300 && w.Code < 400 {
		t.Errorf("%s %s: redirected (%d)", method, p, w.Code)
	}
}

func TestLookupMisses(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(o *Options) { o.Prefixes = []string{"/", "/api/zimmer"} })
	for _, p := range []string{
		"/healthz", "/health/x", "/health//", "/provisions", "/api/zimmer",
		"/api/zimmer/", "/api/provision", "/other/provision", "/kb", "/usage",
		"/usage/consume/x", "/health/../provision", "/PROVISION", "",
	} {
		if _, ok := h.api.Lookup(p); ok {
			t.Errorf("Lookup(%q): found, want no match", p)
		}
	}
	w := h.do(t, http.MethodGet, "/nothing-here", "")
	wantStatus(t, w, http.StatusNotFound)
	wantDetail(t, w, "Not Found")
}

// TestHealthOnlyOnExactPath is case C6: only the cleaned path decides, and
// no header makes a protected endpoint public.
func TestHealthOnlyOnExactPath(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	tests := []struct {
		name   string
		target string
		header [2]string
	}{
		{"dot segments", "/health/../provision", [2]string{}},
		{"encoded slashes", "/public%2F..%2Fprovision", [2]string{}},
		{"forwarded uri", "/provision", [2]string{"X-Forwarded-Uri", "/health"}},
		{"probe agent", "/provision", [2]string{"User-Agent", "kube-probe/1.30"}},
		{"forwarded for", "/provision", [2]string{"X-Forwarded-For", "127.0.0.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, tt.target, strings.NewReader("{}"))
			if tt.header[0] != "" {
				r.Header.Set(tt.header[0], tt.header[1])
			}
			w := httptest.NewRecorder()
			h.api.ServeHTTP(w, r)
			wantStatus(t, w, http.StatusUnauthorized)
		})
	}
	if p, _ := h.ledger.counts(); p != 0 {
		t.Fatalf("ledger provisions: got %d, want 0", p)
	}
}

// readTracker records whether a body was read.
type readTracker struct {
	read bool
	r    io.Reader
}

func (b *readTracker) Read(p []byte) (int, error) {
	b.read = true
	return b.r.Read(p)
}

// TestBodyUnreadWithoutAuth is case C8 at the handler level: when auth
// refuses, no endpoint reads the body.
func TestBodyUnreadWithoutAuth(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(o *Options) {
		o.KB = &kbFake{canReset: true}
	})
	for _, tt := range []struct{ method, path string }{
		{http.MethodPost, "/provision"},
		{http.MethodPost, "/usage/consume"},
		{http.MethodPost, "/kb/status"},
		{http.MethodPost, "/kb/reset"},
	} {
		body := &readTracker{r: strings.NewReader(`{"user_automation_id":1}`)}
		r := httptest.NewRequest(tt.method, tt.path, body)
		r.Header.Set("X-Zimmer-Service-Token", "wrong")
		w := httptest.NewRecorder()
		h.api.ServeHTTP(w, r)
		wantStatus(t, w, http.StatusUnauthorized)
		if body.read {
			t.Errorf("%s %s: body was read before auth passed", tt.method, tt.path)
		}
	}
}

// TestExpectContinue is case C8 on a real connection: a 5 MB body sent
// with "Expect: 100-continue" gets 401 (no token) or 413 (over the limit)
// without a 100 Continue first.
func TestExpectContinue(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(o *Options) { o.MaxBody = 1 << 10 })
	srv := httptest.NewServer(h.api)
	t.Cleanup(srv.Close)

	tests := []struct {
		name  string
		token string
		want  string
	}{
		{"no token", "", "HTTP/1.1 401"},
		{"over limit", testToken, "HTTP/1.1 413"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			t.Cleanup(func() { _ = conn.Close() })
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))

			req := "POST /usage/consume HTTP/1.1\r\nHost: x\r\n" +
				"Content-Type: application/json\r\nContent-Length: 5242880\r\n" +
				"Expect: 100-continue\r\n"
			if tt.token != "" {
				req += "X-Zimmer-Service-Token: " + tt.token + "\r\n"
			}
			if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
				t.Fatalf("write: %v", err)
			}
			line, err := bufio.NewReader(conn).ReadString('\n')
			if err != nil {
				t.Fatalf("read status line: %v", err)
			}
			if !strings.HasPrefix(line, tt.want) {
				t.Fatalf("status line: got %q, want %s", line, tt.want)
			}
		})
	}
}

func TestOversizedChunkedBody(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(o *Options) { o.MaxBody = 64 })
	body := `{"user_automation_id":1,"user_id":2,"pad":"` + strings.Repeat("x", 100) + `"}`
	r := httptest.NewRequest(http.MethodPost, "/provision", io.NopCloser(strings.NewReader(body)))
	r.ContentLength = -1 // unknown length: the limit applies while reading
	r.Header.Set("X-Zimmer-Service-Token", testToken)
	w := httptest.NewRecorder()
	h.api.ServeHTTP(w, r)
	wantStatus(t, w, http.StatusRequestEntityTooLarge)
	wantDetail(t, w, detailTooLarge)
	if got := h.lastError(t); got.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("OnError status: got %d, want 413", got.status)
	}
	if p, _ := h.ledger.counts(); p != 0 {
		t.Fatalf("ledger provisions: got %d, want 0", p)
	}
}

func TestFormatTime(t *testing.T) {
	t.Parallel()
	tehran := time.FixedZone("IRST", 3*3600+1800)
	got := FormatTime(time.Date(2025, 1, 10, 20, 24, 49, 650619000, tehran))
	if want := "2025-01-10T16:54:49.650619+00:00"; got != want {
		t.Fatalf("FormatTime: got %q, want %q", got, want)
	}
	if _, err := time.Parse(time.RFC3339Nano, got); err != nil {
		t.Fatalf("not RFC 3339: %v", err)
	}
}

// wantErrorIs fails unless errors.Is(got, target).
func wantErrorIs(t *testing.T, got, target error) {
	t.Helper()
	if !errors.Is(got, target) {
		t.Fatalf("error: got %v, want %v", got, target)
	}
}
