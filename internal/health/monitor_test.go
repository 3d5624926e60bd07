package health

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestThresholdsBothWays(t *testing.T) {
	t.Parallel()
	clk := newClock()
	app := newApp(t, clk)
	m := newMonitor(t, app.url, clk, ProbeOptions{
		Name: "app", Path: "/healthz", PassAfter: 2, FailAfter: 3, Required: true,
	})
	ctx := t.Context()

	if got := stateOf(t, m.Verdict(), "app"); got != StatePending {
		t.Fatalf("before any check: got %s, want pending", got)
	}
	if v := m.CheckNow(ctx); v.Status != StatusOK || stateOf(t, v, "app") != StateUp {
		t.Fatalf("healthy app: got %+v, want ok and up", v)
	}

	// Failures: failing twice, then down with a 503 verdict.
	app.status.Store(http.StatusInternalServerError)
	steps := []struct {
		want   State
		status string
	}{
		{StateFailing, StatusDegraded},
		{StateFailing, StatusDegraded},
		{StateDown, StatusDown},
	}
	for i, s := range steps {
		v := m.CheckNow(ctx)
		if got := stateOf(t, v, "app"); got != s.want || v.Status != s.status {
			t.Fatalf("failure %d: got %s/%s, want %s/%s", i+1, got, v.Status, s.want, s.status)
		}
	}
	v := m.Verdict()
	if v.HTTPStatus() != http.StatusServiceUnavailable {
		t.Errorf("got HTTP %d, want 503", v.HTTPStatus())
	}
	if e := v.Checks["app"].Error; e != "status 500" {
		t.Errorf("got error %q, want %q", e, "status 500")
	}

	// Recovery needs two passes.
	app.status.Store(http.StatusOK)
	if got := stateOf(t, m.CheckNow(ctx), "app"); got != StateDown {
		t.Fatalf("one pass after down: got %s, want down", got)
	}
	v = m.CheckNow(ctx)
	if got := stateOf(t, v, "app"); got != StateUp || v.Status != StatusOK {
		t.Fatalf("two passes after down: got %s/%s, want up/ok", got, v.Status)
	}
	if e := v.Checks["app"].Error; e != "" {
		t.Errorf("got error %q after recovery, want none", e)
	}
	if hits := app.hits.Load(); hits != 6 {
		t.Errorf("got %d requests to the app, want 6", hits)
	}
}

