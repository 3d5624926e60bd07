package health

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// getHealth sends GET /health to m's handler.
func getHealth(t *testing.T, m *Monitor) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/health", nil))
	return rec
}

// healthBody is /health decoded strictly enough to check types.
type healthBody struct {
	Status  string          `json:"status"`
	Version string          `json:"version"`
	Uptime  json.RawMessage `json:"uptime"`
	Checks  map[string]struct {
		State     string  `json:"state"`
		Required  bool    `json:"required"`
		LatencyMS *int64  `json:"latency_ms"`
		Error     *string `json:"error"`
		Since     string  `json:"since"`
	} `json:"checks"`
}

func decodeHealth(t *testing.T, rec *httptest.ResponseRecorder) healthBody {
	t.Helper()
	var b healthBody
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		t.Fatalf("decode /health: %v", err)
	}
	return b
}

func TestHealthBody(t *testing.T) {
	t.Parallel()
	clk := newClock()
	app := newApp(t, clk)
	app.took.Store(int64(3 * time.Millisecond))
	m := newMonitor(t, app.url, clk,
		ProbeOptions{Name: "app", Path: "/healthz", Required: true})
	if err := m.Register("ledger", func() CheckResult {
		return CheckResult{State: StateUp, Required: true}
	}); err != nil {
		t.Fatal(err)
	}
	m.CheckNow(t.Context())

	rec := getHealth(t, m)
	if rec.Code != http.StatusOK {
		t.Fatalf("got %d, want 200", rec.Code)
	}
	h := rec.Header()
	for k, want := range map[string]string{
		"Content-Type":   "application/json",
		"Cache-Control":  "no-store",
		"Content-Length": strconv.Itoa(rec.Body.Len()),
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s: got %q, want %q", k, got, want)
		}
	}

	b := decodeHealth(t, rec)
	if b.Status != "ok" || b.Version != "1.2.3" || string(b.Uptime) != "0" {
		t.Errorf("got status %q version %q uptime %s", b.Status, b.Version, b.Uptime)
	}
	if len(b.Checks) != 2 {
		t.Fatalf("got %d checks, want 2", len(b.Checks))
	}
	c := b.Checks["app"]
	if c.State != "up" || !c.Required || c.LatencyMS == nil || *c.LatencyMS != 3 ||
		c.Error != nil {
		t.Errorf("app check: got %+v", c)
	}
	if _, err := time.Parse(time.RFC3339, c.Since); err != nil {
		t.Errorf("since %q: %v", c.Since, err)
	}
	if l := b.Checks["ledger"]; l.LatencyMS != nil || !l.Required || l.State != "up" {
		t.Errorf("registered check: got %+v, want up, required, no latency", l)
	}
}

func TestHealthDownAnd503(t *testing.T) {
	t.Parallel()
	clk := newClock()
	app := newApp(t, clk)
	app.status.Store(http.StatusInternalServerError)
	m := newMonitor(t, app.url, clk, ProbeOptions{Name: "app", Path: "/", Required: true})
	m.CheckNow(t.Context())

	rec := getHealth(t, m)
	b := decodeHealth(t, rec)
	if rec.Code != http.StatusServiceUnavailable || b.Status != "down" {
		t.Fatalf("got %d %q, want 503 down", rec.Code, b.Status)
	}
	if e := b.Checks["app"].Error; e == nil || *e != "status 500" {
		t.Errorf("got error %v, want %q", e, "status 500")
	}
}

func TestUptimeFollowsClock(t *testing.T) {
	t.Parallel()
	clk := newClock()
	m, err := New(Options{Now: clk.Now, Started: clk.Now().Add(-2 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		advance time.Duration
		want    string
	}{
		{0, "2"},
		{999 * time.Millisecond, "2"},
		{time.Millisecond, "3"},
		{90 * time.Minute, "5403"},
	}
	for _, s := range steps {
		clk.Advance(s.advance)
		b := decodeHealth(t, getHealth(t, m))
		if string(b.Uptime) != s.want {
			t.Errorf("after +%v: got uptime %s, want %s", s.advance, b.Uptime, s.want)
		}
	}
}

func TestUptimeStartedDefaultsToNew(t *testing.T) {
	t.Parallel()
	clk := newClock()
	m, err := New(Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(7 * time.Second)
	if b := decodeHealth(t, getHealth(t, m)); string(b.Uptime) != "7" {
		t.Errorf("got uptime %s, want 7", b.Uptime)
	}
}

func TestHealthMethods(t *testing.T) {
	t.Parallel()
	m := newMonitor(t, nil, newClock())
	tests := []struct {
		method   string
		wantCode int
		wantBody bool
	}{
		{http.MethodGet, 200, true},
		{http.MethodHead, 200, false},
		{http.MethodPost, 405, true},
		{http.MethodDelete, 405, true},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest(tt.method, "/health", nil))
		if rec.Code != tt.wantCode {
			t.Errorf("%s: got %d, want %d", tt.method, rec.Code, tt.wantCode)
		}
		if got := rec.Body.Len() > 0; got != tt.wantBody {
			t.Errorf("%s: got body %q, want body: %v", tt.method, rec.Body, tt.wantBody)
		}
		if tt.wantCode == 405 && rec.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: got Allow %q", tt.method, rec.Header().Get("Allow"))
		}
	}
}

func TestHealthLeaksNoTarget(t *testing.T) {
	t.Parallel()
	base := mustURL(t, "http://user:hunter2@127.0.0.1:1")
	m, err := New(Options{BaseURL: base, Probes: []ProbeOptions{{
		Name: "app", Path: "/h?token=s3cret", Timeout: time.Second,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	m.CheckNow(t.Context())
	body := getHealth(t, m).Body.String()
	for _, secret := range []string{"hunter2", "s3cret", "127.0.0.1"} {
		if strings.Contains(body, secret) {
			t.Errorf("/health reveals %q: %s", secret, body)
		}
	}
	if !strings.Contains(body, `"error":"connection refused"`) {
		t.Errorf("got %s, want a connection refused error", body)
	}
}

func TestHealthPassesPlatformClassifier(t *testing.T) {
	t.Parallel()
	clk := newClock()
	tests := []struct {
		name   string
		status int
		want   string
	}{
		{"ok", http.StatusOK, ClassHealthy},
		{"degraded", http.StatusTeapot, ClassDegraded}, // optional probe fails
		{"down", http.StatusBadGateway, ClassUnhealthy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			app := newApp(t, clk)
			app.status.Store(int32(tt.status))
			required := tt.status != http.StatusTeapot
			m := newMonitor(t, app.url, clk,
				ProbeOptions{Name: "app", Path: "/", Required: required})
			m.CheckNow(t.Context())
			rec := getHealth(t, m)
			if got := Classify(rec.Code, rec.Body.Bytes()); got != tt.want {
				t.Errorf("got %s, want %s (%d %s)", got, tt.want, rec.Code, rec.Body)
			}
		})
	}
}

// discardWriter is a ResponseWriter that costs as little as possible.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

func BenchmarkHealthHandler(b *testing.B) {
	for _, ext := range []int{0, 2} {
		b.Run("checks="+strconv.Itoa(ext), func(b *testing.B) {
			clk := newClock()
			m, err := New(Options{Now: clk.Now, Version: "1.0.0"})
			if err != nil {
				b.Fatal(err)
			}
			for i := range ext {
				_ = m.Register("c"+strconv.Itoa(i), func() CheckResult {
					return CheckResult{State: StateUp}
				})
			}
			h := m.Handler()
			req := httptest.NewRequest(http.MethodGet, "/health", nil)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				w := &discardWriter{h: make(http.Header)}
				for pb.Next() {
					h.ServeHTTP(w, req)
				}
			})
		})
	}
}

func TestBodyEncodedOncePerChange(t *testing.T) {
	t.Parallel()
	clk := newClock()
	app := newApp(t, clk)
	m := newMonitor(t, app.url, clk, ProbeOptions{Name: "app", Path: "/"})
	m.CheckNow(t.Context())

	getHealth(t, m)
	first := m.cache.Load()
	clk.Advance(5 * time.Second)
	getHealth(t, m)
	if m.cache.Load() != first {
		t.Error("body re-encoded although only the uptime changed")
	}

	app.status.Store(http.StatusInternalServerError)
	m.CheckNow(t.Context())
	if rec := getHealth(t, m); !strings.Contains(rec.Body.String(), `"status 500"`) {
		t.Errorf("state change not reflected: %s", rec.Body)
	}
	if m.cache.Load() == first {
		t.Error("body not re-encoded after a state change")
	}
}