func TestVerdict(t *testing.T) {
	t.Parallel()
	up := func() CheckResult { return CheckResult{State: StateUp, Required: true} }
	degraded := func() CheckResult { return CheckResult{State: StateDegraded} }
	reqDown := func() CheckResult { return CheckResult{State: StateDown, Required: true} }
	optDown := func() CheckResult { return CheckResult{State: StateDown} }
	odd := func() CheckResult { return CheckResult{State: "weird", Required: true} }

	tests := []struct {
		name     string
		probes   []ProbeOptions
		checks   map[string]func() CheckResult
		noCheck  bool // leave probes pending
		want     string
		wantCode int
	}{
		{name: "nothing configured", want: StatusOK, wantCode: 200},
		{
			name:   "required up",
			probes: []ProbeOptions{{Path: "/ok", Required: true}},
			checks: map[string]func() CheckResult{"ledger": up},
			want:   StatusOK, wantCode: 200,
		},
		{
			name:    "pending",
			probes:  []ProbeOptions{{Path: "/ok", Required: true}},
			noCheck: true,
			want:    StatusDegraded, wantCode: 200,
		},
		{
			name:   "slow",
			probes: []ProbeOptions{{Path: "/slow", SlowAfter: time.Second, Required: true}},
			want:   StatusDegraded, wantCode: 200,
		},
		{
			name: "optional down",
			probes: []ProbeOptions{
				{Path: "/ok", Required: true},
				{Path: "/fail"},
			},
			want: StatusDegraded, wantCode: 200,
		},
		{
			name: "optional failing",
			probes: []ProbeOptions{
				{Path: "/ok", Required: true},
				{Path: "/fail", FailAfter: 3},
			},
			want: StatusDegraded, wantCode: 200,
		},
		{
			name:   "required failing is not down yet",
			probes: []ProbeOptions{{Path: "/fail", FailAfter: 2, Required: true}},
			want:   StatusDegraded, wantCode: 200,
		},
		{
			name:   "required down",
			probes: []ProbeOptions{{Path: "/fail", Required: true}},
			want:   StatusDown, wantCode: 503,
		},
		{
			name:   "check degraded",
			checks: map[string]func() CheckResult{"breaker": degraded},
			want:   StatusDegraded, wantCode: 200,
		},
		{
			name:   "required check down",
			probes: []ProbeOptions{{Path: "/ok", Required: true}},
			checks: map[string]func() CheckResult{"ledger": reqDown},
			want:   StatusDown, wantCode: 503,
		},
		{
			name:   "optional check down",
			checks: map[string]func() CheckResult{"egress": optDown},
			want:   StatusDegraded, wantCode: 200,
		},
		{
			name:   "unknown check state is degraded",
			checks: map[string]func() CheckResult{"odd": odd},
			want:   StatusDegraded, wantCode: 200,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clk := newClock()
			srv := httptest.NewServer(http.HandlerFunc(
				func(w http.ResponseWriter, r *http.Request) {
					switch r.URL.Path {
					case "/fail":
						w.WriteHeader(http.StatusBadGateway)
					case "/slow":
						clk.Advance(1500 * time.Millisecond)
					}
				}))
			t.Cleanup(srv.Close)
			m := newMonitor(t, mustURL(t, srv.URL), clk, tt.probes...)
			for name, fn := range tt.checks {
				if err := m.Register(name, fn); err != nil {
					t.Fatalf("Register: %v", err)
				}
			}
			if !tt.noCheck {
				m.CheckNow(t.Context())
			}

			v := m.Verdict()
			if v.Status != tt.want || v.HTTPStatus() != tt.wantCode {
				t.Errorf("got %s/%d, want %s/%d (checks %+v)",
					v.Status, v.HTTPStatus(), tt.want, tt.wantCode, v.Checks)
			}
			if n := len(tt.probes) + len(tt.checks); len(v.Checks) != n {
				t.Errorf("got %d checks, want %d", len(v.Checks), n)
			}

			rec := httptest.NewRecorder()
			m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/health", nil))
			if rec.Code != tt.wantCode {
				t.Errorf("handler: got %d, want %d", rec.Code, tt.wantCode)
			}
		})
	}
}

func TestRegisteredCheckChangesAnswer(t *testing.T) {
	t.Parallel()
	clk := newClock()
	m := newMonitor(t, nil, clk)
	var state atomic.Value
	state.Store(StateUp)
	err := m.Register("breaker", func() CheckResult {
		return CheckResult{State: state.Load().(State), Error: "open"}
	})
	if err != nil {
		t.Fatalf("Register: %v", err)
	}

	if got := m.Verdict(); got.Status != StatusOK {
		t.Fatalf("got %s, want ok", got.Status)
	}
	first := m.Verdict().Checks["breaker"].Since

	clk.Advance(time.Minute)
	state.Store(StateDegraded)
	v := m.Verdict()
	if v.Status != StatusDegraded {
		t.Fatalf("after the check degraded: got %s, want degraded", v.Status)
	}
	if since := v.Checks["breaker"].Since; !since.Equal(first.Add(time.Minute)) {
		t.Errorf("got since %v, want %v", since, first.Add(time.Minute))
	}
	body := getHealth(t, m).Body.String()
	if !strings.Contains(body, `"status":"degraded"`) {
		t.Errorf("cached body not refreshed: %s", body)
	}
}

func TestTimeoutClassified(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers; the probe's timeout ends it
	}))
	t.Cleanup(srv.Close)
	m := newMonitor(t, mustURL(t, srv.URL), newClock(), ProbeOptions{
		Name: "app", Path: "/", Timeout: 50 * time.Millisecond, Required: true,
	})

	v := m.CheckNow(t.Context())
	c := v.Checks["app"]
	if c.State != StateDown || c.Error != "timeout after 50ms" {
		t.Errorf("got %s %q, want down %q", c.State, c.Error, "timeout after 50ms")
	}
}

func TestConnectionRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	m := newMonitor(t, mustURL(t, "http://"+addr), newClock(),
		ProbeOptions{Name: "app", Path: "/", Required: true})
	c := m.CheckNow(t.Context()).Checks["app"]
	if c.State != StateDown || c.Error != "connection refused" {
		t.Errorf("got %s %q, want down %q", c.State, c.Error, "connection refused")
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	t.Parallel()
	var targetHits atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/target", http.StatusFound)
	})
	mux.HandleFunc("/target", func(w http.ResponseWriter, r *http.Request) {
		targetHits.Add(1)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	tests := []struct {
		name   string
		client *http.Client // one that would follow redirects, or nil
		expect int
		want   State
		err    string
	}{
		{"private client", nil, 200, StateDown, "status 302"},
		{"caller client", &http.Client{}, 200, StateDown, "status 302"},
		{"redirect expected", nil, 302, StateUp, ""},
	}
	for _, tt := range tests {
		m, err := New(Options{
			BaseURL: mustURL(t, srv.URL),
			Client:  tt.client,
			Probes:  []ProbeOptions{{Name: "app", Path: "/moved", ExpectStatus: tt.expect}},
		})
		if err != nil {
			t.Fatal(err)
		}
		c := m.CheckNow(t.Context()).Checks["app"]
		if c.State != tt.want || c.Error != tt.err {
			t.Errorf("%s: got %s %q, want %s %q", tt.name, c.State, c.Error, tt.want, tt.err)
		}
	}
	if n := targetHits.Load(); n != 0 {
		t.Errorf("redirect followed %d times, want 0", n)
	}
}

func TestHandlerAnswersWhileAppHangs(t *testing.T) {
	t.Parallel()
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close

	m := newMonitor(t, mustURL(t, srv.URL), newClock(), ProbeOptions{
		Name: "app", Path: "/", Timeout: time.Hour, Required: true,
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan Verdict)
	go func() { done <- m.CheckNow(ctx) }()
	<-arrived // the probe is now stuck inside the app

	rec := getHealth(t, m)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"state":"pending"`) {
		t.Fatalf("got %d %s, want 200 with the probe pending", rec.Code, rec.Body)
	}

	// Cancelling the round records nothing about the app.
	cancel()
	v := <-done
	if c := v.Checks["app"]; c.State != StatePending || c.Error != "" {
		t.Errorf("cancelled check recorded: got %s %q, want pending", c.State, c.Error)
	}
}

func TestRunStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	hits := make(chan struct{}, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case hits <- struct{}{}:
		default:
		}
	}))
	t.Cleanup(srv.Close)
	m := newMonitor(t, mustURL(t, srv.URL), newClock(),
		ProbeOptions{Name: "a", Path: "/a", Every: time.Millisecond},
		ProbeOptions{Name: "b", Path: "/b", Every: time.Millisecond})

	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan error)
	go func() { stopped <- m.Run(ctx) }()
	for range 6 {
		<-hits
		// Readers while probes write: the race detector watches.
		if rec := getHealth(t, m); rec.Code != http.StatusOK {
			t.Errorf("got %d during Run, want 200", rec.Code)
		}
		m.Probes()
	}
	if err := m.Run(ctx); !errors.Is(err, ErrAlreadyRunning) {
		t.Errorf("second Run: got %v, want ErrAlreadyRunning", err)
	}

	cancel()
	select {
	case err := <-stopped:
		if err != nil {
			t.Errorf("Run: got %v, want nil", err)
		}
	case <-time.After(10 * time.Second): // a hang guard, not synchronisation
		t.Fatal("Run did not return after cancel")
	}

	// Run returned, so its goroutines are gone and it may run again.
	ctx2, cancel2 := context.WithCancel(t.Context())
	cancel2()
	if err := m.Run(ctx2); err != nil {
		t.Errorf("Run after Run: got %v, want nil", err)
	}
}

func TestRunPicksUpUpdate(t *testing.T) {
	t.Parallel()
	hitB := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/b" {
			select {
			case hitB <- struct{}{}:
			default:
			}
		}
	}))
	t.Cleanup(srv.Close)
	m := newMonitor(t, mustURL(t, srv.URL), newClock(),
		ProbeOptions{Name: "a", Path: "/a", Every: time.Hour})

	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan error)
	go func() { stopped <- m.Run(ctx) }()

	// A probe added while running is checked at once (it is pending),
	// although its interval is an hour.
	if err := m.Update([]ProbeOptions{
		{Name: "a", Path: "/a", Every: time.Hour},
		{Name: "b", Path: "/b", Every: time.Hour},
	}); err != nil {
		t.Fatal(err)
	}
	<-hitB
	cancel()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}
